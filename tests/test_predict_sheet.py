"""A predict sheet is screened whole when the workflow is parsed, as a training sheet is: every broken scan
named, one line each, before any job."""

import pandas as pd
import pytest
import yaml

from cesynth.infer import predict
from cesynth.inputs.validate import InputError
from conftest import nan_copy, predict_sheet, small_image
from test_workflow import snakemake

INPUTS = ["t1", "t2", "adc"]


def broken_sheet(folder):
    """A predict sheet of four scans: N0 fine, N1 with a missing T2, N2 with a NaN voxel in its ADC, N3 with a
    2-D T1."""
    sheet = predict_sheet(folder, scans=4)
    table = pd.read_csv(sheet, sep="\t")
    table.loc[1, "t2"] = str(folder / "N1" / "gone.nii.gz")
    table.loc[2, "adc"] = nan_copy(table.adc[2], folder / "N2" / "adc_nan.nii.gz")
    table.loc[3, "t1"] = small_image(folder / "N3" / "t1_2d.nii.gz", shape=(8, 8))
    table.to_csv(sheet, sep="\t", index=False)
    return sheet, table


def test_every_broken_scan_is_named_at_once(tmp_path):
    sheet, table = broken_sheet(tmp_path)
    with pytest.raises(InputError) as refused:
        predict.load_samples(sheet, INPUTS)
    assert [str(p) for p in refused.value.problems] == [
        f"scan N1_1 ({table.t2[1]}): t2: file does not exist",
        f"scan N2_1 ({table.adc[2]}): adc: 1 voxel(s) are NaN or infinite",
        f"scan N3_1 ({table.t1[3]}): t1: image must be 3-D, but has shape (8, 8)",
    ]


def test_a_cluster_job_only_checks_the_table(tmp_path):
    """Inside a job (the submitting process screened the images) no image is opened: only what the table says."""
    sheet, table = broken_sheet(tmp_path)
    with pytest.raises(InputError) as refused:
        predict.load_samples(sheet, INPUTS, open_images=False)
    assert [str(p) for p in refused.value.problems] == [f"scan N1_1 ({table.t2[1]}): t2 file does not exist"]


def test_snakemake_predict_names_every_broken_scan_before_any_job(tmp_path):
    sheet, table = broken_sheet(tmp_path / "new")
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump({"predict": {"samplesheet": str(sheet), "model": "hrfcn3d"}}))
    work = tmp_path / "work"
    result = snakemake(work, "--cores", "1", "predict", check=False, configs=[config])
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "3 problem(s) in the input scans" in out, out[-3000:]
    for line in (f"scan N1_1 ({table.t2[1]}): t2: file does not exist",
                 f"scan N2_1 ({table.adc[2]}): adc: 1 voxel(s) are NaN",
                 f"scan N3_1 ({table.t1[3]}): t1: image must be 3-D"):
        assert line in out, out[-3000:]
    assert "N0_1" not in out and not (work / "results").exists()
