from cesynth.evaluate.report import write_provenance
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    write_provenance(snakemake.params.config, snakemake.output[0])
