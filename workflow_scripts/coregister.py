from cesynth.io import redirect_output, write_json
from cesynth.registration import RegistrationSettings, coregister

w = snakemake.wildcards
with redirect_output(snakemake.log[0]):
    settings = RegistrationSettings(**snakemake.params.settings, threads=snakemake.threads)
    qc = coregister(w.get("scan") or w.pscan, snakemake.input.moving, snakemake.input.reference,
                    snakemake.output.image, snakemake.output.transform, settings)
    print(qc)
    write_json(qc, snakemake.output.qc)
