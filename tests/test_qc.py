"""Tests for cesynth.preprocess.qc: panels, per-scan numbers and cohort flags."""

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from cesynth.io import write_json
from cesynth.preprocess.qc import flag_cohort, scan_panel, scan_row, write_html


def _head(tmp_path, shift=0):
    z, y, x = np.meshgrid(*[np.arange(n) for n in (40, 48, 20)], indexing="ij")
    brain = ((z - 20) / 14.0) ** 2 + ((y - 24 - shift) / 17.0) ** 2 + ((x - 10) / 7.0) ** 2 < 1
    img = np.where(brain, 100.0 + 50 * (((z - 20) ** 2 + (y - 24) ** 2) < 40), 10.0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])  # thick slices, as in clinical scans
    paths = {}
    for name, data in {"ref": img, "mask": brain.astype(np.uint8), "t2": 200.0 - img}.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    return paths


def test_scan_panel_writes_png(tmp_path):
    p = _head(tmp_path)
    out = tmp_path / "qc" / "panel.png"
    scan_panel(p["ref"], p["mask"], {"t2": p["t2"]}, out, title="S1")
    with Image.open(out) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert h > w * 0.6  # two rows of three views
        assert np.asarray(im.convert("RGB"))[..., 0].std() > 10  # not blank
    assert sorted(x.name for x in out.parent.iterdir()) == ["panel.png"]  # no temp leftovers


def test_scan_row_reads_rule_json(tmp_path):
    write_json({"backend": "python", "volume_ml": 1400.5, "seconds": 3}, tmp_path / "m.json")
    write_json({"mutual_information_before": 0.3, "mutual_information_after": 0.5, "transform": "rigid"},
               tmp_path / "t2.json")
    row = scan_row("S1", tmp_path / "m.json", {"t2": tmp_path / "t2.json"})
    assert row == {"scan": "S1", "brain_volume_ml": 1400.5, "t2_mi_before": 0.3, "t2_mi_after": 0.5,
                   "t2_transform": "rigid"}


def test_flag_cohort_marks_volume_outlier_and_failed_registration(tmp_path):
    table = pd.DataFrame({
        "scan": ["a", "b", "c", "d"],
        "brain_volume_ml": [1400.0, 1450.0, 1380.0, 2100.0],
        "t2_mi_before": [0.3, 0.3, 0.3, 0.3],
        "t2_mi_after": [0.5, 0.28, 0.5, 0.5],
    })
    flagged = flag_cohort(table)
    assert flagged.loc[0, "flags"] == ""
    # an input kept on its grid (transform none) has nothing to improve: not flagged
    kept = flag_cohort(table.assign(t2_mi_after=0.3, t2_transform=["none", "rigid", "none", "none"]))
    assert list(kept["flags"].str.contains("MI not improved")) == [False, True, False, False]
    assert "MI not improved" in flagged.loc[1, "flags"]
    assert flagged.loc[2, "flags"] == ""
    assert "brain volume +" in flagged.loc[3, "flags"]
    write_html(flagged, tmp_path / "qc.html")
    text = (tmp_path / "qc.html").read_text()
    assert "4 scans, 2 flagged" in text and "background-color: #fdd" in text
