from cesynth.io import redirect_output, write_json
from cesynth.registration import coregister

w = snakemake.wildcards
with redirect_output(snakemake.log[0]):
<<<<<<< HEAD
    qc = register_to_reference(snakemake.input.moving, snakemake.input.reference, snakemake.output.image,
                               snakemake.output.transform, transform=p.transform, threads=snakemake.threads,
                               iterations=tuple(p.iterations), sampling=p.sampling, finest_mm=p.finest_mm,
                               backend=p.backend)
=======
    qc = coregister(w.get("scan") or w.pscan, snakemake.input.moving, snakemake.input.reference,
                    snakemake.output.image, snakemake.output.transform, threads=snakemake.threads,
                    **snakemake.params.settings)
>>>>>>> ac0a37b (Already-preprocessed inputs: skullstrip backend none (nonzero mask, refuses a whole head), registration transform none (grid checked, identity transform), per-scan sample-sheet columns skullstrip/registration; input.source brats (2021 and 2023+ names, core labels per release); UCSF-PDGM and BraTS presets skip both steps (#15))
    print(qc)
    write_json(qc, snakemake.output.qc)
