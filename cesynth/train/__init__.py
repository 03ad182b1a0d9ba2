"""One training stage (rules/train.smk): patches, losses, the resumable trainer, its validation curve, checkpoints
and data-parallel processes."""
