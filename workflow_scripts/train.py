import torch

from cesynth.io import redirect_output
from cesynth.train.training import StageJob, TrainingSettings, run_distributed, train_stage

p = snakemake.params
with redirect_output(snakemake.log[0]):  # a bad setting fails here, into the rule's log
    job = StageJob(train_stacks=list(snakemake.input.train), val_stacks=list(snakemake.input.val), model_spec=p.spec,
                   stage=p.settings[p.stage], training=TrainingSettings(**p.settings),
                   weights_out=snakemake.output.weights, history_out=snakemake.output.history,
                   checkpoint_dir=p.checkpoints, init_weights=snakemake.input.get("init"), device=p.settings["device"],
                   name=f"{snakemake.wildcards.model} {p.stage.replace('stage', 'stage ')}")
    torch.set_num_threads(snakemake.threads)
    gpus = int(snakemake.resources.get("gpu", 0))
    if gpus > 1:  # one process per GPU, DistributedDataParallel (torchrun)
        run_distributed(gpus, job)
    else:
        train_stage(job)
