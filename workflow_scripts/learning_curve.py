import pandas as pd

from cesynth.evaluate import plots
from cesynth.io import redirect_output, write_table
from cesynth.pipeline import crossval

with redirect_output(snakemake.log[0]):
    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.metrics], ignore_index=True)
    curve = crossval.learning_curve(metrics, pd.read_csv(snakemake.input.identity, sep="\t"), snakemake.params.models)
    trends = [crossval.fit_trend(curve, c) for c in ("psnr_gain", "et_contrast_share")]
    write_table(curve, snakemake.output.table)
    write_table(pd.DataFrame(trends), snakemake.output.trend)
    plots.learning_curve(curve, trends, snakemake.output.figure)
