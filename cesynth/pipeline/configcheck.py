"""Configuration errors as one line each, before any job runs.

The JSON schema (config/schema.yaml) refuses unknown keys at every level; a typo such as
``training.stage1.epochz`` would otherwise be accepted silently and only change the parameters of
every training job (so all of them rerun). Each problem names the key path and, for a near miss,
the key that was probably meant.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import jsonschema
import yaml

# Site or test override merged after every --configfile (and before --config): see README.
CONFIGFILE_ENV = "CESYNTH_CONFIGFILE"


def load_schema(path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def problems(config: dict, schema: dict) -> list[str]:
    """Every problem of a configuration, one line each ("config: ..."), checked once before any job: the schema's,
    those a schema cannot express (:func:`cesynth.pipeline.plans.check_config`) and the predict section's."""
    from cesynth.pipeline.plans import check_config

    lines = schema_problems(config, schema)
    try:
        semantic = check_config(config) + predict_problems(config)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        if not lines:
            raise
        semantic = []  # a config the schema refuses can lack what these checks read: its schema lines say what
    return lines + [f"config: {line}" for line in semantic]


def drop_switched_off(config: dict, schema: dict) -> None:
    """Remove the sections set to null that the schema allows to be (``crossval: null`` switches cross-validation
    off over a config that has it): the schema's defaults would otherwise be filled into None."""
    for key, section in schema.get("properties", {}).items():
        if config.get(key, {}) is None and "object" in section.get("type", []) and "null" in section.get("type", []):
            del config[key]


def predict_problems(config: dict) -> list[str]:
    """The predict section of a run that predicts (a sample sheet is named): its model and its given weights."""
    from cesynth.evaluate.modelcard import card_path

    predict = config.get("predict") or {}
    if not predict.get("samplesheet"):
        return []
    model, weights, out = predict["model"], predict.get("weights"), []
    if model not in config["models"]:
        out.append(f"predict.model {model!r} is not a model ({did_you_mean(model, config['models'], 'models')})")
    if weights and not card_path(weights).is_file():
        out.append(f"predict.weights {weights} has no model card beside it ({card_path(weights)}); copy it with the "
                   "weights from where they were trained")
    return out


def schema_problems(config: dict, schema: dict) -> list[str]:
    """One line per schema violation, unknown keys with a "did you mean" suggestion."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(config):
        where = ".".join(map(str, error.absolute_path))
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            known = _known_keys(error.schema, schema)
            for key in sorted(set(error.instance) - known):
                problems.append(unknown_key_line(f"{where}.{key}" if where else key, key, known))
        elif where == f"input.{SAMPLESHEET}" and error.instance is None:
            problems.append(NO_COHORT_LINE)
        else:
            problems.append(f"config: {where or '(top level)'}: {error.message}")
    return sorted(set(problems))


SAMPLESHEET = "samplesheet"
# config/paper.yaml and config/cohort.yaml name no cohort on purpose: without one they stop here instead of
# training at full size on the phantom.
NO_COHORT_LINE = ("config: input.samplesheet is not set: name your cohort's sample sheet (docs/inputs.md), e.g. "
                  "--config input=\"{source: samplesheet, samplesheet: cohort.tsv}\" or in your copy of "
                  "config/cohort.yaml; input.source: demo runs the phantom")


# Keys of earlier releases, by their new name: an old config says what to write instead.
RENAMED_KEYS = {"split.val_fraction": "split.test_fraction"}


def unknown_key_line(path: str, key: str, known) -> str:
    if path in RENAMED_KEYS:
        return f"config: {path!r} is now {RENAMED_KEYS[path]!r} (same meaning); rename it in your config"
    return f"config: unknown key {path!r} ({did_you_mean(key, known, 'keys here')})"


def did_you_mean(name: str, known, what: str) -> str:
    """The nearest known name, else the whole list."""
    close = closest(name, known)
    return f"did you mean {close!r}?" if close else f"known {what}: {', '.join(sorted(known))}"


def closest(name: str, known) -> str | None:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _known_keys(schema: dict, root: dict) -> set[str]:
    """Property names a (sub)schema allows, following allOf and local $refs."""
    if "$ref" in schema:
        schema = _resolve(schema["$ref"], root)
    keys = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        keys |= _known_keys(part, root)
    return keys


def _resolve(ref: str, root: dict) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def targets_line(config: dict, others) -> str:
    """What a user can ask for: the studies (with their models) and the other target rules."""
    studies = "; ".join(f"{s} ({', '.join(m)})" for s, m in config["studies"].items())
    return f"studies: {studies}. models: {', '.join(config['models'])}. other targets: {', '.join(others)}"


def unknown_target_line(target: str, config: dict, others) -> str:
    if target in config["models"]:
        studies = [s for s, models in config["studies"].items() if target in models]
        return (f"{target!r} is a model, not a target: build a study that compares it "
                f"({', '.join(studies) or 'none lists it yet: add one under studies:'}). "
                + targets_line(config, others))
    close = closest(target, [*config["studies"], *config["models"], *others])
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown target {target!r}{hint}. " + targets_line(config, others)


def load_override(path) -> dict:
    """The file named by CESYNTH_CONFIGFILE; a missing or malformed one stops with one line."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"{CONFIGFILE_ENV}={path}: {e}".splitlines()[0])
    if not isinstance(data, dict):
        raise SystemExit(f"{CONFIGFILE_ENV}={path}: not a YAML mapping of config keys")
    return data


def command_line(argv) -> tuple[list[str], str | None]:
    """Targets and executor of the snakemake command line (its own parser, profiles included);
    ([], None) when this process is not the snakemake command (e.g. the API): nothing is refused
    by mistake."""
    if not argv or not argv[0].endswith(("snakemake", "snakemake/__main__.py")):
        return [], None
    from snakemake.cli import parse_args

    try:
        args = parse_args(argv[1:])[1]
    except (Exception, SystemExit):
        return [], None
    return list(args.targets or []), args.executor


def predict_only(targets, config: dict, predict_dir: str) -> bool:
    """The command asks only for predictions (the target ``predict`` or files under ``predict_dir``, as a cluster
    job of predict does) with weights given: then the training cohort is not needed, e.g. a shipped model's
    config on a machine without its training images."""
    return bool(targets and (config.get("predict") or {}).get("weights")) and all(
        t == "predict" or str(t).startswith(predict_dir) for t in targets)


def on_cluster(executor: str | None) -> bool:
    """Jobs go to a cluster (submitting process) or this is a cluster job (slurm-jobstep)."""
    return executor not in (None, "local", "dryrun", "touch")


def unknown_targets(targets, rule_names) -> list[str]:
    """Requested names that are neither a rule nor a file path (a mistyped study or a model name)."""
    return [t for t in targets if t not in rule_names and "/" not in t]
