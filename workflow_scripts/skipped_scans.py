from cesynth.io import redirect_output
from cesynth.screening import write_screening

with redirect_output(snakemake.log[0]):
    write_screening(snakemake.params.problems, snakemake.params.checks, snakemake.output.report,
                    snakemake.output.cache)
