# Metrics per model (paper section IV-A), then one target rule per study: tables, t-tests, figures.


rule identity:
    """No-model baseline: the preprocessed T1 of every test scan, scored as if it were a synthesis."""
    input:
        stacks=stacks(TEST),
    output:
        [layout.path("synth", model=plans.IDENTITY, scan=s, ref=REF) for s in TEST],
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("identity", "all"),
    script:
        "../workflow_scripts/identity.py"


ruleorder: identity > infer


rule metrics:
    """MAE, PSNR, SSIM in the brain (test A and B) and in the expert tumour mask (B), per scan."""
    input:
        synth=lambda w: syntheses(w.model, test_scans(w.model)),
        stacks=lambda w: stacks(test_scans(w.model)),
    output:
        layout.path("metrics"),
    params:
        scans=lambda w: test_scans(w.model),
        sets=lambda w: [SPLIT.at[s, "set"] for s in test_scans(w.model)],
        reference=REF,
        **config["evaluation"],
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("metrics", "{model}"),
    script:
        "../workflow_scripts/metrics.py"


rule model_card:
    """What a trained model is, what it learned from, how it scored against identity and what it is for: JSON
    and a short text beside its final weights (predict copies its summary into every sidecar)."""
    input:
        weights=layout.path("weights", stage=2),
        metrics=lambda w: [layout.path("metrics", model=m) for m in (evaluated_model(w.model), plans.IDENTITY)],
    output:
        card=layout.path("model_card"),
        text=layout.path("model_card_text"),
    params:
        evaluated=lambda w: evaluated_model(w.model) if evaluated_model(w.model) != w.model else None,
        limitations=config["model_card"]["limitations"],
        training=lambda w: plans.model_settings(config, w.model),
        inference=lambda w: plans.inference_settings(config, w.model),
        cohort=COHORT,
    conda:
        "../envs/train.yaml"
    log:
        log_path("model_card", "{model}"),
    script:
        "../workflow_scripts/model_card.py"


for _study in STUDIES:
    _models = plans.study_models(config, _study)
    _trained = config["studies"][_study]
    # model -> its files, once: flattened as the rule's inputs, passed whole to the script
    _predictions = {m: syntheses(m, TEST) for m in _models}
    # a pooled cross-validation model: the training curves of its first fold model
    _histories = {m: [layout.path("history", model=h, stage=n) for h, n in stage_owners(CV.pooled.get(m, [m])[0])]
                  for m in _trained}

    rule:
        name:
            _study
        input:
            metrics=[layout.path("metrics", model=m) for m in _models],
            synth=[p for paths in _predictions.values() for p in paths],
            histories=[p for paths in _histories.values() for p in paths],
            stacks=stacks(TEST),
            # beside every trained model's weights (pooled models have none: their fold models are not shipped)
            cards=[layout.path("model_card", model=m) for m in _trained if m not in CV.pooled],
            uncertainty=[p for m in _trained for p in uncertainty_maps(m)],
            uncertainty_metrics=[layout.path(k, model=m) for m in _trained
                                 for k in ("uncertainty_metrics", "uncertainty_calibration")],
        output:
            metrics=study_file(_study, "metrics.tsv"),
            summary=study_report_item(_study, "summary.html", "summary", "results table"),
            summary_tsv=study_file(_study, "summary.tsv"),
            endpoints_tsv=study_file(_study, "endpoints.tsv"),  # the pre-registered endpoints (docs/real.md)
            ttests=study_report_item(_study, "ttests.html", "ttests", "paired t-tests"),
            ttests_tsv=study_file(_study, "ttests.tsv"),
            qualitative=study_report_item(_study, "qualitative.png", "qualitative", "qualitative panel"),
            enhancing=study_report_item(_study, "enhancing_tumour.png", "enhancing",
                                        "enhancing tumour, every patient"),
            distributions=study_report_item(_study, "metric_distributions.png", "distributions",
                                            "metric distributions"),
            curves=study_report_item(_study, "training_curves.png", "curves", "training curves"),
            bars=study_report_item(_study, "psnr_bars.png", "bars", "PSNR brain vs tumour"),
            slices=study_report_item(_study, "slices.png", "slices", "slices of one scan"),
            uncertainty=study_report_item(_study, "uncertainty.html", "uncertainty",
                                          "uncertainty against the error"),
            uncertainty_tsv=study_file(_study, "uncertainty.tsv"),
            calibration=study_report_item(_study, "uncertainty_calibration.png", "calibration",
                                          "uncertainty calibration"),
            vectors=[study_file(_study, f"{n}.svg") for n in (
                "qualitative", "enhancing_tumour", "metric_distributions", "training_curves", "psnr_bars", "slices",
                "uncertainty_calibration")],
        params:
            models=_models,
            predictions=_predictions,
            histories=_histories,
            uncertainty={m: uncertainty_maps(m) for m in _trained},
            uncertainty_tables={m: [layout.path(k, model=m) for k in ("uncertainty_metrics", "uncertainty_calibration")]
                                for m in _trained},
            labels=plans.model_labels(config, _models),
            scans=TEST,
            modalities=MODALITIES,
            reference=REF,
        conda:
            "../envs/evaluate.yaml"
        log:
            log_path("study", _study),
        script:
            "../workflow_scripts/study.py"


rule overview:
    """The report's front page: the workflow description and each study's best model against identity."""
    input:
        template=workflow.source_path("../report/workflow.rst"),
        metrics=[study_file(s, "metrics.tsv") for s in STUDIES],
        ttests=[study_file(s, "ttests.tsv") for s in STUDIES],
    output:
        layout.path("overview"),
    params:
        studies={s: (study_file(s, "metrics.tsv"), study_file(s, "ttests.tsv")) for s in STUDIES},
        baseline=plans.IDENTITY,
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("overview", "all"),
    script:
        "../workflow_scripts/overview.py"


rule runtimes:
    """Wall time and memory of every heavy job, from the rules' benchmark: files."""
    input:
        benchmarks=[benchmark_path("coregister", s) for s in SAMPLES.scan]
        + [benchmark_path("skullstrip", s) for s in SAMPLES.scan]
        + [benchmark_path(f"train_stage{n}", m) for m in MODELS_IN_STUDIES for n in (1, 2)
           if n == 2 or plans.stage1_owner(config, m) == m]
        + [benchmark_path(r, m) for m in MODELS_IN_STUDIES for r in ("infer", "uncertainty")],
    output:
        table=layout.path("study", study="resources", name="runtimes.tsv"),
        figure=report(
            layout.path("study", study="resources", name="runtimes.png"),
            caption="../report/runtimes.rst",
            category="Resources",
            labels={"figure": "wall time and memory per job"},
        ),
        vector=layout.path("study", study="resources", name="runtimes.svg"),
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("runtimes", "all"),
    script:
        "../workflow_scripts/runtimes.py"


rule provenance:
    """Configuration and software versions, for the report."""
    output:
        report(layout.path("study", study="provenance", name="provenance.html"), caption="../report/provenance.rst",
               category="Provenance", labels={"figure": "configuration and software versions"}),
    params:
        config=config,
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("provenance", "all"),
    script:
        "../workflow_scripts/provenance.py"
