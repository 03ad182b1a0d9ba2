from cesynth.io import redirect_output, write_json
from cesynth.registration import register_to_reference

with redirect_output(snakemake.log[0]):
    qc = register_to_reference(snakemake.input.moving, snakemake.input.reference, snakemake.output.image,
                               snakemake.output.transform, transform=snakemake.params.transform,
                               threads=snakemake.threads)
    print(qc)
    write_json(qc, snakemake.output.qc)
