import pandas as pd

from cesynth.evaluate.viewer import report_viewer
from cesynth.io import redirect_output

p, w = snakemake.params, snakemake.wildcards
maps = dict(zip(p.trained, snakemake.input.uncertainty))  # the study's trained models have one
with redirect_output(snakemake.log[0]):
    report_viewer(snakemake.output[0], scan=w.scan, study=w.study, stack_path=snakemake.input.stack,
                  models={m: (synth, maps.get(m)) for m, synth in zip(p.models, snakemake.input.synth)},
                  metrics=pd.concat([pd.read_csv(f, sep="\t") for f in snakemake.input.metrics], ignore_index=True),
                  modalities=p.modalities, reference=p.reference)
