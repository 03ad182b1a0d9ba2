from cesynth.io import redirect_output, write_json
from cesynth.preprocess.skullstrip import SkullStripSettings, brain_mask

w = snakemake.wildcards
with redirect_output(snakemake.log[0]):
    qc = brain_mask(snakemake.input.reference, snakemake.output.mask, SkullStripSettings(**snakemake.params.settings),
                    scan=w.get("scan") or w.pscan)
    print(qc)
    write_json(qc, snakemake.output.qc)
