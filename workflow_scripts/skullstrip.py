from cesynth.io import redirect_output, write_json
from cesynth.skullstrip import brain_mask

p = snakemake.params
with redirect_output(snakemake.log[0]):
    qc = brain_mask(snakemake.input.reference, snakemake.output.mask, backend=p.backend, frac=p.frac,
                    robust=p.robust, python_frac=p.python_frac, iterations=p.iterations, iso_mm=p.iso_mm)
    print(qc)
    write_json(qc, snakemake.output.qc)
