from cesynth.io import redirect_output, write_json
from cesynth.preprocess.registration import RegistrationSettings, coregister_scan

with redirect_output(snakemake.log[0]):
    settings = RegistrationSettings(**snakemake.params.settings, threads=snakemake.threads)
    qcs = coregister_scan(snakemake.params.scan, snakemake.params.modalities, snakemake.input.moving,
                          snakemake.input.reference, snakemake.output.images, snakemake.output.transforms, settings)
    for qc, path in zip(qcs, snakemake.output.qc, strict=True):
        print(qc)
        write_json(qc, path)
