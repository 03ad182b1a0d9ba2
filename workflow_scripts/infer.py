import torch

from cesynth.inference import synthesize_all
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    synthesize_all(snakemake.input.weights, snakemake.input.stacks, snakemake.output, p.stride, p.batch_size,
                   p.device, p.amp, tiling=p.tiling, slab=p.slab, cpu_bf16=p.cpu_bf16)
