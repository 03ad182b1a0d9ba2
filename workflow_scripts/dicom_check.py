from cesynth.inputs.dicom import check_scan_series
from cesynth.io import redirect_output, write_json

with redirect_output(snakemake.log[0]):
    files = check_scan_series(snakemake.params.patient, snakemake.params.scan, snakemake.params.folders)
    write_json({"folders": snakemake.params.folders, "dicom_files": files}, snakemake.output[0])
