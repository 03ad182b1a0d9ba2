"""config/schema.yaml as the one list of keys and the mirror of the Python registries.

Two ways the schema drifts silently: an object that accepts any key (a typo in it is taken and does nothing)
and an enum copied by hand from a registry (a new architecture is refused by the schema, or the schema offers a
back-end the code does not have). Both are caught here, by walking the schema itself.
"""

import copy

import yaml

from cesynth.evaluate import metrics
from cesynth.infer import inference, predict, uncertainty
from cesynth.inputs import cohort, validate
from cesynth.nets import device, models
from cesynth.pipeline import configcheck
from cesynth.preprocess import preprocessing, registration, skullstrip
from cesynth.train import losses, training
from conftest import REPO

SCHEMA = configcheck.load_schema(REPO / "config" / "schema.yaml")

# Applicators that constrain the same instance as their parent: they share its strictness. (if/then/else only
# refine keys their parent declares, e.g. input.samplesheet required for source samplesheet: not walked.)
IN_PLACE = ("allOf", "anyOf", "oneOf")


def _resolve(ref: str, root: dict) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _is_object(node: dict) -> bool:
    types = node.get("type", [])
    return "object" in ([types] if isinstance(types, str) else types) or "properties" in node


def _closes(node: dict) -> bool:
    """False, or a schema for the values of keys not listed (a mapping of user-chosen names), closes an object."""
    return any(node.get(key, True) not in (True, {}) for key in ("additionalProperties", "unevaluatedProperties"))


def open_objects(root: dict) -> list[str]:
    """Paths of the object schemas of ``root`` that accept keys they do not declare. Definitions count where
    they are used ($ref)."""
    return _open_objects(root, root, "(top level)", False)


def _open_objects(root, node, path, closed=False) -> list[str]:
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        node = {**_resolve(node["$ref"], root), **{k: v for k, v in node.items() if k != "$ref"}}
    closed = closed or _closes(node)
    found = [path] if _is_object(node) and not closed else []
    for key in IN_PLACE:
        for part in node.get(key, []) if isinstance(node.get(key), list) else [node.get(key)]:
            found += _open_objects(root, part, path, closed)
    for name, sub in node.get("properties", {}).items():
        found += _open_objects(root, sub, name if path == "(top level)" else f"{path}.{name}")
    for key, suffix in (("additionalProperties", ".*"), ("items", "[]")):
        found += _open_objects(root, node.get(key), path + suffix)
    return found


def enums(node, path=()) -> dict[str, list]:
    """Every enum of the schema by its key path ('properties' left out, '*' for a map's values, [] for items)."""
    found = {}
    if isinstance(node, dict):
        if "enum" in node:
            found[".".join(path)] = node["enum"]
        for key, sub in node.items():
            step = {"properties": (), "additionalProperties": ("*",), "items": ("[]",)}.get(key, (key,))
            found.update(enums(sub, path + step) if isinstance(sub, (dict, list)) else {})
    elif isinstance(node, list):
        for sub in node:
            found.update(enums(sub, path))
    return {k.replace(".[]", "[]"): v for k, v in found.items()}


# Where each enum's choices live in Python: a new choice is added to the registry and to the schema together.
REGISTRIES = {
    "definitions.training.trainer": training.TRAINERS,
    "definitions.training.device": device.DEVICES,
    "definitions.training.cpu_bf16": device.CPU_BF16_SETTINGS,
    "definitions.training.ssim": losses.SSIM_KINDS,
    "definitions.training.local_norm": losses.LOCAL_NORMS,
    "definitions.training.pixel_loss": losses.PIXEL_LOSSES,
    "definitions.training.local_mask": training.LOCAL_MASKS,
    "definitions.training.output": models.OUTPUTS,
    "input.source": cohort.SOURCES,
    "registration.transform": registration.TRANSFORMS,
    "registration.backend": registration.BACKENDS,
    "skullstrip.backend": ("auto", *skullstrip.BACKENDS),  # auto: fsl where installed, else python
    "preprocess.equalization": preprocessing.EQUALIZATION_METHODS,
    "split.validation": cohort.VALIDATION,
    "inference.tiling": inference.TILINGS,
    "inference.cpu_bf16": device.CPU_BF16_SETTINGS,
    "uncertainty.method": uncertainty.METHODS,
    "inference.views[]": inference.VIEWS,
    "uncertainty.views[]": inference.VIEWS,
    "models.*.architecture": models.ARCHITECTURES,
    "evaluation.protocol": metrics.PROTOCOLS,
    "predict.dicom_output": predict.DICOM_OUTPUT,
}


def test_no_schema_object_accepts_unknown_keys():
    assert open_objects(SCHEMA) == []


def test_the_walk_finds_a_loosened_section():
    loose = copy.deepcopy(SCHEMA)
    del loose["properties"]["qc"]["additionalProperties"]
    del loose["definitions"]["stage"]["additionalProperties"]
    assert open_objects(loose) == ["training.stage1", "training.stage2", "models.*.stage1", "models.*.stage2", "qc"]


def test_every_enum_matches_its_registry():
    found = enums(SCHEMA)
    assert sorted(found) == sorted(REGISTRIES), "an enum without a registry here, or a registry without an enum"
    mismatched = {path: (sorted(choices, key=repr), sorted(REGISTRIES[path], key=repr))
                  for path, choices in found.items() if sorted(choices, key=repr) != sorted(REGISTRIES[path], key=repr)}
    assert mismatched == {}, "schema enum vs Python registry"


def test_scan_options_offer_the_backends_of_their_modules():
    assert validate.SCAN_OPTIONS == {"skullstrip": ("backend", ("auto", *skullstrip.BACKENDS)),
                                     "registration": ("transform", registration.TRANSFORMS)}


def _mappings(config, path=()):
    """Key paths of every mapping in a config whose keys the schema declares (not model or study names)."""
    if isinstance(config, dict) and path not in (("models",), ("studies",)):
        yield path
    if isinstance(config, dict):
        for key, value in config.items():
            yield from _mappings(value, (*path, key))


def test_a_typo_is_refused_in_every_section_of_the_shipped_configs():
    for name in ("config.yaml", "config/paper.yaml"):
        base = yaml.safe_load((REPO / "config.yaml").read_text())
        if name != "config.yaml":
            base = {**base, **yaml.safe_load((REPO / name).read_text())}
        for path in _mappings(base):
            config = copy.deepcopy(base)
            node = config
            for key in path:
                node = node[key]
            node["zz_typo"] = 1
            where = ".".join((*path, "zz_typo"))
            assert [line for line in configcheck.schema_problems(config, SCHEMA)
                    if line.startswith(f"config: unknown key {where!r}")], where


def test_a_renamed_key_says_its_new_name():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["split"]["val_fraction"] = config["split"].pop("test_fraction")
    assert configcheck.schema_problems(config, SCHEMA) == [
        "config: 'split.val_fraction' is now 'split.test_fraction' (same meaning); rename it in your config",
        "config: split: 'test_fraction' is a required property"]


def test_only_sections_the_schema_lets_be_null_are_switched_off():
    config = {"crossval": None, "predict": None, "training": {"width": 0.125}}
    configcheck.drop_switched_off(config, SCHEMA)
    assert config == {"predict": None, "training": {"width": 0.125}}  # predict may not be null: the schema says so
    assert any(line.startswith("config: predict") for line in configcheck.schema_problems(config, SCHEMA))
