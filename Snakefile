# Contrast-enhanced T1 synthesis from non-contrast MRI: the study of Chen et al. (3D HR-FCN) as one DAG.
#
#   raw scans -> validate -> coregister -> skullstrip -> preprocess -> split
#             -> train_stage1 -> train_stage2 -> infer -> metrics -> study tables/figures -> report

import os

from snakemake.utils import min_version, validate

min_version("9.0")

# Defaults from the repository; --configfile files are merged on top (e.g. config/paper.yaml).
configfile: os.path.join(workflow.basedir, "config.yaml")


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/predict.smk"
include: "rules/qc.smk"


# The front page: once the studies have run, the description followed by their headline numbers (rule overview).
_overview = os.path.abspath(S.path("overview"))


report: _overview if os.path.exists(_overview) else "report/workflow.rst"


rule all:
    default_target: True
    input:
        [study_file(study, "summary.html") for study in STUDIES],
        rules.qc_cohort.output.html,
        expand(S.path("qc_panel"), scan=SAMPLES.scan),
        rules.overview.output,
        rules.runtimes.output,
        rules.provenance.output,
