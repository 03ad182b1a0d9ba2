# Two-stage training (paper section III-D) and whole-volume inference, per named model.


# One body for both stages (the {stage} wildcard); two rule names so that a profile can set each
# stage's resources (e.g. --set-resources train_stage1:runtime=2880).
rule train_stage1:
    """Stage 1: lambda = (1, 1, 1), lr 1e-4, 40 epochs in the paper; stage 2: fine-tune with
    lambda = (0.1, 0.1, 10), lr 1e-5, 10 epochs."""
    input:
        split=S.path("split"),
        train=stacks(TRAIN),
        val=stacks(VALIDATION),
        init=lambda w: stage1_weights(w) if w.stage == "2" else [],  # stage 2 fine-tunes stage 1
    output:
        weights=S.path("weights"),
        history=S.path("history"),
    params:
        spec=lambda w: S.model_spec(config, w.model),
        settings=lambda w: S.model_settings(config, w.model),
        stage="stage{stage}",
        checkpoints=S.path("checkpoints"),
    wildcard_constraints:
        stage="1",
    threads: lambda w: S.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=16000,
        runtime=lambda w: S.training_minutes(S.model_settings(config, w.model), f"stage{w.stage}"),
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log("train_stage{stage}", "{model}"),
    benchmark:
        benchmark("train_stage{stage}", "{model}")
    script:
        "../workflow_scripts/train.py"


use rule train_stage1 as train_stage2 with:
    wildcard_constraints:
        stage="2",


rule infer:
    """Synthetic CE-T1 for every test scan (test set A and set B), in model space."""
    input:
        weights=S.path("weights", stage=2),
        stacks=stacks(TEST),
    output:
        [S.path("synth", scan=s, ref=REF) for s in TEST],
    params:
        inference=lambda w: S.inference_settings(config, w.model),
    threads: lambda w: S.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log("infer", "{model}"),
    benchmark:
        benchmark("infer", "{model}")
    script:
        "../workflow_scripts/infer.py"
