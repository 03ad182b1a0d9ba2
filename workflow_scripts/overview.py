from cesynth.io import redirect_output
from cesynth.report import write_overview

with redirect_output(snakemake.log[0]):
    write_overview(snakemake.input.template, snakemake.params.studies, snakemake.output[0], snakemake.params.baseline)
