"""config/real.yaml at reduced size: the cross-validated study end to end on four of its real patients (the raw TCGA
case registered and skull-stripped, BraTS-form cases kept as they are, BraTS 2018 patients with expert labels scored
in the brain, the tumour and the enhancing tumour under both protocols), two folds, the learning curve and the
model that ships."""

import json
import os
import re
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, SHARED
from test_workflow import SNAKEMAKE

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not (DATA / "brats2018" / "Brats18_TCIA01_378_1").is_dir(),
                                reason="real cases of ../shared/data not available")
FOLDS = {"TCGA-FG-6692": 1, "Brats18_TCIA01_201_1": 1, "TCGA-DU-7294": 2, "Brats18_TCIA01_378_1": 2}
LABELLED = {"Brats18_TCIA01_201_1", "Brats18_TCIA01_378_1"}
SMALL = {
    "preprocess": {"shape": [48, 48, 32]},
    # coarser registration and BET of the raw case: the test checks that they run, docs/real.md how well
    "registration": {"iterations": [100, 50, 20, 0], "finest_mm": 4.0},
    "skullstrip": {"iso_mm": 3.0, "iterations": 300},
    "training": {"device": "cpu", "width": 0.0625, "batch_size": 2, "patch": [3, 32, 32], "steps_per_epoch": 3,
                 "stage1": {"epochs": 1}, "stage2": {"epochs": 1}},
    "crossval": {"learning_curve": {"model": "hrfcn3d", "folds": [1], "n_train": [1]}},
}


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def subset(tmp_path) -> dict:
    """config/real.yaml's sample sheet cut down to FOLDS, with a folds table of its own (paths made absolute: the
    test runs elsewhere)."""
    sheet = pd.read_csv(REPO / "config" / "real" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet[sheet.scan.isin(FOLDS)]
    for column in ("t1", "t2", "flair", "ce_t1", "tumour_mask"):
        sheet[column] = [str((REPO / "config" / "real" / p).resolve()) if p else "" for p in sheet[column]]
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    pd.DataFrame({"scan": list(FOLDS), "fold": list(FOLDS.values())}).to_csv(tmp_path / "folds.tsv", sep="\t",
                                                                             index=False)
    return {"input": {"samplesheet": str(tmp_path / "samples.tsv")},
            "crossval": {**SMALL["crossval"], "folds": str(tmp_path / "folds.tsv")}}


def training_inputs(dry_run: str) -> dict:
    """model -> the stacks its stage-1 job reads, from a dry run's job listing."""
    jobs = {}
    for block in re.split(r"\n(?=\[)", dry_run):  # a job's lines follow its "[date]" line
        if re.search(r"^\S*rule train_stage1:", block, re.M):
            model = re.search(r"wildcards: model=([^,\s]+)", block).group(1)
            jobs[model] = set(re.findall(r"preproc/([^/]+)/[^/,\s]+_desc-preproc\.npy", block))
    return jobs


def test_real_study_cross_validates_mixed_raw_and_preprocessed_scans(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**SMALL, **subset(tmp_path)}))
    work = tmp_path / "work"
    cmd = [*SNAKEMAKE, "crossval", "learning_curve", "ship", "--directory", str(work), "--cores", "2",
           "--configfile", str(REPO / "config" / "real.yaml"), str(small)]
    dry = subprocess.run([*cmd, "-n", "--forceall"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    trained = training_inputs(dry.stdout)
    for fold in (1, 2):  # a fold model never reads its own fold's scans; the shipped model reads every scan
        for model in ("hrfcn3d", "unet2d"):
            assert trained[f"{model}_fold{fold}"] == {s for s, f in FOLDS.items() if f != fold}
    assert trained["hrfcn3d"] == set(FOLDS) and "unet2d" not in trained  # ship: hrfcn3d alone
    assert trained["hrfcn3d_fold1_n1"] < trained["hrfcn3d_fold1"] and len(trained["hrfcn3d_fold1_n1"]) == 1
    study_only = subprocess.run([c for c in cmd if c not in ("learning_curve", "ship")] + ["-n", "--forceall"],
                                capture_output=True, text=True)
    assert study_only.returncode == 0, study_only.stderr[-3000:]
    assert set(training_inputs(study_only.stdout)) == {f"{m}_fold{f}" for m in ("hrfcn3d", "unet2d") for f in (1, 2)}

    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    results = work / "results" / "real"  # config/real.yaml: results/real

    split = pd.read_csv(results / "split.tsv", sep="\t").set_index("scan")
    assert split.fold.to_dict() == FOLDS
    assert split.set.to_dict() == {s: "B" if s in LABELLED else "test_A" for s in FOLDS}
    models = results / "models"
    for scan, fold in FOLDS.items():  # each scan's pooled synthesis is the one of the fold model that left it out
        for model in ("hrfcn3d", "unet2d"):
            name = f"{scan}_desc-synth_ce_t1.nii.gz"
            assert (models / f"{model}_oof" / "synth" / name).read_bytes() == \
                (models / f"{model}_fold{fold}" / "synth" / name).read_bytes()
            assert not (models / f"{model}_fold{3 - fold}" / "synth" / name).exists()

    preproc = results / "preproc"
    for scan, t1c in (("TCGA-DU-7294", DATA / "tcga-du-7294" / "t1c.nii.gz"),
                      ("Brats18_TCIA01_378_1", DATA / "brats2018" / "Brats18_TCIA01_378_1" /
                       "Brats18_TCIA01_378_1_t1ce.nii.gz")):
        mask = nib.load(preproc / scan / f"{scan}_desc-brain_mask.nii.gz").get_fdata() > 0
        assert dice(mask, nib.load(t1c).get_fdata() != 0) >= 0.99
        assert json.loads((preproc / scan / f"{scan}_desc-brain_qc.json").read_text())["backend"] == "none"
        for mod in ("t1", "t2", "flair"):
            assert json.loads((preproc / scan / f"{scan}_from-{mod}_qc.json").read_text())["transform"] == "none"
    raw = "TCGA-FG-6692"  # the raw clinical case still goes through ANTs and the Python BET
    assert json.loads((preproc / raw / f"{raw}_desc-brain_qc.json").read_text())["backend"] == "python"
    for mod in ("t1", "t2", "flair"):
        qc = json.loads((preproc / raw / f"{raw}_from-{mod}_qc.json").read_text())
        assert qc["transform"] == "rigid" and qc["mutual_information_after"] > qc["mutual_information_before"]

    metrics = pd.read_csv(results / "studies" / "oof" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"identity", "hrfcn3d_oof", "unet2d_oof"} and set(metrics.scan) == set(FOLDS)
    labelled = metrics[metrics.scan == "Brats18_TCIA01_378_1"]
    scores = ["psnr_brain", "psnr_tumour", "brasyn_psnr_brain", "brasyn_ssim_tumour", "brasyn_ssim_healthy",
              "et_contrast", "et_contrast_truth", "et_dice_truth", "et_ml"]
    assert np.isfinite(labelled[scores]).all().all() and metrics.ssim_brain.between(-1, 1).all()
    truth = labelled.iloc[0]  # the real CE-T1 shows the enhancement its expert label marks (docs/real.md)
    assert truth.et_contrast_truth > 0.3 and truth.et_dice_truth > 0.5 and 20 < truth.et_ml < 60
    identity = labelled.set_index("model").loc["identity"]
    assert identity.et_dice == 0 and abs(identity.et_contrast) < 0.2  # the T1 has no enhancement

    endpoints = pd.read_csv(results / "studies" / "oof" / "endpoints.tsv", sep="\t")
    primary = endpoints[endpoints.family == "primary"].iloc[0]  # over every scan of both sets
    assert (primary.model_a, primary.model_b, primary.metric, primary.n) == ("hrfcn3d_oof", "identity", "psnr_brain", 4)
    gains = metrics.pivot(index="scan", columns="model", values="psnr_brain")
    assert np.isclose(primary.mean_diff, (gains.hrfcn3d_oof - gains.identity).mean())
    assert set(endpoints.family) == {"primary", "secondary: hrfcn3d_oof", "secondary: other models"}
    summary_page = (results / "studies" / "oof" / "summary.html").read_text()
    assert summary_page.index("Primary endpoint") < summary_page.index("<table")

    curve = pd.read_csv(results / "studies" / "learning_curve" / "learning_curve.tsv", sep="\t")
    assert curve.set_index("model").n_train.to_dict() == {"hrfcn3d_fold1_n1": 1, "hrfcn3d_fold1": 2}
    fold1 = metrics[metrics.scan.isin([s for s, f in FOLDS.items() if f == 1])].pivot(
        index="scan", columns="model", values="psnr_brain")
    assert np.isclose(curve.set_index("model").psnr_gain["hrfcn3d_fold1"], (fold1.hrfcn3d_oof - fold1.identity).mean())
    trend = pd.read_csv(results / "studies" / "learning_curve" / "trend.tsv", sep="\t").set_index("metric")
    assert np.isfinite(trend.loc["psnr_gain", ["projected_n100", "projected_n369"]].astype(float)).all()

    shipped = models / "hrfcn3d" / "stage2"
    card = json.loads((shipped / "model_card.json").read_text())
    assert card["training"]["cohort"]["sets"] == {"train": {"patients": 4, "scans": 4}}
    assert card["evaluation"].startswith("out of fold")
    oof_b = metrics[(metrics.model == "hrfcn3d_oof") & (metrics.set == "B")]
    assert np.isclose(card["test_metrics"]["B"]["hrfcn3d"]["psnr_brain"]["mean"], oof_b.psnr_brain.mean())
    assert any("no ADC" in line for line in card["limitations"])
    assert "no ADC" in (shipped / "model_card.md").read_text()

    stack = json.loads((preproc / "Brats18_TCIA01_378_1" / "Brats18_TCIA01_378_1_desc-preproc.json").read_text())
    assert stack["channels"][-2:] == ["tumour_mask", "et_mask"]
    history = pd.read_csv(models / "hrfcn3d_fold1" / "stage1" / "history.tsv", sep="\t")
    assert not any(c.startswith("val_") for c in history.columns)  # no validation: the fold's patients stay unseen
    payload = torch.load(shipped / "weights.pt")
    assert payload["model_spec"]["inputs"] == ["t1", "t2", "flair"]
    assert payload["preprocessing"]["preprocess"]["shape"] == [48, 48, 32]
    assert payload["preprocessing"]["modalities"] == ["t1", "t2", "flair"]
