from cesynth.evaluate.modelcard import build_card, write_card
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    card = build_card(model=snakemake.wildcards.model, weights=snakemake.input.weights,
                      metrics_paths=snakemake.input.metrics, training=p.training, inference=p.inference,
                      cohort=p.cohort, evaluated=p.evaluated, limitations=p.limitations)
    write_card(card, snakemake.output.card, snakemake.output.text)
