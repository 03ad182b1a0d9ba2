# Cohort, split and path helpers shared by all rules. At parse time it reads the sample sheet (and the split
# table, if given), not the images; with input.skip_invalid it opens every image once (cesynth.screening,
# cached in results/qc/input_screening.json) to leave the broken scans out of the DAG.

import sys

from cesynth import configcheck, dicom, modelcard, study as S
from cesynth.cohort import enhancing_labels, load_samples, load_split, tumour_mask_labels, validation_scans
from cesynth.screening import screen_scans
from cesynth.validate import InputError, check_sheet, scan_settings

problems = S.check_config(config)
if problems:
    sys.exit("\n".join(f"config: {p}" for p in problems))
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
STUDIES = list(config["studies"])
MODELS_IN_STUDIES = sorted({m for models in config["studies"].values() for m in models})
MASK_LABELS = tumour_mask_labels(config["input"])
ET_LABELS = enhancing_labels(config["input"])

SAMPLES = load_samples(config["input"], config["demo"], S.path("demo_dir"))
SCREENING = None  # input.skip_invalid: what the skipped_scans rule (rules/qc.smk) writes
if config["input"].get("skip_invalid") and config["input"]["source"] != "demo":  # demo files are written by a rule
    SAMPLES, SCREENING = screen_scans(SAMPLES, [*MODALITIES, REF], REF, MASK_LABELS, S.path("screening_cache"))
    for _problem in SCREENING.problems:
        print(f"skip_invalid: leaving out {_problem}", file=sys.stderr)
SAMPLES = SAMPLES.set_index("scan", drop=False)
_sheet_problems = check_sheet(SAMPLES, [*MODALITIES, REF], check_exists=config["input"]["source"] != "demo")
if _sheet_problems:
    raise InputError(_sheet_problems)
# Images given as DICOM series folders: {scan: {column: folder}}, read from here on as their converted NIfTI
# (rules dicom_check, dicom_to_nifti).
DICOM_SERIES = dicom.series_folders(SAMPLES, [*MODALITIES, REF])
SAMPLES = dicom.with_converted_paths(SAMPLES, DICOM_SERIES, lambda s, c: S.path("dicom_nifti", scan=s, dmod=c))
SPLIT = load_split(config["split"], SAMPLES.reset_index(drop=True)).set_index("scan", drop=False)
TRAIN = list(SPLIT.scan[SPLIT.set == "train"])
TEST = list(SPLIT.scan[SPLIT.set.isin(["test_A", "B"])])
VALIDATION = validation_scans(SPLIT, config["split"]["validation"])
COHORT = modelcard.cohort_record(SAMPLES, SPLIT, config["input"])  # the training cohort, for the model cards


wildcard_constraints:
    scan="|".join(map(re.escape, SAMPLES.scan)),
    mod="|".join(MOVING),
    dmod="|".join(dict.fromkeys([*MODALITIES, REF])),
    model="|".join(map(re.escape, [*config["models"], S.IDENTITY])),
    stage="1|2",
    study="|".join(STUDIES),


def raw(scan, modality):
    return SAMPLES.at[scan, modality]


def log(rule, name):
    return S.path("log", rule=rule, name=name)


def benchmark(rule, name):
    return S.path("benchmark", rule=rule, name=name)


def stacks(scans):
    return [S.path("stack", scan=s) for s in scans]


def study_file(study, name):
    return S.path("study", study=study, name=name)


def uncertainty_maps(model):
    return [S.path("uncertainty", model=model, scan=s, ref=REF) for s in TEST]


def stage_owners(model):
    """(model, stage) of the two training histories behind ``model`` (stage 1 may be another model's)."""
    return [(S.stage1_owner(config, model), 1), (model, 2)]


def stage1_weights(w):
    return S.path("weights", model=S.stage1_owner(config, w.model), stage=1)


def predict_out(kind, pscan="{pscan}"):
    return S.path(f"predict_{kind}", pscan=pscan, model=config["predict"]["model"])
