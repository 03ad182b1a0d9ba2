from cesynth.inputs.dicom import convert_series
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    convert_series(snakemake.input.series, snakemake.output.image, snakemake.output.sidecar,
                   patient=snakemake.params.patient, scan=snakemake.params.scan, column=snakemake.wildcards.dmod)
