from cesynth.io import redirect_output, write_json
from cesynth.registration import coregister

w = snakemake.wildcards
with redirect_output(snakemake.log[0]):
    qc = coregister(w.get("scan") or w.pscan, snakemake.input.moving, snakemake.input.reference,
                    snakemake.output.image, snakemake.output.transform, threads=snakemake.threads,
                    **snakemake.params.settings)
    print(qc)
    write_json(qc, snakemake.output.qc)
