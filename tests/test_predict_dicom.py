"""A new patient as a hospital has them: DICOM series in, a synthetic DICOM series out (snakemake predict).

The real TCGA-FG-6692 case (T1, T2, FLAIR; raw clinical, 5.5 mm oblique axial) is written as three DICOM
series with pydicom (tests/dicom_series.py), predicted from those folders with a model trained on the tiny
demo, and the synthetic series is read back with the real dcm2niix. The same trained model then predicts
BraTS-form patients whose sheet says skullstrip/registration none, without retraining.
"""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from dcm2niix import main as dcm2niix

from conftest import SHARED, TCGA
from dicom_series import patient_series
from test_workflow import snakemake

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (TCGA / "t1.nii.gz").is_file(), reason="TCGA case absent")]
BRATS = SHARED / "data" / "brats2018"
OUT = "results/predict/FG6692"
SYNTH = f"{OUT}/FG6692_model-hrfcn3d_desc-synthetic_ce_t1"


def configure(tmp_path, name, rows, **predict):
    """A predict config (FLAIR instead of ADC, a 2-patient demo to train on) over a sheet of ``rows``."""
    sheet = tmp_path / f"{name}.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"modalities": ["t1", "t2", "flair"],
                                      "demo": {"patients": 2, "followups": 0, "expert_masks": 0},
                                      "predict": {"samplesheet": str(sheet), "model": "hrfcn3d", **predict}}))
    return config


def predict(work, config, *args, check=True):
    return snakemake(work, "--cores", "2", "predict", *args, configs=[config], check=check)


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    series = patient_series({m: TCGA / f"{m}.nii.gz" for m in ("t1", "t2", "flair")}, tmp / "FG6692")
    config = configure(tmp, "predict", [{"patient": "TCGA-FG-6692", "scan": "FG6692", **series}])
    predict(tmp / "work", config)
    return tmp, tmp / "work", series


def planned_jobs(dry_run: str) -> set:
    """The rules of a dry run's job table."""
    table = dry_run.split("Job stats:", 1)[1].split("total", 1)[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


def read_back(series_dir, out_dir):
    """The synthetic series through dcm2niix itself (the wheel's binary), as a PACS user would convert it."""
    out_dir.mkdir()
    done = dcm2niix(["-z", "y", "-f", "back", "-o", str(out_dir), str(series_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return nib.load(out_dir / "back.nii.gz")


def test_dicom_series_in_synthetic_dicom_series_out(dicom_run):
    tmp, work, series = dicom_run
    converted = nib.load(work / OUT / "dicom" / "FG6692_t1.nii.gz")  # the T1 series as the pipeline read it
    sidecar = json.loads((work / OUT / "dicom" / "FG6692_t1.json").read_text())  # dcm2niix's BIDS sidecar
    assert sidecar["SeriesDescription"] == "T1" and sidecar["SliceThickness"] == pytest.approx(5.5, abs=1e-3)
    original = nib.as_closest_canonical(nib.load(TCGA / "t1.nii.gz"))
    canonical = nib.as_closest_canonical(converted)
    np.testing.assert_allclose(canonical.affine, original.affine, atol=0.01)
    np.testing.assert_array_equal(canonical.get_fdata(), original.get_fdata())

    synth = nib.load(work / f"{SYNTH}.nii.gz")
    np.testing.assert_allclose(synth.affine, converted.affine, atol=1e-4)
    back = read_back(work / f"{SYNTH}_dicom", tmp / "back")
    # dcm2niix orders a series' voxels its own way: compare the grids in one (closest-to-RAS) orientation
    back_c, synth_c = nib.as_closest_canonical(back), nib.as_closest_canonical(synth)
    assert back_c.shape == synth_c.shape == canonical.shape
    np.testing.assert_allclose(back_c.affine, canonical.affine, atol=0.01)

    files = sorted((work / f"{SYNTH}_dicom").glob("*.dcm"))
    first = pydicom.dcmread(files[0])
    t1 = pydicom.dcmread(next(series["t1"].iterdir()))
    precision = float(first.RescaleSlope) / 2
    difference = np.abs(back_c.get_fdata() - synth_c.get_fdata())
    assert difference.max() <= precision * 1.001 + 1e-6, (difference.max(), precision)
    assert synth_c.get_fdata().max() > 0.2  # a synthesis, not an empty series

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert len(files) == synth.shape[2]
    assert {h.StudyInstanceUID for h in headers} == {t1.StudyInstanceUID}
    assert {h.FrameOfReferenceUID for h in headers} == {t1.FrameOfReferenceUID}
    assert {h.PatientID for h in headers} == {t1.PatientID} and {str(h.PatientName) for h in headers} == {"TCGA^FG6692"}
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and first.SeriesInstanceUID != t1.SeriesInstanceUID
    assert len({h.SOPInstanceUID for h in headers}) == len(files)
    assert t1.SOPInstanceUID not in {h.SOPInstanceUID for h in headers}
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"]
    assert "SYNTHETIC" in first.SeriesDescription and "hrfcn3d" in first.SeriesDescription
    assert first.BitsAllocated == 16 and first.PixelRepresentation == 0 and first.pixel_array.dtype == np.uint16


def test_uncertainty_map_as_its_own_dicom_series_in_the_same_study(dicom_run):
    tmp, work, series = dicom_run
    nifti = nib.as_closest_canonical(nib.load(work / f"{OUT}/FG6692_model-hrfcn3d_desc-uncertainty.nii.gz"))
    back = nib.as_closest_canonical(read_back(work / f"{OUT}/FG6692_model-hrfcn3d_desc-uncertainty_dicom",
                                              tmp / "back_uncertainty"))
    np.testing.assert_allclose(back.affine, nifti.affine, atol=0.01)
    files = sorted((work / f"{OUT}/FG6692_model-hrfcn3d_desc-uncertainty_dicom").glob("*.dcm"))
    first, synth = pydicom.dcmread(files[0]), pydicom.dcmread(next((work / f"{SYNTH}_dicom").iterdir()))
    assert np.abs(back.get_fdata() - nifti.get_fdata()).max() <= float(first.RescaleSlope) / 2 * 1.001 + 1e-9
    assert nifti.get_fdata().max() > 0  # the views disagree somewhere: a map, not an empty series
    t1 = pydicom.dcmread(next(series["t1"].iterdir()))
    assert (first.StudyInstanceUID, first.FrameOfReferenceUID) == (t1.StudyInstanceUID, t1.FrameOfReferenceUID)
    assert first.SeriesInstanceUID not in {synth.SeriesInstanceUID, t1.SeriesInstanceUID}
    assert first.SeriesNumber == synth.SeriesNumber + 1
    assert first.SeriesDescription.startswith("UNCERTAINTY") and "SYNTHETIC" in first.SeriesDescription
    sidecar = json.loads((work / f"{OUT}/FG6692_model-hrfcn3d_desc-uncertainty.json").read_text())
    assert sidecar["method"] == "combined"  # config.yaml's


def test_model_card_beside_the_weights_matches_the_study_table(dicom_run):
    tmp, work, _ = dicom_run
    models = work / "results" / "models" / "hrfcn3d" / "stage2"
    card = json.loads((models / "model_card.json").read_text())
    assert "not for diagnosis" in card["intended_use"].lower() and "Model card: hrfcn3d" in \
        (models / "model_card.md").read_text()
    assert card["training"]["cohort"]["sets"]["train"]["patients"] == 1 and card["inputs"] == ["t1", "t2", "flair"]
    sidecar = json.loads((work / f"{SYNTH}.json").read_text())
    assert sidecar["model_card"]["weights_sha256"] == card["weights"]["sha256"] == sidecar["weights_sha256"]
    # the study of this model (no other model: nothing retrained) reports the card's numbers
    snakemake(work, "--cores", "2", "baselines", "--config", "studies={baselines: [hrfcn3d]}",
              configs=[tmp / "predict.yaml"])
    table = pd.read_csv(work / "results" / "studies" / "baselines" / "summary.tsv", sep="\t").set_index("model")
    compared = 0
    for set_name, values in card["test_metrics"].items():
        for model in ("hrfcn3d", "identity"):
            for metric, numbers in values[model].items():
                assert table.at[model, f"set {set_name} {metric}"] == numbers["table"]
                compared += 1
    assert compared >= 8


@pytest.mark.parametrize("broken, problem", [
    ("mixed", "t2 DICOM series folder holds 2 series: "),
    ("missing", "t2 DICOM series folder missing slice(s): about 1 missing between slice positions"),
])
def test_broken_dicom_folder_stops_with_one_line(dicom_run, broken, problem):
    tmp, work, series = dicom_run
    folder = tmp / f"{broken}_t2"
    shutil.copytree(series["t2"], folder)
    if broken == "mixed":
        for f in series["flair"].iterdir():
            shutil.copy(f, folder)
    else:
        sorted(folder.iterdir())[12].unlink()
    scan = f"BROKEN_{broken}"
    config = configure(tmp, broken, [{"patient": "TCGA-FG-6692", "scan": scan, **series, "t2": folder}])
    result = predict(work, config, check=False)
    log = (work / "results" / "logs" / "predict_dicom_check" / f"{scan}.log").read_text()
    lines = [line for line in log.splitlines() if line.startswith("  - scan")]
    assert result.returncode != 0 and len(lines) == 1, log
    assert lines[0].startswith(f"  - scan {scan} ({folder}): patient TCGA-FG-6692: {problem}"), lines[0]
    assert not (work / "results" / "predict" / scan / "dicom").exists()  # nothing converted, nothing written
    assert not list((work / "results" / "predict").glob(f"{scan}/*.nii.gz"))


@pytest.mark.skipif(not BRATS.is_dir(), reason="BraTS 2018 cases absent")
def test_already_preprocessed_patients_predict_without_retraining(dicom_run):
    tmp, work, _ = dicom_run
    cases = ["Brats18_TCIA10_628_1", "Brats18_CBICA_ABM_1"]
    rows = [{"patient": c, "scan": c, **{m: BRATS / c / f"{c}_{m}.nii.gz" for m in ("t1", "t2", "flair")},
             "skullstrip": "none", "registration": "none"} for c in cases]
    config = configure(tmp, "brats", rows)
    planned = planned_jobs(predict(work, config, "-n").stdout)
    assert {"predict_skullstrip", "predict_synthesize"} <= planned and all(j.startswith("predict") for j in planned)
    predict(work, config)
    for case in cases:
        t1 = np.asarray(nib.load(BRATS / case / f"{case}_t1.nii.gz").dataobj)
        mask = np.asarray(nib.load(work / "results" / "predict" / case / "preproc" /
                                   f"{case}_desc-brain_mask.nii.gz").dataobj) > 0
        # backend none: the nonzero voxels (holes filled, specks off the brain dropped: 2 voxels of 1.4 million)
        assert (mask != (t1 != 0)).sum() <= 1e-5 * mask.sum()
        qc = json.loads((work / "results" / "predict" / case / "qc" / f"{case}_from-t2_qc.json").read_text())
        assert qc["transform"] == "none"
        sidecar = json.loads((work / "results" / "predict" / case /
                              f"{case}_model-hrfcn3d_desc-synthetic_ce_t1.json").read_text())
        assert sidecar["config"]["skullstrip"]["backend"] == "none"
        assert not (work / "results" / "predict" / case / f"{case}_model-hrfcn3d_desc-synthetic_ce_t1_dicom").exists()


def test_predict_without_the_uncertainty_map(dicom_run):
    """predict.uncertainty: false (the fast CPU path) writes the synthesis and no map, and retrains nothing."""
    tmp, work, series = dicom_run
    config = configure(tmp, "nomap", [{"patient": "TCGA-FG-6692", "scan": "again", **series}], uncertainty=False)
    planned = planned_jobs(predict(work, config, "-n").stdout)
    assert all(j.startswith("predict") for j in planned), planned
    predict(work, config)
    written = {p.name for p in (work / "results" / "predict" / "again").iterdir()}
    assert "again_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz" in written
    assert not [n for n in written if "uncertainty" in n], written
    sidecar = json.loads((work / "results/predict/again/again_model-hrfcn3d_desc-synthetic_ce_t1.json").read_text())
    assert sidecar["uncertainty"] is None
