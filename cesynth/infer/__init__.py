"""Synthesis with a trained network (rules/evaluate.smk infer, rules/uncertainty.smk, rules/predict.smk):
whole-volume tiling and test-time views, the uncertainty map, prediction for new patients."""
