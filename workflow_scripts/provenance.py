from cesynth.io import redirect_output
from cesynth.report import write_provenance

with redirect_output(snakemake.log[0]):
    write_provenance(snakemake.params.config, snakemake.output[0])
