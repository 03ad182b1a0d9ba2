"""The study's plans: what the configuration means for each model (its inputs, its merged training and inference
settings, the network it builds) and for each study, and the checks a JSON schema cannot express.

Snakemake's rules ask this module what each model needs; where its files live is :mod:`cesynth.pipeline.layout`.
"""

from __future__ import annotations

import copy
import math

from cesynth.pipeline.crossval import OOF_SUFFIX, check as check_crossval

TRAINING_KEYS_PER_MODEL = ("architecture", "inputs", "inputs_first", "stage1_from")
# The no-model baseline of every study: the preprocessed T1 itself as the synthetic CE-T1.
IDENTITY = "identity"

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
    """The fields of :class:`cesynth.infer.inference.InferenceSettings` for ``model``: the ``inference`` section and the
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
    """Models whose ``training.cpu_bf16`` cannot train their patches
    (:func:`cesynth.nets.device.cpu_bf16_training_problem`)."""
    settings = {name: model_settings(config, name) for name in config["models"]}
    asking = [name for name, s in settings.items() if s["cpu_bf16"] is True]  # "auto" keeps such nets in float32
    if not asking:
        return []
    # imports torch: only for a configuration that asks for CPU bf16
    from cesynth.nets.device import cpu_bf16_training_problem
    from cesynth.nets.models import ARCHITECTURES

    problems = [(name, cpu_bf16_training_problem(ARCHITECTURES[config["models"][name]["architecture"]].slicewise,
                                                 settings[name]["patch"])) for name in asking]
    return [f"model {name}: {problem}" for name, problem in problems if problem]
