"""The whole DAG, run for real by Snakemake on the tiny demo cohort (config/tiny.yaml)."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cesynth.evaluate.metrics import score_predictions
from cesynth.inputs.cohort import load_samples
from cesynth.io import Stack
from conftest import REPO, nan_copy, viewer_config

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake_command(workdir, *args, configs=()):
    """Snakemake on ``workdir`` with config/tiny.yaml, then ``configs`` merged on top."""
    return [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(REPO / "config" / "tiny.yaml"),
            *map(str, configs), *args]


def snakemake(workdir, *args, check=True, configs=()):
    cmd = snakemake_command(workdir, *args, configs=configs)
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def assert_drawn_figure(png):
    """A PNG figure with something on it: a plot-sized canvas, not blank, more than a few flat colours."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    assert min(pixels.shape[:2]) >= 200, pixels.shape
    assert (pixels < 0.9).any(axis=-1).mean() > 0.02, "more than 2% of the canvas is drawn on"
    assert len(np.unique(pixels.reshape(-1, 3).round(2), axis=0)) > 20


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir, "--cores", "2")
    return workdir


def test_whole_study_produces_metrics_tests_and_figures(finished_run):
    results = finished_run / "results"
    split = pd.read_csv(results / "split.tsv", sep="\t")
    test_scans = set(split.scan[split.set != "train"])
    assert {"train", "test_A", "B"} <= set(split.set)

    metrics = pd.read_csv(results / "studies" / "baselines" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"identity", "unet2d", "hrfcn3d"}  # config/tiny.yaml's baselines + no-model
    assert all(set(metrics.scan[metrics.model == m]) == test_scans for m in metrics.model.unique())
    assert np.isfinite(metrics.psnr_brain).all() and np.isfinite(metrics.ssim_brain).all()
    b = metrics[metrics.set == "B"]
    assert np.isfinite(b.psnr_tumour).all() and metrics[metrics.set == "test_A"].psnr_tumour.isna().all()

    ttests = pd.read_csv(results / "studies" / "baselines" / "ttests.tsv", sep="\t")
    assert set(zip(ttests.model_a, ttests.model_b)) == {("identity", "unet2d"), ("identity", "hrfcn3d"),
                                                        ("unet2d", "hrfcn3d")}
    assert set(ttests.set) == {"test_A", "B"}
    psnr = ttests[(ttests.metric == "psnr_brain") & (ttests.set == "test_A") & (ttests.model_a == "unet2d")].iloc[0]
    by_model = metrics[metrics.set == "test_A"].groupby("model").psnr_brain.mean()
    assert psnr.mean_a == pytest.approx(by_model["unet2d"]) and psnr.mean_b == pytest.approx(by_model["hrfcn3d"])

    # a model card beside every trained model's weights, with the study table's numbers (set B: brain and tumour)
    summary = pd.read_csv(results / "studies" / "baselines" / "summary.tsv", sep="\t").set_index("model")
    for model in ("unet2d", "hrfcn3d"):
        card = json.loads((results / "models" / model / "stage2" / "model_card.json").read_text())
        for set_name, values in card["test_metrics"].items():
            for metric, numbers in values[model].items():
                assert summary.at[model, f"set {set_name} {metric}"] == numbers["table"]
        identity = card["test_metrics"]["B"]["identity"]["psnr_tumour"]["table"]
        assert identity == summary.at["identity", "set B psnr_tumour"]

    # the local-loss ablation fine-tunes hrfcn3d's stage-1 weights instead of training its own
    assert not (results / "models" / "hrfcn3d_r10" / "stage1").exists()
    studies = {"ablation_inputs": ["hrfcn3d_t1", "hrfcn3d"], "ablation_local_loss": ["hrfcn3d_r10", "hrfcn3d"]}
    for study, models in studies.items():  # config/tiny.yaml's
        table = pd.read_csv(results / "studies" / study / "summary.tsv", sep="\t")
        assert list(table.model) == ["identity", *models]
        # mean ± sd (sd nan: the tiny cohort has one test-A scan)
        assert table["set test_A psnr_brain"].str.fullmatch(r"\d+\.\d+ ± (\d+\.\d+|nan)").all(), table

    for name in ("qualitative", "metric_distributions", "training_curves"):
        assert_drawn_figure(results / "studies" / "baselines" / f"{name}.png")

    # One prediction read back with its own scan's stack: it lies on that scan's model grid, is 0
    # exactly outside that scan's brain, varies inside it, and gives the metrics the table holds
    # (the metrics rule paired every prediction with its scan).
    row = metrics[metrics.model == "hrfcn3d"].iloc[0]
    stack_path = results / "preproc" / row.scan / f"{row.scan}_desc-preproc.npy"
    synth_path = next((results / "models" / "hrfcn3d" / "synth").glob(f"{row.scan}_desc-synth_*.nii.gz"))
    synth, stack = nib.load(synth_path), Stack(stack_path)
    brain = stack.to_xyz(np.asarray(stack["brain_mask"])) > 0
    np.testing.assert_allclose(synth.affine, stack.affine)
    assert synth.shape == brain.shape == (32, 32, 32)
    assert not synth.get_fdata()[~brain].any() and synth.get_fdata()[brain].std() > 0
    again = score_predictions([synth_path], [stack_path], [row.scan]).iloc[0]
    for key in ("mae_brain", "psnr_brain", "ssim_brain", "psnr_tumour"):
        assert again[key] == pytest.approx(row[key], nan_ok=True), key
    # every heavy job measured and logged: a benchmark row per registration, the epochs in the training log
    benchmarks = [pd.read_csv(p, sep="\t") for p in (results / "benchmarks" / "coregister").glob("*.tsv")]
    assert len(benchmarks) == len(split) and all(b.s.iloc[0] > 0 for b in benchmarks)  # one job per scan
    log = (results / "logs" / "train_stage1" / "hrfcn3d.log").read_text()
    assert [json.loads(line)["epoch"] for line in log.splitlines() if line.startswith('{"epoch"')] == [1]


def test_every_test_scan_of_every_model_has_an_uncertainty_map_scored_against_its_error(finished_run):
    """The uncertainty rule maps each synthesis of a test scan (zero outside the brain, on its grid); the study
    table holds the Spearman and AUROC recomputed from those files, and the report shows the calibration figure."""
    from cesynth.infer.uncertainty import evaluate

    results = finished_run / "results"
    split = pd.read_csv(results / "split.tsv", sep="\t")
    test_scans = sorted(split.scan[split.set != "train"])
    table = pd.read_csv(results / "studies" / "baselines" / "uncertainty.tsv", sep="\t")
    assert sorted(zip(table.model, table.scan)) == sorted((m, s) for m in ("hrfcn3d", "unet2d") for s in test_scans)
    assert table.spearman.between(-1, 1).all() and table.auroc.between(0, 1).all()
    b = table[table.set == "B"]  # the tiny cohort's set-B scan has an enhancing tumour
    assert (b.enhancing_voxels > 0).all() and table[table.set == "test_A"].enhancing_voxels.eq(0).all()
    row = table[table.model == "hrfcn3d"].iloc[0]
    stack_path = results / "preproc" / row.scan / f"{row.scan}_desc-preproc.npy"
    synth = results / "models" / "hrfcn3d" / "synth" / f"{row.scan}_desc-synth_ce_t1.nii.gz"
    spread = results / "models" / "hrfcn3d" / "uncertainty" / f"{row.scan}_desc-uncertainty_ce_t1.nii.gz"
    image, stack = nib.load(spread), Stack(stack_path)
    brain = stack.to_xyz(np.asarray(stack["brain_mask"])) > 0
    np.testing.assert_allclose(image.affine, stack.affine)
    assert b"UNCERTAINTY" in image.header["descrip"].tobytes()
    assert not image.get_fdata()[~brain].any() and (image.get_fdata()[brain] > 0).mean() > 0.9
    again = evaluate([synth], [spread], [stack_path], [row.scan])[0].iloc[0]
    assert again.spearman == pytest.approx(row.spearman) and again.auroc == pytest.approx(row.auroc)
    calibration = pd.read_csv(results / "models" / "hrfcn3d" / "uncertainty_calibration.tsv", sep="\t")
    assert sorted(calibration.decile.unique()) == list(range(1, 11)) and set(calibration.scan) == set(test_scans)
    assert_drawn_figure(results / "studies" / "baselines" / "uncertainty_calibration.png")


def test_every_test_patient_of_every_study_has_a_viewer_page_with_that_studys_models(finished_run):
    split = pd.read_csv(finished_run / "results" / "split.tsv", sep="\t")
    test_scans = sorted(split.scan[split.set != "train"])
    studies = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())["studies"]
    for study, models in studies.items():
        folder = finished_run / "results" / "studies" / study
        index = (folder / "viewers.html").read_text()
        assert [scan for scan in test_scans if f"href='viewer/{scan}.html'" in index] == test_scans
        titles = [p["title"] for p in viewer_config((folder / "viewer" / f"{test_scans[0]}.html").read_text())["panes"]]
        assert [t for t in titles if t.endswith("(synthetic)")] == [f"{m} (synthetic)" for m in models]


def test_finished_run_has_nothing_left_to_do(finished_run):
    result = snakemake(finished_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_is_self_contained_html(finished_run):
    snakemake(finished_run, "--report", "results/report.html")
    html = (finished_run / "results" / "report.html").read_text(errors="replace")
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    for name in ("qualitative.png", "metric_distributions.png", "training_curves.png", "summary.html",
                 "uncertainty_calibration.png", "uncertainty.html", "viewers.html"):
        assert name in html
    split = pd.read_csv(finished_run / "results" / "split.tsv", sep="\t")
    for scan in split.scan[split.set != "train"]:  # a slice viewer per test patient, reachable from the report
        assert f"{scan}.html" in html
    # a caption that docutils could not parse (e.g. |error| read as a substitution) is shown as an error box
    assert 'class="problematic"' not in html and "System Message" not in html


def test_bad_inputs_stop_the_run_before_any_work(tmp_path):
    """Every broken scan is named with its problem, and no preprocessing job starts."""
    demo = finished_inputs(tmp_path)
    sheet = load_samples({"source": "samplesheet", "samplesheet": str(demo / "samples.tsv")}, {}, None)
    broken = sheet.copy()
    broken.loc[0, "t2"] = str(tmp_path / "missing_t2.nii.gz")
    broken.loc[1, "adc"] = nan_copy(sheet.adc[1], tmp_path / "nan_adc.nii.gz")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"\x1f\x8b garbage")
    broken.loc[2, "t1"] = str(tmp_path / "corrupt.nii.gz")
    broken.to_csv(tmp_path / "broken.tsv", sep="\t", index=False)

    work = tmp_path / "work"
    result = snakemake(work, "--cores", "2", "--config", "input={'source': 'samplesheet', 'samplesheet': '"
                       + str(tmp_path / "broken.tsv") + "'}", check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"scan {sheet.scan[0]} ({tmp_path / 'missing_t2.nii.gz'}): t2 file does not exist" in out
    assert not (work / "results" / "preproc").exists()

    # Missing files are caught when the DAG is built; file contents by the first job.
    broken.loc[0, "t2"] = sheet.t2[0]
    broken.to_csv(tmp_path / "broken.tsv", sep="\t", index=False)
    result = snakemake(work, "--cores", "2", "--config", "input={'source': 'samplesheet', 'samplesheet': '"
                       + str(tmp_path / "broken.tsv") + "'}", check=False)
    log = (work / "results" / "logs" / "validate_inputs" / "all.log").read_text()
    assert result.returncode != 0
    assert f"scan {sheet.scan[1]} ({tmp_path / 'nan_adc.nii.gz'}): adc: 1 voxel(s) are NaN" in log
    assert f"scan {sheet.scan[2]} ({tmp_path / 'corrupt.nii.gz'}): t1: cannot be read as NIfTI" in log
    assert not (work / "results" / "preproc").exists()


def finished_inputs(tmp_path):
    """Only the demo cohort of the tiny config (one job), to break copies of its files."""
    work = tmp_path / "demo"
    snakemake(work, "--cores", "1", "results/demo/samples.tsv")
    return work / "results" / "demo"


def test_paper_size_configuration_builds_the_full_dag(tmp_path):
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "paper.yaml"), "-n",
           "--quiet", "rules", "--config", "input={source: demo}"]  # paper.yaml names no cohort: the phantom's
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    counts = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["train_stage1"] == "6" and counts["train_stage2"] == "10"  # 11 models, 5 share stage 1
    assert counts["coregister"] == counts["skullstrip"]  # one registration job per scan, for all its inputs


@pytest.mark.parametrize("configs", [[], ["--configfile", "config/real.yaml"]])  # real.yaml adds crossval's rules
def test_lint_is_clean(configs):
    result = subprocess.run([*SNAKEMAKE, "--lint", *configs], capture_output=True, text=True, cwd=REPO)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_editing_one_models_lambda_reruns_only_that_model(finished_run, tmp_path):
    result = snakemake(finished_run, "-n", "ablation_local_loss")
    assert "Nothing to be done" in result.stdout + result.stderr
    edit = tmp_path / "edit.yaml"  # as a user would edit config.yaml: one model's local-loss weight
    edit.write_text("models:\n  hrfcn3d_r10: {stage2: {lambdas: [1.0, 1.0, 20.0]}}\n")
    edited = snakemake(finished_run, "-n", "ablation_local_loss", "--quiet", "rules", configs=[edit]).stdout
    jobs = {line.split()[0]: int(line.split()[1]) for line in edited.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert jobs == {"train_stage2": 1, "infer": 1, "metrics": 1, "model_card": 1, "uncertainty": 1,
                    "uncertainty_metrics": 1, "ablation_local_loss": 1, "total": 7}


def test_real_tcga_case_preprocesses_end_to_end(tmp_path):
    """config/tcga.yaml: the real glioma case (skull on, 5.5 mm slices) through validate -> QC."""
    from conftest import TCGA

    if not TCGA.is_dir():
        pytest.skip(f"the shared TCGA case is not at {TCGA}")
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(REPO / "config" / "tcga.yaml"),
           "--config", f"input={{'source': 'samplesheet', 'samplesheet': '{REPO / 'config' / 'tcga' / 'samples.tsv'}'}}",
           "--cores", "2", "preprocess_all"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    scan = "TCGA-FG-6692"
    preproc = tmp_path / "results" / "preproc" / scan
    stack = np.load(preproc / f"{scan}_desc-preproc.npy", mmap_mode="r")
    assert stack.shape == (6, 192, 256, 192)  # channels, Z, Y, X
    channels = json.loads((preproc / f"{scan}_desc-preproc.json").read_text())["channels"]
    assert channels == ["t1", "t2", "flair", "ce_t1", "brain_mask", "enhancement_mask"]
    for mod in ("t1", "t2", "flair"):
        qc = json.loads((preproc / f"{scan}_from-{mod}_qc.json").read_text())
        assert qc["modality"] == mod  # the scan's one registration job wrote each input's files under its name
        assert qc["mutual_information_after"] > qc["mutual_information_before"], mod
    volume = json.loads((preproc / f"{scan}_desc-brain_qc.json").read_text())["volume_ml"]
    assert 1000 < volume < 1800
    cohort = pd.read_csv(tmp_path / "results" / "qc" / "preproc_qc.tsv", sep="\t")
    assert list(cohort.scan) == [scan]


def test_identity_baseline_is_scored_first_in_every_study(finished_run):
    """The no-model baseline (the preprocessed T1 as prediction) is row one of every table and paired with
    every model in the t-tests; it enhances nothing."""
    results = finished_run / "results"
    split = pd.read_csv(results / "split.tsv", sep="\t")
    test_scans = sorted(split.scan[split.set != "train"])
    scan = test_scans[0]
    stack = np.load(results / "preproc" / scan / f"{scan}_desc-preproc.npy")
    channels = json.loads((results / "preproc" / scan / f"{scan}_desc-preproc.json").read_text())["channels"]
    t1 = stack[channels.index("t1")] * (stack[channels.index("brain_mask")] > 0)
    identity = nib.load(results / "models" / "identity" / "synth" / f"{scan}_desc-synth_ce_t1.nii.gz").get_fdata()
    np.testing.assert_allclose(np.transpose(identity, (2, 1, 0)), t1, atol=1e-6)
    for study in ("baselines", "ablation_inputs", "ablation_local_loss"):
        metrics = pd.read_csv(results / "studies" / study / "metrics.tsv", sep="\t")
        models = list(pd.unique(metrics.model))
        assert models[0] == "identity" and len(models) > 1
        assert sorted(metrics.scan[metrics.model == "identity"]) == test_scans
        summary = pd.read_csv(results / "studies" / study / "summary.tsv", sep="\t")
        assert summary.model.iloc[0] == "identity"
        ttests = pd.read_csv(results / "studies" / study / "ttests.tsv", sep="\t")
        psnr = ttests[(ttests.metric == "psnr_brain") & (ttests.set == "test_A")]
        assert set(psnr.model_b[psnr.model_a == "identity"]) == set(models[1:])
    b = metrics[(metrics.set == "B") & (metrics.model == "identity")]
    assert (b.dice_enh_tumour.fillna(0) == 0).all()
    overview = (results / "studies" / "overview.rst").read_text()
    assert overview.count("against") == 3 and "``identity``" in overview


def test_default_demo_has_test_sets_big_enough_for_paired_tests():
    """config.yaml's phantom cohort: >= 8 scans in test set A and >= 6 in set B, no patient in two sets."""
    import yaml

    from cesynth.inputs.cohort import split_cohort
    from cesynth.inputs.demo import scan_table

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    table = scan_table(config["demo"], "demo")
    split = split_cohort(table, config["split"]["test_fraction"], config["split"]["seed"])
    sizes = split.set.value_counts()
    assert sizes["test_A"] >= 8 and sizes["B"] >= 6 and sizes["train"] >= 8
    train_patients = set(split.patient[split.set == "train"])
    assert not train_patients & set(split.patient[split.set != "train"])
