"""What the configuration means for the workflow (Snakefile, rules/common.smk, rules/crossval.smk): the configuration
check, the output layout, each model's plans, cross-validation folds and SLURM routing."""
