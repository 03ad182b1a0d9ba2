import os

import pandas as pd

from cesynth.evaluate.viewer import study_index
from cesynth.io import redirect_output

out = snakemake.output[0]
with redirect_output(snakemake.log[0]):
    study_index(out, study=snakemake.wildcards.study,
                metrics=pd.concat([pd.read_csv(f, sep="\t") for f in snakemake.input.metrics], ignore_index=True),
                pages={s: os.path.relpath(page, os.path.dirname(out))
                       for s, page in zip(snakemake.params.scans, snakemake.input.pages)})
