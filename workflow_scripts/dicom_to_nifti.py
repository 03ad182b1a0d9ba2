from cesynth.inputs.dicom import convert_series
from cesynth.io import redirect_output

w = snakemake.wildcards
with redirect_output(snakemake.log[0]):
    convert_series(snakemake.input.series, snakemake.output.image, snakemake.output.sidecar,
                   patient=snakemake.params.patient, scan=w.get("scan") or w.pscan, column=w.dmod)
