# Offline slice viewers (cesynth.evaluate.viewer, NiiVue): a page per test patient of every study with an index
# beside the study's summary (part of `all`; target `viewers` for them alone), and a page beside every prediction
# (part of `snakemake predict`).


rule study_viewer:
    """Inputs, acquired and synthetic CE-T1 of every model, |error| and uncertainty of the best, linked views,
    tumour outlines and the patient's metrics: one standalone page per test patient."""
    input:
        stack=layout.path("stack"),
        synth=lambda w: [layout.path("synth", model=m, scan=w.scan, ref=REF) for m in viewer_models(w.study)],
        uncertainty=lambda w: [layout.path("uncertainty", model=m, scan=w.scan, ref=REF)
                               for m in config["studies"][w.study]],
        metrics=lambda w: [layout.path("metrics", model=m) for m in plans.study_models(config, w.study)],
    output:
        report(layout.path("study_viewer"), caption="../report/viewer.rst", category="{study}",
               subcategory="slice viewers", labels={"patient": "{scan}"}),
    params:
        models=lambda w: viewer_models(w.study),
        trained=lambda w: config["studies"][w.study],
        modalities=MODALITIES,
        reference=REF,
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("study_viewer", "{study}_{scan}"),
    script:
        "../workflow_scripts/viewer_report.py"


rule study_viewer_index:
    """The study's test patients, each linked to its viewer page."""
    input:
        pages=expand(layout.path("study_viewer"), scan=TEST, allow_missing=True),
        metrics=lambda w: [layout.path("metrics", model=m) for m in plans.study_models(config, w.study)],
    output:
        report(study_file("{study}", "viewers.html"), caption="../report/viewer.rst", category="{study}",
               subcategory="slice viewers", labels={"patient": "all (index)"}),
    params:
        scans=TEST,
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("study_viewer_index", "{study}"),
    script:
        "../workflow_scripts/viewer_index.py"


rule viewers:
    """Every study's viewer pages and their index (results/studies/<study>/viewers.html)."""
    input:
        [study_file(s, "viewers.html") for s in STUDIES],


if PREDICT.get("samplesheet"):

    rule predict_viewer:
        """The inputs, the synthesis (marked SYNTHETIC) and the uncertainty over it from a threshold, in model
        space: one standalone page beside the prediction."""
        input:
            stack=layout.path("predict_stack"),
            meta=layout.path("predict_stack_json"),
            synth=predict_out("synth_model"),
            **({"uncertainty": predict_out("uncertainty_model")} if PREDICT_MAP else {}),
        output:
            predict_out("viewer"),
        params:
            inputs=PREDICT_SPEC["inputs"],
            model=PREDICT_MODEL,
            warning=predict.WARNING,
        # no group "predict": it reads the stack (inside the group) and the synthesis (outside, the GPU rule)
        conda:
            "../envs/evaluate.yaml"
        log:
            log_path("predict_viewer", "{pscan}"),
        script:
            "../workflow_scripts/viewer_predict.py"
