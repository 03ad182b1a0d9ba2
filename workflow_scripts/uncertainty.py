import torch

from cesynth.infer.inference import InferenceSettings
from cesynth.infer.uncertainty import write_maps
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    write_maps(snakemake.input.weights, snakemake.input.stacks, snakemake.input.synth, snakemake.output,
               InferenceSettings(**p.inference), p.uncertainty)
