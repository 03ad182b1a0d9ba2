"""snakemake predict on a real TCGA case (T1, T2, FLAIR; its CE-T1 withheld) with a model trained on the demo."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import REPO, TCGA
from test_workflow import snakemake

pytestmark = pytest.mark.skipif(not (TCGA / "t1.nii.gz").is_file(), reason="TCGA case not available")


def predict_config(tmp_path):
    """Tiny config with FLAIR instead of ADC (modalities alone switch every model), a 2-patient demo to train
    on, and the predict sheet."""
    sheet = tmp_path / "predict.tsv"
    sheet.write_text("patient\tscan\tt1\tt2\tflair\n"
                     f"TCGA-FG-6692\tFG6692\t{TCGA / 't1.nii.gz'}\t{TCGA / 't2.nii.gz'}\t{TCGA / 'flair.nii.gz'}\n")
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump({
        "modalities": ["t1", "t2", "flair"],
        "demo": {"patients": 2, "followups": 0, "expert_masks": 0},
        "predict": {"samplesheet": str(sheet), "model": "hrfcn3d"},
    }))
    return config


def test_predict_without_contrast_on_a_real_case(tmp_path):
    work = tmp_path / "work"
    snakemake(work, "--configfile", str(REPO / "config" / "tiny.yaml"), str(predict_config(tmp_path)),
              "--cores", "2", "predict")
    out = work / "results" / "predict" / "FG6692"
    native_t1 = nib.load(TCGA / "t1.nii.gz")
    synth = nib.load(out / "FG6692_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz")
    assert synth.shape == native_t1.shape and np.allclose(synth.affine, native_t1.affine, atol=1e-4)
    assert synth.header["descrip"].tobytes().startswith(b"SYNTHETIC CE-T1")
    data = synth.get_fdata()
    brain = nib.load(out / "preproc" / "FG6692_desc-brain_mask.nii.gz").get_fdata() > 0
    assert np.isfinite(data).all() and data.min() >= 0 and data.max() <= 1
    assert data[brain].mean() > 0.05 and (data[~brain] == 0).mean() > 0.9  # signal in the head, none outside

    model_space = nib.load(out / "FG6692_model-hrfcn3d_space-model_desc-synthetic_ce_t1.nii.gz")
    assert model_space.shape == (32, 32, 32)

    sidecar = json.loads((out / "FG6692_model-hrfcn3d_desc-synthetic_ce_t1.json").read_text())
    weights = work / "results" / "models" / "hrfcn3d" / "stage2" / "weights.pt"
    assert sidecar["synthetic"] is True and "not acquired" in sidecar["warning"]
    assert sidecar["model"] == "hrfcn3d" and sidecar["model_spec"]["inputs"] == ["t1", "t2", "flair"]
    assert sidecar["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert sidecar["inputs"]["t1"] == str(TCGA / "t1.nii.gz") and "ce_t1" not in sidecar["inputs"]
    assert sidecar["config"]["preprocess"]["shape"] == [32, 32, 32] and len(sidecar["config_sha256"]) == 64

    # the uncertainty map beside the synthesis: same native grid, zero where the synthesis is, inside the brain
    # positive, its sidecar naming the method and the synthesis it belongs to
    spread = nib.load(out / "FG6692_model-hrfcn3d_desc-uncertainty.nii.gz")
    assert spread.shape == native_t1.shape and np.allclose(spread.affine, native_t1.affine, atol=1e-4)
    assert spread.header["descrip"].tobytes().startswith(b"UNCERTAINTY of a SYNTHETIC CE-T1 (cesynth combined)")
    values = spread.get_fdata()
    assert np.isfinite(values).all() and values.min() >= 0 and (values[data == 0] == 0).mean() > 0.99
    assert (values[brain & (data > 0)] > 0).mean() > 0.9 and values.max() < 0.5
    assert nib.load(out / "FG6692_model-hrfcn3d_space-model_desc-uncertainty.nii.gz").shape == (32, 32, 32)
    spread_sidecar = json.loads((out / "FG6692_model-hrfcn3d_desc-uncertainty.json").read_text())
    assert spread_sidecar["method"] == "combined" and spread_sidecar["uncertainty"]["views"] == ["flip_x", "z1", "z2", "yx2"]
    assert spread_sidecar["synthesis"].endswith("FG6692_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz")
    assert spread_sidecar["weights_sha256"] == sidecar["weights_sha256"] and "standard deviation" in spread_sidecar["what"]
    assert sidecar["uncertainty"] == {"method": "combined", "file": spread_sidecar["synthesis"].replace(
        "desc-synthetic_ce_t1", "desc-uncertainty")}

    png = out / "FG6692_model-hrfcn3d_desc-synthetic_panel.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    stack = json.loads((out / "preproc" / "FG6692_desc-preproc.json").read_text())
    assert stack["channels"] == ["t1", "t2", "flair", "brain_mask"]  # t1 once, no enhancement mask

    # weights brought from elsewhere, trained on [32, 32, 32] stacks, are refused by a run that preprocesses to
    # another shape, naming the key; nothing is written
    site_weights = tmp_path / "site" / "weights.pt"
    site_weights.parent.mkdir()
    shutil.copyfile(weights, site_weights)
    alone = tmp_path / "alone.yaml"  # weights without their model card are refused when the DAG is built
    alone.write_text(yaml.safe_dump({"predict": {"weights": str(site_weights)}}))
    result = snakemake(work, "--configfile", str(REPO / "config" / "tiny.yaml"), str(predict_config(tmp_path)),
                       str(alone), "--cores", "2", "predict", check=False)
    assert result.returncode != 0 and f"predict.weights {site_weights} has no model card beside it" in result.stderr
    shutil.copyfile(weights.with_name("model_card.json"), site_weights.with_name("model_card.json"))
    assert sidecar["model_card"]["weights_sha256"] == sidecar["weights_sha256"]
    other = tmp_path / "other_shape.yaml"
    other.write_text(yaml.safe_dump({"preprocess": {"shape": [32, 32, 40]}, "predict": {"weights": str(site_weights)}}))
    result = snakemake(work, "--configfile", str(REPO / "config" / "tiny.yaml"), str(predict_config(tmp_path)),
                       str(other), "--cores", "2", "predict", check=False)
    log = (work / "results" / "logs" / "predict_synthesize" / "FG6692.log").read_text()
    assert result.returncode != 0 and "trained with another preprocessing than this run's config" in log
    assert "preprocess.shape: [32, 32, 32] in the weights, [32, 32, 40] here" in log
    assert not (out / "FG6692_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz").exists()


def test_predict_target_without_a_sheet_says_what_to_configure(tmp_path):
    result = snakemake(tmp_path, "-n", "predict", check=False)
    assert result.returncode != 0 and "set predict.samplesheet" in result.stdout + result.stderr
