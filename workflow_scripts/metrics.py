from cesynth.evaluate.metrics import score_predictions
from cesynth.io import redirect_output, write_table

p = snakemake.params
with redirect_output(snakemake.log[0]):
    table = score_predictions(snakemake.input.synth, snakemake.input.stacks, p.scans, p.protocol,
                              p.enhancement_delta, reference=p.reference)
    table.insert(1, "set", p.sets)
    table.insert(0, "model", snakemake.wildcards.model)
    write_table(table, snakemake.output[0])
