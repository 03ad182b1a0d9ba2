from cesynth.io import redirect_output, write_json
from cesynth.preprocess.skullstrip import SkullStripSettings, brain_mask

with redirect_output(snakemake.log[0]):
    qc = brain_mask(snakemake.input.reference, snakemake.output.mask, SkullStripSettings(**snakemake.params.settings),
                    scan=snakemake.params.scan)
    print(qc)
    write_json(qc, snakemake.output.qc)
