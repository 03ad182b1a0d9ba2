import pandas as pd

from cesynth.io import redirect_output, write_table

with redirect_output(snakemake.log[0]):
    write_table(pd.DataFrame(snakemake.params.split), snakemake.output[0])
