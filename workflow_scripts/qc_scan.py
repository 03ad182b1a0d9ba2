import pandas as pd

from cesynth.io import redirect_output, write_table
from cesynth.preprocess.qc import scan_panel, scan_row

with redirect_output(snakemake.log[0]):
    mods = snakemake.params.moving
    scan = snakemake.wildcards.scan
    scan_panel(snakemake.input.reference, snakemake.input.mask, dict(zip(mods, snakemake.input.registered, strict=True)),
               snakemake.output.panel, title=scan)
    row = scan_row(scan, snakemake.input.mask_qc, dict(zip(mods, snakemake.input.coreg_qc, strict=True)))
    print(row)
    write_table(pd.DataFrame([row]), snakemake.output.row)
