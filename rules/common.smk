# Cohort, split and path helpers shared by all rules. At parse time it reads the sample sheet (and the split
# table, if given), not the images; with input.skip_invalid it opens every image once (cesynth.inputs.screening,
# cached in results/qc/input_screening.json) to leave the broken scans out of the DAG.

import sys

from cesynth.evaluate import modelcard
from cesynth.inputs import dicom
from cesynth.inputs.cohort import enhancing_labels, load_samples, load_split, tumour_mask_labels, validation_scans
from cesynth.inputs.screening import screen_scans
from cesynth.inputs.validate import InputError, check_sheet, scan_settings
from cesynth.pipeline import configcheck, crossval, layout, plans

def model_pattern(models):
    return "|".join(map(re.escape, models))


layout.use_results(config["results"])
# What the command asks for, read from its command line: Snakemake knows the executor only once jobs run.
REQUESTED, EXECUTOR = configcheck.command_line(sys.argv)

# On a cluster a scan's rules (group "scan") run as one job, which asks for the sum over the rules
# that could run at once. Each declares scan_slots=1 and a cluster run has SCAN_SLOTS of them, so a
# group job asks for at most 2 CPUs and 8000 MB; the group job itself recomputes the sum, so the
# limit is set both where jobs are submitted and inside them (the profile scopes it per job).
SCAN_SLOTS = 2
if configcheck.on_cluster(EXECUTOR):
    workflow.register_resource("scan_slots", SCAN_SLOTS)

REF = config["reference"]
MODALITIES = config["modalities"]
MOVING = [m for m in MODALITIES if m != REF]
MASK_LABELS = tumour_mask_labels(config["input"])
ET_LABELS = enhancing_labels(config["input"])

SAMPLES = load_samples(config["input"], config["demo"], layout.path("demo_dir"))
# Predictions from given weights need the training sheet's names, not its images (a shipped model's config).
TRAINING_IMAGES = config["input"]["source"] != "demo" and not configcheck.predict_only(
    REQUESTED, config, f"{layout.RESULTS}/predict/")  # demo files are written by a rule
SCREENING = None  # input.skip_invalid: what the skipped_scans rule (rules/qc.smk) writes
if config["input"].get("skip_invalid") and TRAINING_IMAGES:
    SAMPLES, SCREENING = screen_scans(SAMPLES, [*MODALITIES, REF], REF, MASK_LABELS, layout.path("screening_cache"))
    for _problem in SCREENING.problems:
        print(f"skip_invalid: leaving out {_problem}", file=sys.stderr)
SAMPLES = SAMPLES.set_index("scan", drop=False)
_sheet_problems = check_sheet(SAMPLES, [*MODALITIES, REF], check_exists=TRAINING_IMAGES)
if _sheet_problems:
    raise InputError(_sheet_problems)
# Images given as DICOM series folders: {scan: {column: folder}}, read from here on as their converted NIfTI
# (rules dicom_check, dicom_to_nifti).
DICOM_SERIES = dicom.series_folders(SAMPLES, [*MODALITIES, REF])
SAMPLES = dicom.with_converted_paths(SAMPLES, DICOM_SERIES, lambda s, c: layout.path("dicom_nifti", scan=s, dmod=c))
# Cross-validation (crossval:): every scan is scored by the fold models that did not train on it and pooled as
# <model>_oof; the plain models train on every scan (the models that ship). Otherwise the split of the paper.
CROSSVAL = config.get("crossval")
if CROSSVAL:
    FOLDS = crossval.load_folds(CROSSVAL["folds"], SAMPLES.reset_index(drop=True))
    CV = crossval.design(FOLDS, CROSSVAL["models"], CROSSVAL.get("learning_curve"), CROSSVAL["seed"])
    SPLIT = crossval.split_table(FOLDS, SAMPLES).set_index("scan", drop=False)
    TRAIN = list(SPLIT.scan)
    for _name, _fold_model in CV.models.items():
        config["models"][_name] = config["models"][_fold_model.base]
    for _name, _members in CV.pooled.items():
        config["models"][_name] = config["models"][CV.models[_members[0]].base]
else:
    CV = crossval.CrossValidation(folds={})
    SPLIT = load_split(config["split"], SAMPLES.reset_index(drop=True)).set_index("scan", drop=False)
    TRAIN = list(SPLIT.scan[SPLIT.set == "train"])
TEST = list(SPLIT.scan[SPLIT.set.isin(["test_A", "B"])])
CURVE_MODELS = CV.curve_models((CROSSVAL or {}).get("learning_curve"))  # the learning curve's points, if any
# Which scans each model is applied to, by group of models (the rules infer and uncertainty, one per group).
APPLIED = {"": ([m for m in config["models"] if m not in CV.models and m not in CV.pooled], TEST),
           **{f"_fold{k}": ([m for m, f in CV.models.items() if f.fold == k], list(scans))
              for k, scans in CV.folds.items()}}
# Under cross-validation only the studies of pooled models: any other would score models on their training scans.
STUDIES = [s for s, models in config["studies"].items() if not CROSSVAL or set(models) <= set(CV.pooled)]
config["studies"] = {s: config["studies"][s] for s in STUDIES}  # what `snakemake targets` offers, too
MODELS_IN_STUDIES = sorted({t for s in STUDIES for m in config["studies"][s] for t in CV.pooled.get(m, [m])})
VALIDATION = validation_scans(SPLIT, "none" if CROSSVAL else config["split"]["validation"])
# the cohort of the model cards; under cross-validation the plain models train on every scan
COHORT = modelcard.cohort_record(SAMPLES, SPLIT.assign(set="train") if CROSSVAL else SPLIT, config["input"])


wildcard_constraints:
    scan="|".join(map(re.escape, SAMPLES.scan)),
    dmod="|".join(dict.fromkeys([*MODALITIES, REF])),
    model=model_pattern([*config["models"], plans.IDENTITY]),
    stage="1|2",
    study="|".join(STUDIES),


def training_scans(model):
    """The scans a model trains on: its fold's training part under cross-validation, else set train."""
    return list(CV.models[model].train) if model in CV.models else TRAIN


def test_scans(model):
    """The scans a model is applied to and scored on: its fold, else test set A and set B."""
    return list(CV.models[model].test) if model in CV.models else TEST


def evaluated_model(model):
    """Whose test metrics describe ``model`` in its card: under cross-validation its out-of-fold pool."""
    pooled = model + crossval.OOF_SUFFIX
    return pooled if pooled in CV.pooled else model


def viewer_models(study):
    """The syntheses a study's viewer shows: its models without identity (the T1, already a pane)."""
    return [m for m in plans.study_models(config, study) if m != plans.IDENTITY]


def raw(scan, modality):
    return SAMPLES.at[scan, modality]


def log_path(rule, name):
    return layout.path("log", rule=rule, name=name)


def benchmark_path(rule, name):
    return layout.path("benchmark", rule=rule, name=name)


def stacks(scans):
    return [layout.path("stack", scan=s) for s in scans]


def study_file(study, name):
    return layout.path("study", study=study, name=name)


def study_report_item(study, name, caption, figure):
    """A study output shown in `snakemake --report`, under the study's category with its caption (report/)."""
    return report(study_file(study, name), caption=f"../report/{caption}.rst", category=study,
                  labels={"figure": figure})


def uncertainty_maps(model, scans=None):
    return [layout.path("uncertainty", model=model, scan=s, ref=REF) for s in (TEST if scans is None else scans)]


def syntheses(model, scans):
    return [layout.path("synth", model=model, scan=s, ref=REF) for s in scans]


def stage_owners(model):
    """(model, stage) of the two training histories behind ``model`` (stage 1 may be another model's)."""
    return [(plans.stage1_owner(config, model), 1), (model, 2)]


def stage1_weights(w):
    return layout.path("weights", model=plans.stage1_owner(config, w.model), stage=1)


def predict_out(kind, pscan="{pscan}"):
    return layout.path(f"predict_{kind}", pscan=pscan, model=config["predict"]["model"])
