# Per-voxel uncertainty of every model's synthesis of the test scans, and how well it points at the real
# error (docs/uncertainty.md). The study rules (rules/evaluate.smk) show both; predict writes its own map.


rule uncertainty:
    """Uncertainty map of every test scan's synthesis (uncertainty.method, docs/uncertainty.md)."""
    input:
        weights=S.path("weights", stage=2),
        stacks=stacks(TEST),
        synth=[S.path("synth", scan=s, ref=REF) for s in TEST],
    output:
        uncertainty_maps("{model}"),
    params:
        device=lambda w: S.model_settings(config, w.model)["device"],
        amp=lambda w: S.model_settings(config, w.model)["amp"],
        settings={k: config[k] for k in ("inference", "uncertainty")},
    threads: lambda w: S.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log("uncertainty", "{model}"),
    benchmark:
        benchmark("uncertainty", "{model}")
    script:
        "../workflow_scripts/uncertainty.py"


rule uncertainty_metrics:
    """Per test scan: Spearman of uncertainty and |error|, AUROC for large errors, missed enhancement, deciles."""
    input:
        synth=[S.path("synth", scan=s, ref=REF) for s in TEST],
        maps=uncertainty_maps("{model}"),
        stacks=stacks(TEST),
    output:
        metrics=S.path("uncertainty_metrics"),
        calibration=S.path("uncertainty_calibration"),
    params:
        scans=TEST,
        sets=[SPLIT.at[s, "set"] for s in TEST],
        reference=REF,
        threshold=config["uncertainty"]["error_threshold"],
        delta=config["evaluation"]["enhancement_delta"],
    conda:
        "../envs/evaluate.yaml"
    log:
        log("uncertainty_metrics", "{model}"),
    script:
        "../workflow_scripts/uncertainty_metrics.py"
