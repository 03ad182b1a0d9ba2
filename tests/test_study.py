"""The study design as data: model inputs follow ``modalities``."""

import copy

import yaml
from snakemake.utils import validate

from cesynth import study as S
from conftest import REPO

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def with_modalities(modalities):
    config = copy.deepcopy(CONFIG)
    config["modalities"] = modalities
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def test_changing_modalities_alone_switches_every_model():
    config = with_modalities(["t1", "t2", "flair"])
    assert S.check_config(config) == []
    inputs = {name: S.model_spec(config, name)["inputs"] for name in config["models"]}
    assert inputs.pop("hrfcn3d_t1") == ["t1"] and inputs.pop("hrfcn3d_t1t2") == ["t1", "t2"]
    assert all(v == ["t1", "t2", "flair"] for v in inputs.values()), inputs
    # the default is the configured list itself, not a fixed one
    assert S.model_spec(with_modalities(["t1", "adc"]), "unet2d")["inputs"] == ["t1", "adc"]


def test_explicit_inputs_still_win_and_conflicts_are_named():
    config = with_modalities(["t1", "t2", "flair"])
    config["models"]["unet2d"]["inputs"] = ["t1", "flair"]
    assert S.model_spec(config, "unet2d")["inputs"] == ["t1", "flair"]
    config["models"]["hrfcn3d_t1"]["inputs"] = ["t1"]
    config["models"]["hrfcn3d_t1t2"]["inputs_first"] = 4
    problems = S.check_config(config)
    assert any("hrfcn3d_t1: give inputs or inputs_first" in p for p in problems)
    assert any("hrfcn3d_t1t2: inputs_first 4 exceeds the 3 modalities" in p for p in problems)
    config = with_modalities(["t2", "t1"])
    assert any("hrfcn3d_t1: the local loss needs t1" in p for p in S.check_config(config))
