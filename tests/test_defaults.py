"""Every default in one place: a key config.yaml sets gets no other value from the schema's defaults or from a
settings class (issue #33). A key config.yaml leaves out may default in one of them, by design."""

import copy
import dataclasses
from pathlib import Path

import yaml

from cesynth.infer.inference import InferenceSettings
from cesynth.preprocess.registration import RegistrationSettings
from cesynth.preprocess.skullstrip import SkullStripSettings
from cesynth.train.training import TrainingSettings

ROOT = Path(__file__).resolve().parents[1]
# config section -> the frozen settings class read from it
SETTINGS_CLASSES = {"training": TrainingSettings, "inference": InferenceSettings,
                    "registration": RegistrationSettings, "skullstrip": SkullStripSettings}


def plain(value):
    """Tuples as lists, so that a default (3, 32, 32) and a YAML [3, 32, 32] compare equal."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def schema_defaults(node: dict, path=()):
    """(config path, default) of every ``default`` under the schema's ``properties``."""
    for key, child in (node.get("properties") or {}).items():
        if not isinstance(child, dict):
            continue
        if "default" in child:
            yield (*path, key), child["default"]
        yield from schema_defaults(child, (*path, key))


def class_defaults(cls) -> dict:
    out = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
    return out


def lookup(config: dict, path):
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return dataclasses.MISSING
        config = config[key]
    return config


def conflicts(config: dict, schema: dict, classes: dict) -> list[str]:
    """One line per default that disagrees with the value config.yaml sets for the same key."""
    found = [("schema", path, default) for path, default in schema_defaults(schema)]
    found += [(cls.__name__, (section, name), default) for section, cls in classes.items()
              for name, default in class_defaults(cls).items()]
    lines = []
    for where, path, default in found:
        value = lookup(config, path)
        if value is not dataclasses.MISSING and plain(value) != plain(default):
            lines.append(f"{'.'.join(path)}: config.yaml {value!r}, {where} default {default!r}")
    return lines


def load():
    return (yaml.safe_load((ROOT / "config.yaml").read_text()),
            yaml.safe_load((ROOT / "config" / "schema.yaml").read_text()))


def test_no_default_disagrees_with_config_yaml():
    config, schema = load()
    assert conflicts(config, schema, SETTINGS_CLASSES) == []


def test_a_planted_second_default_is_found():
    config, schema = load()
    planted = copy.deepcopy(schema)
    planted["properties"]["inference"]["properties"]["stride"]["default"] = config["inference"]["stride"] + 1
    assert conflicts(config, planted, SETTINGS_CLASSES) == [
        f"inference.stride: config.yaml {config['inference']['stride']}, schema default "
        f"{config['inference']['stride'] + 1}"]
    second = dataclasses.make_dataclass("Second", [("batch_size", int, dataclasses.field(default=99))])
    assert conflicts(config, schema, {**SETTINGS_CLASSES, "training": second}) == [
        f"training.batch_size: config.yaml {config['training']['batch_size']}, Second default 99"]
    # the same value in two places is no conflict, and a key config.yaml leaves out may default in one of them
    same = dataclasses.make_dataclass("Same", [("batch_size", int, dataclasses.field(default=config["training"][
        "batch_size"])), ("not_in_config_yaml", int, dataclasses.field(default=1))])
    assert conflicts(config, schema, {"training": same}) == []
