"""What a study shows (rules/evaluate.smk, rules/viewer.smk): metrics, paired statistics, figures, the report's
evidence, model cards and the offline slice viewers."""
