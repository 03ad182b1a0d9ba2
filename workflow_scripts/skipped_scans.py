from cesynth.inputs.screening import write_screening
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    write_screening(snakemake.params.problems, snakemake.params.checks, snakemake.output.report,
                    snakemake.output.cache)
