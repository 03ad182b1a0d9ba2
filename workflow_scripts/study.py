from cesynth.io import redirect_output
from cesynth.report import write_study, write_uncertainty

p = snakemake.params
with redirect_output(snakemake.log[0]):
    write_study(models=p.models, metric_paths=snakemake.input.metrics, predictions=p.predictions,
                histories=p.histories, stack_paths=snakemake.input.stacks, scans=p.scans, modalities=p.modalities,
                reference=p.reference, outputs=snakemake.output, labels=p.labels, uncertainty=p.uncertainty)
    tables = p.uncertainty_tables.values()
    write_uncertainty(models=list(p.uncertainty_tables), metric_paths=[m for m, _ in tables],
                      calibration_paths=[c for _, c in tables], outputs=snakemake.output)
