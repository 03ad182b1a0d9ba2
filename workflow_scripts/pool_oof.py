from cesynth.io import redirect_output
from cesynth.pipeline.crossval import pool_files

with redirect_output(snakemake.log[0]):
    pool_files(snakemake.input.synth, snakemake.output.synth)
    pool_files(snakemake.input.maps, snakemake.output.maps)
