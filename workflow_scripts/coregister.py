from cesynth.io import redirect_output, write_json
from cesynth.registration import register_to_reference

p = snakemake.params
with redirect_output(snakemake.log[0]):
    qc = register_to_reference(snakemake.input.moving, snakemake.input.reference, snakemake.output.image,
                               snakemake.output.transform, transform=p.transform, threads=snakemake.threads,
                               iterations=tuple(p.iterations), sampling=p.sampling, finest_mm=p.finest_mm,
                               backend=p.backend)
    print(qc)
    write_json(qc, snakemake.output.qc)
