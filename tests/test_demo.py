"""The demo cohort looks like the study's data: geometry, contrasts and tumours."""

import nibabel as nib
import numpy as np
import pytest

from cesynth.inputs.cohort import load_samples
from cesynth.inputs.demo import scan_table, write_cohort

CFG = dict(seed=5, patients=3, followups=1, expert_masks=1, tumour_fraction=1.0, voxel_mm=2.0, head_scale=0.8,
           noise=0.02)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    table = write_cohort(CFG, out, out / "samples.tsv")
    return out, table


def test_scan_table_is_known_without_rendering(tmp_path):
    table = scan_table(CFG, tmp_path)
    assert list(table.scan) == ["P01s1", "P01s2", "P02s1", "P03s1"]
    assert (table.tumour_mask != "").sum() == 1
    assert not any((tmp_path / s).exists() for s in table.scan)


def test_cohort_files_and_sheet(cohort):
    out, table = cohort
    sheet = load_samples({"source": "samplesheet", "samplesheet": str(out / "samples.tsv")}, {}, None)
    assert sheet.equals(table)  # the written sheet is relative to itself and usable as a sample sheet
    for column in ["t1", "ce_t1", "t2", "adc"]:
        assert all(nib.load(p).ndim == 3 for p in table[column])


def test_acquisition_geometry(cohort):
    _, table = cohort
    row = table.iloc[0]
    ce, t1, t2 = (nib.load(row[c]) for c in ("ce_t1", "t1", "t2"))
    assert ce.shape == t1.shape and np.allclose(ce.affine, t1.affine)
    assert ce.header.get_zooms() == pytest.approx((2.0, 2.0, 2.0))
    # thick axial slices keep their clinical 4 mm on a 2 mm phantom; in plane never finer than the phantom
    assert t2.header.get_zooms() == pytest.approx((2.0, 2.0, 4.0))
    assert not np.allclose(t2.affine, ce.affine)
    # T1 is on the CE-T1 grid but the head moved: images differ beyond noise at tissue edges
    assert np.corrcoef(ce.get_fdata().ravel(), t1.get_fdata().ravel())[0, 1] < 0.99


def test_tumour_enhances_and_follow_up_differs(cohort):
    _, table = cohort
    row = table[table.tumour_mask != ""].iloc[0]
    ce, t1 = (np.asarray(nib.load(row[c]).dataobj) for c in ("ce_t1", "t1"))
    mask = np.asarray(nib.load(row.tumour_mask).dataobj) > 0
    assert mask.sum() > 10
    head = ce > np.percentile(ce, 60)
    # the enhancing tumour is brighter than the rest of the head on CE-T1, relative to T1
    assert ce[mask].mean() / ce[head].mean() > t1[mask].mean() / t1[head].mean()
    first, second = (nib.load(p).get_fdata() for p in table.ce_t1[table.patient == "P01"])
    assert first.shape != second.shape or not np.allclose(first, second)


def test_deterministic(tmp_path, cohort):
    _, table = cohort
    again = write_cohort({**CFG, "patients": 2, "followups": 0}, tmp_path, tmp_path / "s.tsv")
    np.testing.assert_array_equal(nib.load(again.ce_t1[0]).get_fdata(), nib.load(table.ce_t1[0]).get_fdata())


def test_bias_field_is_the_sessions_coil_in_scanner_space():
    """Every sequence of a session sees the same field at the same scanner position, whatever its grid."""
    from cesynth.inputs.demo import _bias_field

    coil = np.random.default_rng(0).normal(size=6)
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = -20
    thick = np.diag([2.0, 2.0, 5.0, 1.0])
    thick[:3, 3] = -20  # voxel (i, j, k) of `thick` is voxel (2i, 2j, 5k) of `fine`
    a = _bias_field((41, 41, 41), fine, coil, 60.0)
    b = _bias_field((21, 21, 9), thick, coil, 60.0)
    np.testing.assert_allclose(b, a[::2, ::2, ::5], rtol=1e-5)
    assert a.std() > 0.01  # a real field, not a constant
    other = _bias_field((41, 41, 41), fine, np.random.default_rng(1).normal(size=6), 60.0)
    assert not np.allclose(a, other, rtol=1e-3)
