from pathlib import Path

import numpy as np
import pytest

from cesynth.io import save_nifti
from cesynth.preprocess.preprocessing import canonical, enhancement_mask, equalize, preprocess_scan, resize


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def settings(shape, equalization="histogram", **extra):
    """The ``preprocess`` config section preprocess_scan takes."""
    return {"shape": shape, "equalization": equalization, "enhancement_delta": 0.1, **extra}


def world_corners(shape, affine):
    """World coordinates of the outer voxel edges along each axis."""
    lo = affine @ np.array([-0.5, -0.5, -0.5, 1])
    hi = affine @ np.array([*(np.asarray(shape) - 0.5), 1])
    return lo[:3], hi[:3]


def test_resize_keeps_field_of_view_and_values():
    affine = np.array([[-1.0, 0, 0, 40], [0, 1.2, 0, -60], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in (20, 30, 10)], indexing="ij")
    volume = (2 * z + 3 * y + x).astype(np.float32)  # linear: trilinear resampling reproduces it exactly
    out, new_affine = resize(volume, affine, (40, 24, 16))
    assert out.shape == (40, 24, 16)
    np.testing.assert_allclose(world_corners((40, 24, 16), new_affine), world_corners((20, 30, 10), affine))
    # the value at an inner output voxel equals the linear function at its world position
    ijk = np.array([10, 7, 5, 1.0])
    src = np.linalg.solve(affine, new_affine @ ijk)
    assert out[10, 7, 5] == pytest.approx(2 * src[0] + 3 * src[1] + src[2], abs=1e-3)


def test_histogram_equalization_is_uniform_inside_brain_and_zero_outside():
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 100.0, size=(20, 20, 20)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[4:16, 4:16, 4:16] = True
    out = equalize(volume, mask, "histogram")
    assert out[~mask].max() == 0 and 0 < out[mask].min() and out[mask].max() == 1
    assert np.histogram(out[mask], bins=10, range=(0, 1))[0] == pytest.approx([mask.sum() / 10] * 10, rel=0.02)
    # monotone: the ranking of voxels is unchanged
    order = np.argsort(volume[mask])
    assert np.all(np.diff(out[mask][order]) >= 0)
    pct = equalize(volume, mask, "percentile")
    assert pct[mask].min() == 0 and pct[mask].max() == 1
    with pytest.raises(ValueError, match="unknown equalization"):
        equalize(volume, mask, "clahe")


def test_median_window_gives_pre_and_post_contrast_one_scale_however_much_enhances():
    rng = np.random.default_rng(1)
    brain = np.ones((30, 30, 30), bool)
    t1 = rng.uniform(0.4, 0.8, size=brain.shape) * 900.0  # grey to white matter, gain 900
    for enhancing_fraction in (0.002, 0.03):
        ce = t1 * 1.6  # another gain, as every acquisition has ...
        enhancing = rng.random(brain.shape) < enhancing_fraction
        ce[enhancing] = 1.0 * 1.6 * 900.0  # ... and some voxels enhance
        pre, post = equalize(t1, brain, "median"), equalize(ce, brain, "median")
        np.testing.assert_allclose(post[~enhancing], pre[~enhancing], rtol=0.02)  # the median moves by < 2%
        assert np.median(pre) == pytest.approx(1 / 3)
        assert post[enhancing].min() > pre[enhancing].max() + 0.1  # enhancement stays above delta, unclipped
        assert post.max() < 1
        # a percentile window, by contrast, ends in the enhancing voxels once they are > 0.5% of the brain
        shift = np.abs(equalize(ce, brain, "percentile") - equalize(t1, brain, "percentile"))[~enhancing].max()
        assert (shift > 0.1) == (enhancing_fraction > 0.005)


def test_enhancement_mask_threshold():
    ce = np.array([0.5, 0.61, 0.7, 0.2])
    t1 = np.array([0.5, 0.5, 0.5, 0.5])
    assert enhancement_mask(ce, t1, 0.1).tolist() == [False, True, True, False]


def test_preprocess_scan_builds_model_space_stack(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS storage: must come out in RAS slice order
    shape = (30, 36, 24)
    brain = np.zeros(shape, bool)
    brain[5:25, 6:30, 4:20] = True
    t1 = (rng.random(shape) + 1) * brain * 100
    ce = t1.copy()
    ce[10:14, 10:14, 10:14] *= 3  # an enhancing lesion
    paths = {}
    for name, data in [("t1", t1), ("ce_t1", ce), ("t2", rng.random(shape) * brain), ("mask", brain)]:
        paths[name] = tmp_path / f"{name}.nii.gz"
        save_nifti(data, affine, paths[name])
    tumour = np.zeros(shape, np.uint8)
    tumour[10:14, 10:14, 10:14] = 1
    save_nifti(tumour, affine, tmp_path / "tumour.nii.gz", dtype=np.uint8)

    stack, channels, new_affine = preprocess_scan(paths["ce_t1"], {"t1": paths["t1"], "t2": paths["t2"]},
                                                  paths["mask"], settings((15, 18, 12)),
                                                  tumour_mask_path=tmp_path / "tumour.nii.gz")
    assert channels == ["t1", "t2", "ce_t1", "brain_mask", "enhancement_mask", "tumour_mask"]
    assert stack.shape == (6, 12, 18, 15)  # (C, Z, Y, X)
    assert new_affine[0, 0] > 0  # RAS
    mask = stack[3] > 0
    for c in range(3):
        assert stack[c][~mask].max() == 0 and stack[c][mask].max() == 1
    lesion = stack[5] > 0
    assert lesion.any() and stack[4][lesion].mean() > 0.5 and stack[4][~lesion & mask].mean() < 0.2
    # the lesion sits where the canonical image says it is
    data, ras_affine = canonical(paths["ce_t1"])
    world = new_affine @ np.array([*np.argwhere(np.transpose(lesion, (2, 1, 0))).mean(axis=0), 1])
    voxel = np.linalg.solve(ras_affine, world)[:3]
    assert data[tuple(np.round(voxel).astype(int))] > 250


def test_label_map_tumour_mask_gives_the_same_channel_as_its_binary_mask(tmp_path):
    rng = np.random.default_rng(0)
    shape, affine = (20, 24, 16), np.diag([1.2, 1.0, 1.5, 1.0])
    brain = np.zeros(shape, bool)
    brain[2:18, 2:22, 2:14] = True
    for name in ("ce_t1", "t1"):
        save_nifti((rng.random(shape) + 1) * brain, affine, tmp_path / f"{name}.nii.gz")
    save_nifti(brain, affine, tmp_path / "brain.nii.gz")
    labels = np.zeros(shape, np.uint8)
    labels[6:10, 6:12, 4:8], labels[10:13, 6:12, 4:8], labels[8:11, 12:15, 8:10] = 1, 2, 4
    save_nifti(labels, affine, tmp_path / "labels.nii.gz", dtype=np.uint8)
    save_nifti(np.isin(labels, [1, 4]), affine, tmp_path / "core.nii.gz", dtype=np.uint8)

    def tumour_channel(mask, mask_labels=None):
        stack, channels, _ = preprocess_scan(tmp_path / "ce_t1.nii.gz", {"t1": tmp_path / "t1.nii.gz"},
                                             tmp_path / "brain.nii.gz", settings((10, 12, 8)), tumour_mask_path=mask,
                                             labels={"tumour": mask_labels})
        return stack[channels.index("tumour_mask")]

    core = tumour_channel(tmp_path / "core.nii.gz")
    assert core.any() and set(np.unique(core)) == {0.0, 1.0}
    np.testing.assert_array_equal(tumour_channel(tmp_path / "labels.nii.gz", [1, 4]), core)
    assert tumour_channel(tmp_path / "labels.nii.gz", [1, 2, 4]).sum() > core.sum()  # oedema included

    stack, channels, _ = preprocess_scan(tmp_path / "ce_t1.nii.gz", {"t1": tmp_path / "t1.nii.gz"},
                                         tmp_path / "brain.nii.gz", settings((10, 12, 8)),
                                         tumour_mask_path=tmp_path / "labels.nii.gz",
                                         labels={"tumour": [1, 2, 4], "enhancing": [4]})
    enhancing, tumour = stack[channels.index("et_mask")] > 0, stack[channels.index("tumour_mask")] > 0
    assert channels[-2:] == ["tumour_mask", "et_mask"] and enhancing.any()
    assert (enhancing <= tumour).all() and enhancing.sum() < tumour.sum() / 2  # label 4 alone, inside the tumour


def test_antialiased_resize_averages_noise_instead_of_sampling_it():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (60, 60, 60)).astype(np.float32)
    plain, affine = resize(noise, np.eye(4), (24, 24, 24))
    smooth, affine_aa = resize(noise, np.eye(4), (24, 24, 24), antialias=True)
    np.testing.assert_array_equal(affine, affine_aa)  # same grid
    # a 2.5x coarser grid keeps (interpolated) single voxels without the low-pass, averages many with it
    assert plain.std() > 0.4 and smooth.std() < 0.5 * plain.std()
    flat, _ = resize(np.full((60, 60, 60), 3.0, np.float32), np.eye(4), (24, 24, 24), antialias=True)
    np.testing.assert_allclose(flat, 3.0, rtol=1e-5)  # no change to what the coarse grid can hold


def test_a_channel_that_covers_part_of_the_brain_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    shape, affine = (20, 24, 16), np.eye(4)
    brain = np.zeros(shape, bool)
    brain[2:18, 2:22, 2:14] = True
    for name in ("ce_t1", "t1"):
        save_nifti((rng.random(shape) + 1) * brain, affine, tmp_path / f"{name}.nii.gz")
    flair = (rng.random(shape) + 1) * brain
    flair[:, 14:] = 0  # the back of the head cut off
    save_nifti(flair, affine, tmp_path / "flair.nii.gz")
    save_nifti(brain, affine, tmp_path / "brain.nii.gz")
    inputs = {"t1": tmp_path / "t1.nii.gz", "flair": tmp_path / "flair.nii.gz"}
    with pytest.raises(ValueError, match=r"flair \(.*flair.nii.gz\) covers only part of the brain: 40% .* value 0"):
        preprocess_scan(tmp_path / "ce_t1.nii.gz", inputs, tmp_path / "brain.nii.gz", settings((10, 12, 8)))
    inputs["flair"] = tmp_path / "t1.nii.gz"
    preprocess_scan(tmp_path / "ce_t1.nii.gz", inputs, tmp_path / "brain.nii.gz", settings((10, 12, 8)))


@pytest.mark.skipif(not (SHARED / "brats2018").is_dir(), reason="needs ../shared/data/brats2018")
def test_the_half_brain_flair_of_brats18_2013_20_1_is_flagged(tmp_path):
    """The real case of issue #22: a FLAIR blank behind the ventricles."""
    from cesynth.preprocess.skullstrip import SkullStripSettings, brain_mask

    case = SHARED / "brats2018" / "Brats18_2013_20_1"
    name = lambda m: case / f"{case.name}_{m}.nii.gz"  # noqa: E731
    brain_mask(name("t1ce"), tmp_path / "brain.nii.gz", SkullStripSettings(backend="none"), scan=case.name)
    with pytest.raises(ValueError, match=r"flair .*covers only part of the brain: 34% of the brain mask holds the "
                                         r"single value 0"):
        preprocess_scan(name("t1ce"), {m: name(m) for m in ("t1", "t2", "flair")}, tmp_path / "brain.nii.gz",
                        settings((48, 48, 32)))


def test_reference_grid_mismatch_is_explained(tmp_path):
    save_nifti(np.ones((10, 10, 10)), np.eye(4), tmp_path / "ref.nii.gz")
    save_nifti(np.ones((8, 10, 10)), np.eye(4), tmp_path / "t1.nii.gz")
    with pytest.raises(ValueError, match="differs from the reference grid"):
        preprocess_scan(tmp_path / "ref.nii.gz", {"t1": tmp_path / "t1.nii.gz"}, tmp_path / "ref.nii.gz",
                        settings((8, 8, 8)))
