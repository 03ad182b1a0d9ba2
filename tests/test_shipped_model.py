"""The model that ships (models/real/hrfcn3d, docs/real.md): `snakemake predict` with config/real.yaml applies it to
a BraTS-form real patient, as docs/predict.md prints the command, without training anything.

The patient is one of ../shared/data, so the shipped model has seen it (it trained on every usable patient): this
test checks the user's path and the output's content, not accuracy; docs/real.md gives the out-of-fold numbers."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from conftest import REPO, SHARED
from docs_commands import fresh_clone, run_command, user_env

PATIENT = SHARED / "data" / "brats2021" / "BraTS2021_00006"
SHIPPED = REPO / "models" / "real" / "hrfcn3d"
pytestmark = pytest.mark.skipif(not PATIENT.is_dir(), reason="real cases of ../shared/data not available")


def test_shipped_weights_load_safely_and_match_their_card():
    payload = torch.load(SHIPPED / "weights.pt", weights_only=True)
    card = json.loads((SHIPPED / "model_card.json").read_text())
    assert card["model"] == "hrfcn3d" and payload["model_spec"]["architecture"] == "hrfcn3d"
    assert card["training"]["cohort"]["patients"] >= 22
    assert "out of fold" in card["evaluation"]
    assert any("ADC" in line for line in card["limitations"])
    # its out-of-fold numbers were made as predict with its config makes a synthesis
    inference = yaml.safe_load((REPO / "config" / "real.yaml").read_text())["inference"]
    assert {k: card["inference"][k] for k in ("stride", "views")} == {k: inference[k] for k in ("stride", "views")}


def test_predict_applies_the_shipped_model_without_training(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    name = PATIENT.name
    sheet = clone / "new_patients.tsv"
    sheet.write_text("patient\tscan\tt1\tt2\tflair\tskullstrip\tregistration\n"
                     f"P1\tP1_1\t{PATIENT}/{name}_t1.nii.gz\t{PATIENT}/{name}_t2.nii.gz\t"
                     f"{PATIENT}/{name}_flair.nii.gz\tnone\tnone\n")
    (clone / "my_predict.yaml").write_text("predict:\n  samplesheet: new_patients.tsv\n")
    result = run_command("snakemake predict --cores all --configfile config/real.yaml my_predict.yaml", clone,
                         user_env(clone), timeout=900)
    assert result.returncode == 0, result.out[-4000:]
    assert "rule train_stage" not in result.out and "rule preprocess:" not in result.out, result.out[-4000:]

    out = clone / "results" / "real" / "predict" / "P1_1"  # config/real.yaml: results/real
    synthesis = nib.load(out / "P1_1_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz")
    t1 = nib.load(PATIENT / f"{name}_t1.nii.gz")
    assert synthesis.shape == t1.shape and np.allclose(synthesis.affine, t1.affine, atol=1e-3)
    data, brain = np.asarray(synthesis.dataobj, dtype=np.float32), np.asarray(t1.dataobj) > 0
    # nothing outside the brain, beyond the linear spill of the 2.5 mm model grid's edge voxels onto the 1 mm grid
    # (up to two model voxels: measured 150,000 voxels within 1 mm of the brain, none beyond 8 mm)
    near_brain = ndimage.binary_dilation(brain, iterations=8)
    assert np.isfinite(data).all() and data[brain].std() > 0 and np.abs(data[~near_brain]).max() == 0
    # the enhancing tumour (label 4) comes out brighter than the rest of the brain, as in the real CE-T1
    enhancing = np.asarray(nib.load(PATIENT / f"{name}_seg.nii.gz").dataobj) == 4
    assert data[enhancing].mean() > data[brain & ~enhancing].mean()
    spread = np.asarray(nib.load(out / "P1_1_model-hrfcn3d_desc-uncertainty.nii.gz").dataobj)
    assert spread.shape == t1.shape and np.isfinite(spread).all() and spread[brain].max() > 0
    assert (out / "P1_1_model-hrfcn3d_desc-synthetic_panel.png").stat().st_size > 10_000
    provenance = json.loads((out / "P1_1_model-hrfcn3d_desc-synthetic_ce_t1.json").read_text())
    assert provenance["weights"].endswith("models/real/hrfcn3d/weights.pt")
    print(f"predict with the shipped model: {result.seconds:.0f} s")
