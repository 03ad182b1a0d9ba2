# Two-stage training (paper section III-D) and whole-volume inference, per named model.


rule train_stage1:
    """Stage 1: lambda = (1, 1, 1), lr 1e-4, 40 epochs in the paper."""
    input:
        split=S.path("split"),
        train=stacks(TRAIN),
        val=stacks(SPLIT.scan[SPLIT.set == "test_A"]),
    output:
        weights=S.path("weights", stage=1),
        history=S.path("history", stage=1),
    params:
        spec=lambda w: S.model_spec(config, w.model),
        settings=lambda w: S.model_settings(config, w.model),
        stage="stage1",
        checkpoints=S.path("checkpoints", stage=1),
    threads: lambda w: S.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=16000,
        runtime=lambda w: 60 + 10 * S.model_settings(config, w.model)["stage1"]["epochs"],
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log("train_stage1", "{model}"),
    benchmark:
        benchmark("train_stage1", "{model}")
    script:
        "../workflow_scripts/train.py"


rule train_stage2:
    """Stage 2: fine-tune with lambda = (0.1, 0.1, 10), lr 1e-5, 10 epochs in the paper."""
    input:
        split=S.path("split"),
        train=stacks(TRAIN),
        val=stacks(SPLIT.scan[SPLIT.set == "test_A"]),
        init=stage1_weights,
    output:
        weights=S.path("weights", stage=2),
        history=S.path("history", stage=2),
    params:
        spec=lambda w: S.model_spec(config, w.model),
        settings=lambda w: S.model_settings(config, w.model),
        stage="stage2",
        checkpoints=S.path("checkpoints", stage=2),
    threads: lambda w: S.model_settings(config, w.model)["threads"]
    resources:
        mem_mb=16000,
        runtime=lambda w: 60 + 10 * S.model_settings(config, w.model)["stage2"]["epochs"],
        gpu=1,
    conda:
        "../envs/train.yaml"
    log:
        log("train_stage2", "{model}"),
    benchmark:
        benchmark("train_stage2", "{model}")
    script:
        "../workflow_scripts/train.py"


rule infer:
    """Synthetic CE-T1 for every test scan (test set A and set B), in model space."""
    input:
        weights=S.path("weights", stage=2),
        stacks=stacks(TEST),
    output:
        [S.path("synth", scan=s, ref=REF) for s in TEST],
    params:
        device=lambda w: S.model_settings(config, w.model)["device"],
        amp=lambda w: S.model_settings(config, w.model)["amp"],
        **config["inference"],
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
