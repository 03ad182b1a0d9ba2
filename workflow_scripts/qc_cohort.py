import pandas as pd

from cesynth.io import redirect_output, write_table
from cesynth.preprocess.qc import flag_cohort, write_html

with redirect_output(snakemake.log[0]):
    table = flag_cohort(pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.rows], ignore_index=True),
                        volume_tolerance=snakemake.params.volume_tolerance)
    print(table.to_string())
    write_table(table, snakemake.output.tsv)
    write_html(table, snakemake.output.html)
