"""The study's plans (cesynth/pipeline/plans.py): model inputs follow ``modalities``, settings merge, the cross-field
checks."""

import copy

import yaml
from snakemake.utils import update_config, validate

from cesynth.pipeline import plans
from conftest import REPO

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())


def with_modalities(modalities):
    config = copy.deepcopy(CONFIG)
    config["modalities"] = modalities
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def test_changing_modalities_alone_switches_every_model():
    config = with_modalities(["t1", "t2", "flair"])
    assert plans.check_config(config) == []
    inputs = {name: plans.model_spec(config, name)["inputs"] for name in config["models"]}
    assert inputs.pop("hrfcn3d_t1") == ["t1"] and inputs.pop("hrfcn3d_t1t2") == ["t1", "t2"]
    assert all(v == ["t1", "t2", "flair"] for v in inputs.values()), inputs
    # the default is the configured list itself, not a fixed one
    assert plans.model_spec(with_modalities(["t1", "adc"]), "unet2d")["inputs"] == ["t1", "adc"]


def test_explicit_inputs_still_win_and_conflicts_are_named():
    config = with_modalities(["t1", "t2", "flair"])
    config["models"]["unet2d"]["inputs"] = ["t1", "flair"]
    assert plans.model_spec(config, "unet2d")["inputs"] == ["t1", "flair"]
    config["models"]["hrfcn3d_t1"]["inputs"] = ["t1"]
    config["models"]["hrfcn3d_t1t2"]["inputs_first"] = 4
    problems = plans.check_config(config)
    assert any("hrfcn3d_t1: give inputs or inputs_first" in p for p in problems)
    assert any("hrfcn3d_t1t2: inputs_first 4 exceeds the 3 modalities" in p for p in problems)
    config = with_modalities(["t2", "t1"])
    assert any("hrfcn3d_t1: the local loss needs t1" in p for p in plans.check_config(config))


def test_output_and_training_defaults_reach_every_model_unless_it_overrides_them():
    config = with_modalities(["t1", "t2", "adc"])
    config["training"]["pixel_loss"] = "mse"  # a schema default must not refill each model entry with "mae"
    config["models"]["unet2d"]["output"] = "direct"
    validate(config, str(REPO / "config" / "schema.yaml"))
    assert plans.model_settings(config, "hrfcn3d")["pixel_loss"] == "mse"
    assert plans.model_spec(config, "hrfcn3d")["output"] == "residual"  # config.yaml's demo choice
    assert plans.model_spec(config, "unet2d")["output"] == "direct"
    paper = copy.deepcopy(CONFIG)
    update_config(paper, yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    paper["input"]["source"] = "demo"  # paper.yaml names no cohort (it comes from the user's config)
    validate(paper, str(REPO / "config" / "schema.yaml"))
    assert {plans.model_spec(paper, m)["output"] for m in paper["models"]} == {"direct"}
    assert {plans.model_settings(paper, m)["enhancing_patches"] for m in paper["models"]} == {0.0}


def test_residual_output_needs_t1_first_and_a_head_without_batch_norm():
    config = with_modalities(["t2", "t1", "adc"])
    problems = plans.check_config(config)
    assert any("unet2d: output residual adds the network's output to the first input, which must be t1" in p
               for p in problems)
    config = with_modalities(["t1", "t2", "adc"])
    config["models"]["ref"] = {"architecture": "hrfcn3d_ref"}
    assert any("ref: hrfcn3d_ref keeps the reference code's BN + ReLU head" in p for p in plans.check_config(config))
    config["models"]["ref"]["output"] = "direct"
    assert plans.check_config(config) == []


def test_a_training_job_gets_time_for_its_steps_not_its_epochs():
    paper = copy.deepcopy(CONFIG)
    update_config(paper, yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    settings = plans.model_settings(paper, "hrfcn3d")
    assert (plans.training_minutes(settings, "stage1"), plans.training_minutes(settings, "stage2")) == (460, 160)
    # the same epochs with 20x fewer steps (the demo's 100 per epoch) need far less time
    demo = {**settings, "steps_per_epoch": 100}
    assert plans.training_minutes(demo, "stage1") == 60 + 20


def test_cpu_bf16_training_is_refused_for_3d_nets_on_patch_slices_beyond_its_limit():
    config = copy.deepcopy(CONFIG)
    config["preprocess"]["shape"] = [96, 96, 64]
    config["training"].update(patch=[3, 96, 64], cpu_bf16=True)  # 6,144 voxels per slice: above 64 x 64
    problems = plans.check_config(config)
    three_d = {m for m, e in config["models"].items() if not e["architecture"].endswith("2d")}
    assert {p.split(":")[0] for p in problems} == {f"model {m}" for m in three_d}
    assert all("at most 4096 voxels (Y x X), patch [3, 96, 64] has 6144" in p for p in problems)
    config["training"]["cpu_bf16"] = "auto"  # trains those nets in float32 instead
    assert plans.check_config(config) == []
    config["training"].update(patch=[3, 64, 64], cpu_bf16=True)
    assert plans.check_config(config) == []
