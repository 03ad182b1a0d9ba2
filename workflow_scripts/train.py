import torch

from cesynth.io import redirect_output
from cesynth.training import train_stage

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    train_stage(train_stacks=snakemake.input.train, val_stacks=snakemake.input.val, model_spec=p.spec,
                stage=p.settings[p.stage], training=p.settings, weights_out=snakemake.output.weights,
                history_out=snakemake.output.history, checkpoint_dir=p.checkpoints,
                init_weights=snakemake.input.get("init"), device=p.settings["device"])
