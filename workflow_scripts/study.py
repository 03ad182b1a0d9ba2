from cesynth.evaluate.report import StudyInputs, write_study, write_uncertainty
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    study = StudyInputs(models=p.models, scans=p.scans, stack_paths=snakemake.input.stacks, modalities=p.modalities,
                        reference=p.reference, predictions=p.predictions, histories=p.histories, labels=p.labels,
                        uncertainty=p.uncertainty)
    write_study(study, snakemake.input.metrics, snakemake.output)
    tables = p.uncertainty_tables.values()
    write_uncertainty(models=list(p.uncertainty_tables), metric_paths=[m for m, _ in tables],
                      calibration_paths=[c for _, c in tables], outputs=snakemake.output)
