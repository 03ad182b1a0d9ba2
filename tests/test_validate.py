"""Broken inputs give one message per problem naming the scan, the file and the problem."""

import gzip

import nibabel as nib
import numpy as np
import pandas as pd

from cesynth.inputs.validate import check_files, check_sheet

MODS = ["t1", "ce_t1"]


def nifti(path, data, zooms=(1.0, 1.0, 1.0)):
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([*zooms, 1.0]))
    nib.save(img, str(path))
    return str(path)


def good(path, seed=0):
    return nifti(path, np.random.default_rng(seed).random((8, 8, 8)))


def sheet(rows):
    return pd.DataFrame(rows, columns=["patient", "scan", "t1", "ce_t1", "tumour_mask"]).fillna("")


def test_each_broken_file_is_named_with_its_problem(tmp_path):
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(b"not a nifti at all" * 10))
    nan = np.random.default_rng(1).random((8, 8, 8))
    nan[0, 0, :2] = np.nan
    rows = [
        ("P1", "ok", good(tmp_path / "a.nii.gz"), good(tmp_path / "b.nii.gz", 1), ""),
        ("P2", "missing", str(tmp_path / "nope.nii.gz"), good(tmp_path / "c.nii.gz"), ""),
        ("P3", "corrupt", str(truncated), good(tmp_path / "d.nii.gz"), ""),
        ("P4", "fourd", nifti(tmp_path / "e.nii.gz", np.ones((4, 4, 4, 3))), good(tmp_path / "f.nii.gz"), ""),
        ("P5", "nans", nifti(tmp_path / "g.nii.gz", nan), good(tmp_path / "h.nii.gz"), ""),
        ("P6", "flat", nifti(tmp_path / "i.nii.gz", np.zeros((8, 8, 8))), good(tmp_path / "j.nii.gz"), ""),
        ("P7", "voxel", nifti(tmp_path / "k.nii.gz", np.random.rand(8, 8, 8), (1, 1, 40)),
         good(tmp_path / "l.nii.gz"), ""),
        ("P8", "badmask", good(tmp_path / "m.nii.gz"), good(tmp_path / "n.nii.gz"),
         nifti(tmp_path / "o.nii.gz", np.full((8, 8, 8), 0.5))),
        ("P9", "offgrid", good(tmp_path / "p.nii.gz"), good(tmp_path / "q.nii.gz"),
         nifti(tmp_path / "r.nii.gz", np.ones((6, 8, 8)))),
    ]
    problems = check_files(sheet(rows), MODS, reference="ce_t1")
    by_scan = {}
    for p in problems:
        by_scan.setdefault(p.scan, []).append(str(p))
    assert "ok" not in by_scan
    expected = {"missing": "file does not exist", "corrupt": "cannot be read as NIfTI", "fourd": "must be 3-D",
                "nans": "2 voxel(s) are NaN or infinite", "flat": "empty or constant",
                "voxel": "implausible voxel size", "badmask": "not binary", "offgrid": "not on the reference"}
    for scan, text in expected.items():
        assert len(by_scan[scan]) == 1, by_scan[scan]
        assert text in by_scan[scan][0] and f"scan {scan} (" in by_scan[scan][0]
    assert str(truncated) in by_scan["corrupt"][0]


def test_sheet_rejects_unsafe_and_duplicate_ids_and_missing_columns(tmp_path):
    a, b = good(tmp_path / "a.nii.gz"), good(tmp_path / "b.nii.gz")
    rows = [("P1", "s1", a, b, ""), ("P1", "s1", a, b, ""), ("P2", "s2; rm -rf ~", a, b, ""),
            ("P$(x)", "s3", a, b, "")]
    messages = [str(p) for p in check_sheet(sheet(rows), MODS)]
    assert any("scan s1: scan id appears more than once" in m for m in messages)
    assert any("'s2; rm -rf ~' may only contain" in m for m in messages)
    assert any("patient id 'P$(x)'" in m for m in messages)
    missing = check_sheet(sheet(rows).drop(columns="ce_t1"), MODS)
    assert len(missing) == 1 and "lacks column(s) ['ce_t1']" in str(missing[0])


def test_label_map_masks_need_their_labels_configured(tmp_path):
    labels = np.zeros((8, 8, 8))
    labels[2:4, 2:4, 2:4], labels[4:6, 2:4, 2:4], labels[2:4, 4:6, 4:6] = 1, 2, 4  # BraTS-style
    resampled = labels.copy()
    resampled[6, 6, 6] = 0.5  # a label map interpolated linearly is no longer labels
    rows = [("P1", "brats", good(tmp_path / "a.nii.gz"), good(tmp_path / "b.nii.gz"), nifti(tmp_path / "m.nii.gz", labels)),
            ("P2", "blurred", good(tmp_path / "c.nii.gz"), good(tmp_path / "d.nii.gz"),
             nifti(tmp_path / "s.nii.gz", resampled))]
    binary_only = [str(p) for p in check_files(sheet(rows), MODS, "ce_t1")]
    assert binary_only[0] == (f"scan brats ({tmp_path / 'm.nii.gz'}): tumour_mask: mask is not binary (values {{2, 4}} "
                              "besides 0 and 1); for a label map (e.g. BraTS labels 1, 2, 4) set input.tumour_mask_labels")
    with_labels = [str(p) for p in check_files(sheet(rows), MODS, "ce_t1", mask_labels=[1, 4])]
    assert with_labels == [f"scan blurred ({tmp_path / 's.nii.gz'}): tumour_mask: label map holds values {{0.5}} that "
                           "are not labels (integers >= 0)"]
