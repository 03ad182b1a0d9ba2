"""The study design as data: models with their settings, studies, output paths.

Snakemake's rules ask this module where things live (one path builder, so every rule names its
files the same way) and what each model needs (its inputs, its merged settings).
"""

from __future__ import annotations

import copy
import math

from .crossval import OOF_SUFFIX, check as check_crossval

TRAINING_KEYS_PER_MODEL = ("architecture", "inputs", "inputs_first", "stage1_from")
# The no-model baseline of every study: the preprocessed T1 itself as the synthetic CE-T1.
IDENTITY = "identity"

RESULTS = "results"  # the default; a config names its own (`results:`), set once per run by use_results


def use_results(root: str) -> None:
    """Put every output of this run under ``root`` (config ``results``): one folder per configuration, so that the
    demo and a study of one's own cohort in one clone neither mix nor overwrite each other."""
    global RESULTS
    RESULTS = root.rstrip("/")


PATHS = {
    "demo_dir": "{r}/demo",
    "demo_sheet": "{r}/demo/samples.tsv",
    "validated": "{r}/qc/inputs_validated.tsv",
    "skipped_scans": "{r}/qc/skipped_scans.tsv",
    "screening_cache": "{r}/qc/input_screening.json",
    "qc_panel": "{r}/qc/preproc/{scan}_qc.png",
    "qc_row": "{r}/qc/preproc/{scan}_qc.tsv",
    "qc_table": "{r}/qc/preproc_qc.tsv",
    "qc_html": "{r}/qc/preproc_qc.html",
    "split": "{r}/split.tsv",
    "coregistered": "{r}/preproc/{scan}/{scan}_space-ref_{mod}.nii.gz",
    "transform": "{r}/preproc/{scan}/{scan}_from-{mod}_to-ref.mat",
    "coreg_qc": "{r}/preproc/{scan}/{scan}_from-{mod}_qc.json",
    "brain_mask": "{r}/preproc/{scan}/{scan}_desc-brain_mask.nii.gz",
    "skullstrip_qc": "{r}/preproc/{scan}/{scan}_desc-brain_qc.json",
    "dicom_checked": "{r}/preproc/{scan}/dicom/{scan}_dicom_checked.json",
    "dicom_nifti": "{r}/preproc/{scan}/dicom/{scan}_{dmod}.nii.gz",
    "dicom_sidecar": "{r}/preproc/{scan}/dicom/{scan}_{dmod}.json",
    "stack": "{r}/preproc/{scan}/{scan}_desc-preproc.npy",
    "stack_json": "{r}/preproc/{scan}/{scan}_desc-preproc.json",
    "weights": "{r}/models/{model}/stage{stage}/weights.pt",
    "history": "{r}/models/{model}/stage{stage}/history.tsv",
    "checkpoints": "{r}/models/{model}/stage{stage}/checkpoints",
    "model_card": "{r}/models/{model}/stage2/model_card.json",  # beside the final weights (modelcard.card_path)
    "model_card_text": "{r}/models/{model}/stage2/model_card.md",
    "synth": "{r}/models/{model}/synth/{scan}_desc-synth_{ref}.nii.gz",
    "metrics": "{r}/models/{model}/metrics.tsv",
    "uncertainty": "{r}/models/{model}/uncertainty/{scan}_desc-uncertainty_{ref}.nii.gz",
    "uncertainty_metrics": "{r}/models/{model}/uncertainty_metrics.tsv",
    "uncertainty_calibration": "{r}/models/{model}/uncertainty_calibration.tsv",
    "study": "{r}/studies/{study}/{name}",
    "study_viewer": "{r}/studies/{study}/viewer/{scan}.html",  # offline slice viewer (cesynth.viewer)
    "overview": "{r}/studies/overview.rst",
    # prediction for new patients (no CE-T1): everything under results/predict/<scan>/
    "predict_dicom_checked": "{r}/predict/{pscan}/dicom/{pscan}_dicom_checked.json",
    "predict_dicom_nifti": "{r}/predict/{pscan}/dicom/{pscan}_{dmod}.nii.gz",
    "predict_dicom_sidecar": "{r}/predict/{pscan}/dicom/{pscan}_{dmod}.json",
    "predict_validated": "{r}/predict/{pscan}/qc/{pscan}_inputs_validated.tsv",
    "predict_coregistered": "{r}/predict/{pscan}/preproc/{pscan}_space-T1_{pmod}.nii.gz",
    "predict_transform": "{r}/predict/{pscan}/preproc/{pscan}_from-{pmod}_to-T1.mat",
    "predict_coreg_qc": "{r}/predict/{pscan}/qc/{pscan}_from-{pmod}_qc.json",
    "predict_brain_mask": "{r}/predict/{pscan}/preproc/{pscan}_desc-brain_mask.nii.gz",
    "predict_skullstrip_qc": "{r}/predict/{pscan}/qc/{pscan}_desc-brain_qc.json",
    "predict_stack": "{r}/predict/{pscan}/preproc/{pscan}_desc-preproc.npy",
    "predict_stack_json": "{r}/predict/{pscan}/preproc/{pscan}_desc-preproc.json",
    "predict_synth": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1.nii.gz",
    "predict_synth_model": "{r}/predict/{pscan}/{pscan}_model-{model}_space-model_desc-synthetic_ce_t1.nii.gz",
    "predict_sidecar": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1.json",
    "predict_uncertainty": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty.nii.gz",
    "predict_uncertainty_model": "{r}/predict/{pscan}/{pscan}_model-{model}_space-model_desc-uncertainty.nii.gz",
    "predict_uncertainty_sidecar": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty.json",
    "predict_panel": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_panel.png",
    "predict_dicom": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1_dicom",
    "predict_uncertainty_dicom": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty_dicom",
    "predict_viewer": "{r}/predict/{pscan}/viewer.html",
    "log": "{r}/logs/{rule}/{name}.log",
    "benchmark": "{r}/benchmarks/{rule}/{name}.tsv",
}


def path(kind: str, **entities) -> str:
    """The path of one kind of output; entities not given stay as Snakemake wildcards."""
    template = PATHS[kind]
    names = {"r": RESULTS, **entities}
    return template.format_map(_KeepMissing(names))


class _KeepMissing(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def model_settings(config: dict, model: str) -> dict:
    """Training settings of one model: the ``training`` defaults overridden by the model entry."""
    entry = config["models"][model]
    settings = copy.deepcopy(config["training"])
    for key, value in entry.items():
        if key in ("stage1", "stage2"):
            settings[key] = {**settings[key], **value}
        elif key not in TRAINING_KEYS_PER_MODEL:
            settings[key] = value
    settings["target"] = config["reference"]
    settings["preprocessing"] = preprocessing_record(config)
    return settings


# Time limit of a training job (SLURM runtime): an hour for start-up, validation and checkpoints, plus every
# step at TRAINING_STEP_SECONDS, about 4x the 77 ms a paper-size hrfcn3d step is estimated to take on one
# GPU (BENCHMARKS.md, "input" section): room for data loading and a slower GPU. The paper's 40 epochs of
# 2000 steps get 460 minutes.
TRAINING_SETUP_MINUTES, TRAINING_STEP_SECONDS = 60, 0.3


def training_minutes(settings: dict, stage: str) -> int:
    """The time limit (minutes) of one training stage of a model with these merged settings."""
    steps = int(settings[stage]["epochs"]) * int(settings["steps_per_epoch"])
    return TRAINING_SETUP_MINUTES + math.ceil(steps * TRAINING_STEP_SECONDS / 60)


def inference_settings(config: dict, model: str) -> dict:
    """The fields of :class:`cesynth.inference.InferenceSettings` for ``model``: the ``inference`` section and the
    model's own device and amp."""
    settings = model_settings(config, model)
    return {**config["inference"], "device": settings["device"], "amp": settings["amp"]}


def preprocessing_record(config: dict) -> dict:
    """The configuration that shaped the model-space stacks, stored with the weights (model grid shape,
    equalization, enhancement delta, modalities, reference, skull-strip and registration settings).
    Per-scan sample-sheet overrides (skullstrip/registration columns) are not part of it."""
    return {"modalities": list(config["modalities"]), "reference": config["reference"],
            **{section: copy.deepcopy(config[section]) for section in ("preprocess", "skullstrip", "registration")}}


def record_differences(trained: dict | None, current: dict) -> list[str]:
    """Dotted keys where two :func:`preprocessing_record` values differ, with both values."""
    def flat(record, prefix=""):
        out = {}
        for key, value in (record or {}).items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    a, b = flat(trained), flat(current)
    return [f"{key}: {a.get(key, '(not set)')!r} in the weights, {b.get(key, '(not set)')!r} here"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def model_inputs(config: dict, model: str) -> list[str]:
    """A model's input sequences: its ``inputs``, else the first ``inputs_first`` of ``modalities``, else all
    of them (so that changing ``modalities`` switches every model that does not name its own)."""
    entry = config["models"][model]
    if "inputs" in entry:
        return list(entry["inputs"])
    return list(config["modalities"])[: entry.get("inputs_first")]


def model_spec(config: dict, model: str) -> dict:
    """What builds the network: architecture, inputs, width and output (direct or residual on the T1)."""
    entry, training = config["models"][model], config["training"]
    return {"architecture": entry["architecture"], "inputs": model_inputs(config, model),
            "width": entry.get("width", training["width"]),
            "output": entry.get("output", training["output"])}


def study_models(config: dict, study: str) -> list[str]:
    """The models a study compares: the no-model baseline first, then the configured ones."""
    return [IDENTITY, *config["studies"][study]]


def model_labels(config: dict, models) -> dict:
    """Axis labels of a study's models: the local-loss ratio r = lambda3/lambda1 of stage 2 (paper Fig. 7)
    when the trained models differ only in their stage-2 loss weights, else their names."""
    trained = [m for m in models if m != IDENTITY]
    specs = {m: {**model_spec(config, m), "stage2": {**model_settings(config, m)["stage2"], "lambdas": None}}
             for m in trained}
    ratios = {m: model_settings(config, m)["stage2"]["lambdas"] for m in trained}
    if len(trained) < 2 or any(spec != specs[trained[0]] for spec in specs.values()):
        return {m: m for m in models}
    return {m: f"r = {ratios[m][2] / ratios[m][0]:g}" if m in ratios else m for m in models}


def stage1_owner(config: dict, model: str) -> str:
    """The model whose stage-1 weights ``model`` fine-tunes in stage 2 (itself unless shared)."""
    return config["models"][model].get("stage1_from", model)


def check_config(config: dict) -> list[str]:
    """Cross-field problems that a JSON schema cannot express."""
    problems = []
    modalities = set(config["modalities"])
    if IDENTITY in config["models"]:
        problems.append(f"model name {IDENTITY!r} is reserved for the no-model baseline (the T1 as prediction)")
    if "t1" not in modalities:
        problems.append(f"modalities {sorted(modalities)} must include t1 (local loss and the {IDENTITY} baseline)")
    for name, entry in config["models"].items():
        if "inputs" in entry and "inputs_first" in entry:
            problems.append(f"model {name}: give inputs or inputs_first, not both")
        if entry.get("inputs_first", 0) > len(modalities):
            problems.append(f"model {name}: inputs_first {entry['inputs_first']} exceeds the {len(modalities)} "
                            f"modalities {config['modalities']}")
        inputs = model_inputs(config, name)
        unknown = [m for m in inputs if m not in modalities]
        if unknown:
            problems.append(f"model {name}: inputs {unknown} are not among modalities {sorted(modalities)}")
        residual = model_spec(config, name)["output"] == "residual"
        if "t1" not in inputs:
            problems.append(f"model {name}: the local loss needs t1 among the inputs (M = CE-T1 - T1 > delta)")
        elif residual and entry["architecture"] == "hrfcn3d_ref":
            problems.append(f"model {name}: hrfcn3d_ref keeps the reference code's BN + ReLU head; give it "
                            "output: direct")
        elif residual and inputs[0] != "t1":
            problems.append(f"model {name}: output residual adds the network's output to the first input, which "
                            f"must be t1 (inputs {inputs})")
        owner = entry.get("stage1_from")
        if owner is not None:
            if owner not in config["models"]:
                problems.append(f"model {name}: stage1_from {owner!r} is not a model")
            elif model_spec(config, owner) != model_spec(config, name):
                problems.append(f"model {name}: stage1_from {owner!r} must have the same architecture, inputs, "
                                "width and output")
    crossval = config.get("crossval") or {}
    pooled = {m + OOF_SUFFIX for m in crossval.get("models", [])}
    if crossval:
        problems += check_crossval(crossval, config["models"])
    for study, models in config["studies"].items():
        unknown = [m for m in models if m not in config["models"] and m not in pooled]
        if unknown:
            problems.append(f"study {study}: unknown model(s) {unknown}")
    patch, shape = config["training"]["patch"], config["preprocess"]["shape"]
    if patch[0] > shape[2] or patch[1] > shape[1] or patch[2] > shape[0]:
        problems.append(f"training.patch {patch} (slices, Y, X) does not fit preprocess.shape {shape} (X, Y, Z)")
    return problems + cpu_bf16_problems(config)


def cpu_bf16_problems(config: dict) -> list[str]:
    """Models whose ``training.cpu_bf16`` cannot train their patches (:func:`cesynth.device.cpu_bf16_training_problem`)."""
    settings = {name: model_settings(config, name) for name in config["models"]}
    asking = [name for name, s in settings.items() if s["cpu_bf16"] is True]  # "auto" keeps such nets in float32
    if not asking:
        return []
    from .device import cpu_bf16_training_problem  # imports torch: only for a configuration that asks for CPU bf16
    from .models import ARCHITECTURES

    problems = [(name, cpu_bf16_training_problem(ARCHITECTURES[config["models"][name]["architecture"]].slicewise,
                                                 settings[name]["patch"])) for name in asking]
    return [f"model {name}: {problem}" for name, problem in problems if problem]
