# Per-voxel uncertainty of every model's synthesis of the test scans, and how well it points at the real
# error (docs/uncertainty.md). The study rules (rules/evaluate.smk) show both; predict writes its own map.


for _group, (_models, _scans) in APPLIED.items():  # as rule infer (rules/train.smk)

    rule:
        """Uncertainty map of every test scan's synthesis (uncertainty.method, docs/uncertainty.md)."""
        name:
            f"uncertainty{_group}"
        input:
            weights=layout.path("weights", stage=2),
            stacks=stacks(_scans),
            synth=syntheses("{model}", _scans),
        output:
            uncertainty_maps("{model}", _scans),
        params:
            inference=lambda w: plans.inference_settings(config, w.model),  # the syntheses' own
            uncertainty=config["uncertainty"],
        wildcard_constraints:
            model=model_pattern(_models),
        threads: lambda w: plans.model_settings(config, w.model)["threads"]
        resources:
            mem_mb=8000,
            runtime=60,
            gpu=1,
        conda:
            "../envs/train.yaml"
        log:
            log_path("uncertainty", "{model}"),
        benchmark:
            benchmark_path("uncertainty", "{model}")
        script:
            "../workflow_scripts/uncertainty.py"


rule uncertainty_metrics:
    """Per test scan: Spearman of uncertainty and |error|, AUROC for large errors, missed enhancement, deciles."""
    input:
        synth=lambda w: syntheses(w.model, test_scans(w.model)),
        maps=lambda w: uncertainty_maps(w.model, test_scans(w.model)),
        stacks=lambda w: stacks(test_scans(w.model)),
    output:
        metrics=layout.path("uncertainty_metrics"),
        calibration=layout.path("uncertainty_calibration"),
    params:
        scans=lambda w: test_scans(w.model),
        sets=lambda w: [SPLIT.at[s, "set"] for s in test_scans(w.model)],
        reference=REF,
        threshold=config["uncertainty"]["error_threshold"],
        delta=config["evaluation"]["enhancement_delta"],
    conda:
        "../envs/evaluate.yaml"
    log:
        log_path("uncertainty_metrics", "{model}"),
    script:
        "../workflow_scripts/uncertainty_metrics.py"
