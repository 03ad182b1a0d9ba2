from cesynth.evaluate.report import write_overview
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    write_overview(snakemake.input.template, snakemake.params.studies, snakemake.output[0], snakemake.params.baseline)
