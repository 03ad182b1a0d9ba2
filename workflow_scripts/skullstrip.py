from cesynth.io import redirect_output, write_json
from cesynth.skullstrip import brain_mask

with redirect_output(snakemake.log[0]):
    qc = brain_mask(snakemake.input.reference, snakemake.output.mask, backend=snakemake.params.backend,
                    frac=snakemake.params.frac, robust=snakemake.params.get("robust", True))
    print(qc)
    write_json(qc, snakemake.output.qc)
