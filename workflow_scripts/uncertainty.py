import torch

from cesynth.inference import InferenceSettings
from cesynth.io import redirect_output
from cesynth.uncertainty import write_maps

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    write_maps(snakemake.input.weights, snakemake.input.stacks, snakemake.input.synth, snakemake.output,
               InferenceSettings(**p.inference), p.uncertainty)
