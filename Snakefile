# Contrast-enhanced T1 synthesis from non-contrast MRI: the study of Chen et al. (3D HR-FCN) as one DAG.
#
#   raw scans -> validate -> coregister -> skullstrip -> preprocess -> split
#             -> train_stage1 -> train_stage2 -> infer -> metrics -> study tables/figures -> report

import os
import sys

from snakemake.utils import min_version, update_config, validate

from cesynth.pipeline import configcheck, slurmfit

min_version("9.0")

# Defaults from the repository; --configfile files are merged on top (e.g. config/paper.yaml).
configfile: os.path.join(workflow.basedir, "config.yaml")


# Site (or test) overrides named by CESYNTH_CONFIGFILE (files separated by ":") are merged after
# every --configfile; --config still wins.
if os.environ.get(configcheck.CONFIGFILE_ENV):
    for _override in os.environ[configcheck.CONFIGFILE_ENV].split(os.pathsep):
        update_config(config, configcheck.load_override(_override))
    update_config(config, dict(workflow.config_settings.config))

# Configuration errors stop here, all of them, one line each, before any job runs (no traceback).
_schema = configcheck.load_schema(os.path.join(workflow.basedir, "config", "schema.yaml"))
_problems = configcheck.problems(config, _schema)
if _problems:
    sys.exit("\n".join(_problems))
configcheck.drop_switched_off(config, _schema)
validate(config, "config/schema.yaml")  # fills the schema's defaults


include: "rules/common.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/uncertainty.smk"
include: "rules/evaluate.smk"
include: "rules/predict.smk"
include: "rules/qc.smk"
include: "rules/crossval.smk"
include: "rules/viewer.smk"


# The front page: once the studies have run, the description followed by their headline numbers (rule overview).
_overview = os.path.abspath(layout.path("overview"))


report: _overview if os.path.exists(_overview) else "report/workflow.rst"


rule all:
    default_target: True
    input:
        [study_file(study, "summary.html") for study in STUDIES],
        rules.qc_cohort.output.html,
        expand(layout.path("qc_panel"), scan=SAMPLES.scan),
        rules.overview.output,
        rules.runtimes.output,
        rules.provenance.output,
        rules.viewers.input,
        rules.crossval.input if CROSSVAL else [],
        rules.learning_curve.output if CURVE_MODELS else [],


onstart:
    # On SLURM, a job no node can run would pend for ever: stop now and say which and why.
    if EXECUTOR == "slurm":
        _jobs = {workflow.dag.get_job_group(j) or j for j in workflow.dag.needrun_jobs()}
        _misfits = slurmfit.misfits(slurmfit.requests(_jobs), slurmfit.sinfo())
        if _misfits:
            sys.exit("\n".join(_misfits))


# Target rules besides the studies, for `snakemake targets` and the unknown-target message.
OTHER_TARGETS = ["all", "preprocess_all", "predict", "viewers", "targets", *(["crossval", "ship"] if CROSSVAL else []),
                 *(["learning_curve"] if CURVE_MODELS else [])]

# `snakemake targets` on its own is answered here: as a job it would first need --cores, and print nothing with -n.
# The rule below serves the other callers (the API, or `targets` among other targets).
if REQUESTED == ["targets"]:
    print(configcheck.targets_line(config, OTHER_TARGETS))
    sys.exit(0)


rule targets:
    """Print the studies (each a target), the models they compare and the other targets."""
    localrule: True
    log:
        ".snakemake/cesynth_targets.log",  # the list goes to the terminal; results/ stays untouched
    run:
        print(configcheck.targets_line(config, OTHER_TARGETS))


# A mistyped study or a model name stops here with the valid names (Snakemake would only say
# "No rule to produce").
for _target in configcheck.unknown_targets(REQUESTED, {r.name for r in workflow.rules}):
    sys.exit(configcheck.unknown_target_line(_target, config, OTHER_TARGETS))

# SLURM: every rule that declares a GPU goes to the GPU partition, whatever its name; here, once all rules exist.
slurmfit.route_gpu_rules(workflow.rules, workflow.resource_settings.overwrite_resources, os.environ)
