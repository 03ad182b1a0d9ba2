from cesynth.io import redirect_output
from cesynth.modelcard import build_card, write_card

with redirect_output(snakemake.log[0]):
    card = build_card(model=snakemake.wildcards.model, weights=snakemake.input.weights,
                      metrics_paths=snakemake.input.metrics, training=snakemake.params.training,
                      cohort=snakemake.params.cohort, evaluated=snakemake.params.evaluated,
                      limitations=snakemake.params.limitations)
    write_card(card, snakemake.output.card, snakemake.output.text)
