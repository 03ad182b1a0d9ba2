import torch

from cesynth.infer.inference import InferenceSettings, synthesize_all
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    synthesize_all(snakemake.input.weights, snakemake.input.stacks, snakemake.output,
                   InferenceSettings(**snakemake.params.inference))
