from cesynth.infer.uncertainty import evaluate
from cesynth.io import redirect_output, write_table

p = snakemake.params
with redirect_output(snakemake.log[0]):
    metrics, calibration = evaluate(snakemake.input.synth, snakemake.input.maps, snakemake.input.stacks, p.scans,
                                    p.reference, p.threshold, p.delta)
    metrics.insert(1, "set", p.sets)
    for table in (metrics, calibration):
        table.insert(0, "model", snakemake.wildcards.model)
    write_table(metrics, snakemake.output.metrics)
    write_table(calibration, snakemake.output.calibration)
