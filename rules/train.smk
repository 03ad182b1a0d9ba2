# Two-stage training (paper section III-D) and whole-volume inference, per named model.


# One body for both stages (the {stage} wildcard); two rule names so that a profile can set each
# stage's resources (e.g. --set-resources train_stage1:runtime=2880).
rule train_stage1:
    """Stage 1: lambda = (1, 1, 1), lr 1e-4, 40 epochs in the paper; stage 2: fine-tune with
    lambda = (0.1, 0.1, 10), lr 1e-5, 10 epochs."""
    input:
        split=layout.path("split"),
        train=lambda w: stacks(training_scans(w.model)),
        val=stacks(VALIDATION),
        init=lambda w: stage1_weights(w) if w.stage == "2" else [],  # stage 2 fine-tunes stage 1
    output:
        weights=layout.path("weights"),
        history=layout.path("history"),
    params:
        spec=lambda w: plans.model_spec(config, w.model),
        settings=lambda w: plans.model_settings(config, w.model),
        stage="stage{stage}",
        checkpoints=layout.path("checkpoints"),
    wildcard_constraints:
        stage="1",
    threads: lambda w: plans.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=16000,
        runtime=lambda w: plans.training_minutes(plans.model_settings(config, w.model), f"stage{w.stage}"),
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log_path("train_stage{stage}", "{model}"),
    benchmark:
        benchmark_path("train_stage{stage}", "{model}")
    script:
        "../workflow_scripts/train.py"


use rule train_stage1 as train_stage2 with:
    wildcard_constraints:
        stage="2",


# Which models synthesize which scans: a fold model its own fold (cross-validation), every other model the test
# sets. One rule per group, as a rule's outputs cannot depend on its wildcards.
for _group, (_models, _scans) in APPLIED.items():

    rule:
        """Synthetic CE-T1 for every test scan (test set A and set B), in model space."""
        name:
            f"infer{_group}"
        input:
            weights=layout.path("weights", stage=2),
            stacks=stacks(_scans),
        output:
            syntheses("{model}", _scans),
        params:
            inference=lambda w: plans.inference_settings(config, w.model),
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
            log_path("infer", "{model}"),
        benchmark:
            benchmark_path("infer", "{model}")
        script:
            "../workflow_scripts/infer.py"
