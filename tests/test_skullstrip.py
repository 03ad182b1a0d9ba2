"""Tests for cesynth.preprocess.skullstrip."""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from cesynth.preprocess.skullstrip import SkullStripSettings, brain_mask, fsl_available, fsl_bet

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian package mricron-data
COLIN_BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
T1C = Path("/work/shared/data/tcga-fg-6692/t1c.nii.gz")


def fake_fsl(root: Path) -> Path:
    """An $FSLDIR whose bin/bet (a stand-in: FSL cannot be installed here) records its arguments and writes the
    mask that -m asks for: the voxels above 10% of the maximum."""
    bet = root / "bin" / "bet"
    bet.parent.mkdir(parents=True)
    bet.write_text(f"""#!{sys.executable}
import sys, nibabel as nib, numpy as np
open(sys.argv[0] + ".args", "w").write(" ".join(sys.argv[1:]))
img = nib.load(sys.argv[1])
data = img.get_fdata()
nib.save(nib.Nifti1Image((data > 0.1 * data.max()).astype(np.uint8), img.affine), sys.argv[2] + "_mask.nii.gz")
""")
    bet.chmod(0o755)
    return root


def test_fsl_bet_through_fslpy_with_a_stand_in_fsl(tmp_path, monkeypatch):
    monkeypatch.setenv("FSLDIR", str(fake_fsl(tmp_path / "fsl")))
    bet = str(tmp_path / "fsl" / "bin" / "bet")
    assert fsl_bet("in.nii.gz", tmp_path / "out_brain", 0.4, True, cmdonly=True) == \
        [bet, "in.nii.gz", str(tmp_path / "out_brain"), "-m", "-f", "0.4", "-R"]
    assert fsl_bet("in.nii.gz", "out", 0.5, False, cmdonly=True) == [bet, "in.nii.gz", "out", "-m", "-f", "0.5"]
    assert fsl_available()
    out = tmp_path / "mask.nii.gz"
    # auto: FSL, since $FSLDIR/bin/bet exists
    result = brain_mask(T1C, out, SkullStripSettings(backend="auto", frac=0.3, robust=True))
    words = Path(bet + ".args").read_text().split()
    assert result["backend"] == "fsl" and words[0] == str(T1C) and words[2:] == ["-m", "-f", "0.3", "-R"]
    data = nib.load(T1C).get_fdata()
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj) > 0, data > 0.1 * data.max())


@pytest.mark.skipif(fsl_available(), reason="FSL is installed here")
def test_fsl_backend_without_fsl_raises(tmp_path):
    with pytest.raises(RuntimeError):
        brain_mask(T1C, tmp_path / "m.nii.gz", SkullStripSettings(backend="fsl"))
    assert not (tmp_path / "m.nii.gz").exists()


def test_corrupt_input_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8bnot a nifti")
    with pytest.raises(Exception):
        brain_mask(bad, tmp_path / "m.nii.gz", SkullStripSettings(backend="python"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz"]


@pytest.fixture(scope="module")
def colin_dice(tmp_path_factory):
    if not (COLIN.is_file() and COLIN_BET.is_file()):
        pytest.skip(f"Colin27 template absent ({COLIN}); apt-get install mricron-data")
    out = tmp_path_factory.mktemp("colin") / "mask.nii.gz"
    res = brain_mask(COLIN, out, SkullStripSettings(backend="python"))
    m = nib.load(out)
    assert m.get_data_dtype() == np.uint8
    np.testing.assert_allclose(m.affine, nib.load(COLIN).affine)
    m = np.asarray(m.dataobj) > 0
    g = nib.load(COLIN_BET).get_fdata() > 0
    return 2 * (m & g).sum() / (m.sum() + g.sum()), res


def test_colin27_dice_regression_floor(colin_dice):
    dice, res = colin_dice
    assert res["backend"] == "python"
    assert dice >= 0.92, f"Dice {dice:.4f}"


def test_colin27_dice_target(colin_dice):
    dice, _ = colin_dice
    assert dice >= 0.95, f"Dice {dice:.4f}"


@pytest.fixture(scope="module")
def tcga_mask(tmp_path_factory):
    if not T1C.is_file():
        pytest.skip(f"TCGA case absent ({T1C})")
    out = tmp_path_factory.mktemp("tcga") / "mask.nii.gz"
    res = brain_mask(T1C, out, SkullStripSettings(backend="python"))
    return res, np.asarray(nib.load(out).dataobj) > 0, nib.load(T1C)


def test_tcga_mask_brain_on_central_slices(tcga_mask):
    res, mask, img = tcga_mask
    assert mask.shape == img.shape
    zooms = img.header.get_zooms()
    nz = mask.shape[2]
    for k in range(nz // 2 - 2, nz // 2 + 3):
        area_cm2 = mask[:, :, k].sum() * zooms[0] * zooms[1] / 100
        assert area_cm2 > 60, f"slice {k}: brain area {area_cm2:.0f} cm2"


def test_tcga_mask_volume_plausible(tcga_mask):
    res, _, _ = tcga_mask
    assert 1000 <= res["volume_ml"] <= 1800, res


def test_tcga_mask_stays_inside_head(tcga_mask):
    """On every slice, the mask is >= 3 mm inside the skin (outline of a quarter of Otsu).

    A full Otsu threshold loses the dark bone around the mastoids, whose gap then lets the outline
    cut in to the cerebellum on the inferior slices.
    """
    _, mask, img = tcga_mask
    data = img.get_fdata()
    head = data > 0.25 * threshold_otsu(data)
    zooms = img.header.get_zooms()
    for k in range(mask.shape[2]):
        if not mask[:, :, k].any():
            continue
        h = ndimage.binary_fill_holes(ndimage.binary_closing(head[:, :, k], iterations=3))
        depth_mm = ndimage.distance_transform_edt(h, sampling=zooms[:2])
        inside = depth_mm[mask[:, :, k]]
        assert inside.min() >= 3.0, f"slice {k}: mask reaches {inside.min():.1f} mm from head surface"
