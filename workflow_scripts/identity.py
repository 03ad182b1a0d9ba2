from cesynth.infer.inference import write_identity
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    write_identity(snakemake.input.stacks, snakemake.output)
