"""Tests for cesynth.preprocess.registration (antspyx rigid/affine MI registration)."""

import os
import shutil
from pathlib import Path

# ITK fixes its thread count the first time it runs anything in a process, so the
# determinism test needs one thread set before any ants call (collection imports only).
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import ants  # noqa: E402
import nibabel as nib
import numpy as np
import pytest

from cesynth.preprocess.registration import RegistrationSettings, ants_cli_registration, register_to_reference

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")  # Debian package mricron-data
COLIN_BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
TCGA = Path("/work/shared/data/tcga-fg-6692")

needs_colin = pytest.mark.skipif(
    not (COLIN.is_file() and COLIN_BET.is_file()),
    reason=f"Colin27 template absent ({COLIN}); apt-get install mricron-data",
)
needs_tcga = pytest.mark.skipif(not (TCGA / "t1c.nii.gz").is_file(), reason=f"TCGA case absent ({TCGA})")


@pytest.fixture(scope="module")
def colin_2mm(tmp_path_factory):
    """Colin27 at 2 mm, padded by 20 mm so rotated heads stay inside the field of view."""
    d = tmp_path_factory.mktemp("colin")
    img = ants.resample_image(ants.image_read(str(COLIN)).clone("float"), (2, 2, 2), interp_type=0)
    img = ants.pad_image(img, pad_width=[(10, 10)] * 3)
    brain = ants.resample_image_to_target(
        ants.image_read(str(COLIN_BET)).clone("float"), img, interp_type="nearestNeighbor"
    )
    ref = d / "ref.nii.gz"
    ants.image_write(img, str(ref))
    return d, img, brain.numpy() > 0, ref


def _random_rigid(rng, center, max_deg=15.0, max_mm=10.0):
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    tx = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=rz @ ry @ rx,
        translation=rng.uniform(-max_mm, max_mm, 3),
        center=center,
    )
    return tx


def _t2_like(img: ants.ANTsImage) -> ants.ANTsImage:
    """Monotone-decreasing, nonlinear intensity map inside the head (T1 -> 'T2'), zero outside."""
    a = img.numpy()
    head = a > 0.1 * np.percentile(a, 99)
    x = np.clip(a / np.percentile(a[head], 99), 0, 1)
    return img.new_image_like(np.where(head, (1.0 - x) ** 2 * 1000.0 + 50.0, 0.0).astype(np.float32))


def _recovery_error(colin_2mm, seed, contrast, transform="rigid"):
    d, img, brain, ref = colin_2mm
    rng = np.random.default_rng(seed)
    center = np.array(img.origin) + np.array(img.spacing) * (np.array(img.shape) - 1) / 2
    true = _random_rigid(rng, center)
    # moving(y) = ref(true(y)): the ref content moved by the inverse of `true`.
    moving = ants.apply_ants_transform_to_image(true, img, img, interpolation="linear")
    if contrast == "t2":
        moving = _t2_like(moving)
    mov = d / f"mov_{seed}_{contrast}.nii.gz"
    ants.image_write(moving, str(mov))
    res = register_to_reference(
        mov, ref, d / f"out_{seed}.nii.gz", d / f"out_{seed}.mat", RegistrationSettings(transform=transform, seed=seed)
    )
    est = ants.read_transform(str(d / f"out_{seed}.mat"))
    # Estimated maps ref points -> moving points; true maps moving points -> ref
    # content, so true(est(x)) == x when registration is exact.
    idx = np.argwhere(brain)
    pts = np.asarray(img.origin) + idx * np.asarray(img.spacing)  # direction is identity
    pts = np.asarray([true.apply_to_point(est.apply_to_point(tuple(p))) for p in pts[::7]])
    err = np.linalg.norm(pts - (np.asarray(img.origin) + idx[::7] * np.asarray(img.spacing)), axis=1)
    return float(err.mean()), res


@needs_colin
@pytest.mark.parametrize("seed", [1])  # more seeds in the slow test below
@pytest.mark.parametrize("contrast", ["t1", "t2"])
def test_known_rigid_transform_recovered(colin_2mm, seed, contrast):
    err, res = _recovery_error(colin_2mm, seed, contrast)
    assert err < 0.5, f"mean brain displacement error {err:.3f} mm (seed {seed}, {contrast})"
    assert res["mutual_information_after"] > res["mutual_information_before"]


@needs_colin
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("contrast", ["t1", "t2"])
def test_known_rigid_transform_recovered_many_seeds(colin_2mm, seed, contrast):
    err, _ = _recovery_error(colin_2mm, seed, contrast)
    assert err < 0.5, f"mean brain displacement error {err:.3f} mm (seed {seed}, {contrast})"


@needs_colin
@pytest.mark.slow
def test_affine_mode_recovers_rigid_motion(colin_2mm):
    err, _ = _recovery_error(colin_2mm, 21, "t2", transform="affine")
    assert err < 1.0, f"mean brain displacement error {err:.3f} mm"


@needs_colin
def test_deterministic_and_apply_transform_matches(colin_2mm, tmp_path):
    d, img, brain, ref = colin_2mm
    moving = ants.apply_ants_transform_to_image(
        _random_rigid(np.random.default_rng(5), np.array(img.origin) + 90.0), img, img
    )
    mov = tmp_path / "mov.nii.gz"
    ants.image_write(moving, str(mov))
    register_to_reference(mov, ref, tmp_path / "a.nii.gz", tmp_path / "a.mat", RegistrationSettings(seed=7))
    register_to_reference(mov, ref, tmp_path / "b.nii.gz", tmp_path / "b.mat", RegistrationSettings(seed=7))
    pa = ants.read_transform(str(tmp_path / "a.mat")).parameters
    pb = ants.read_transform(str(tmp_path / "b.mat")).parameters
    np.testing.assert_array_equal(pa, pb)

    # The saved .mat is what ANTs' own tools take (antsApplyTransforms -t): it reproduces the output.
    fixed, moved = ants.image_read(str(ref)).clone("float"), ants.image_read(str(mov)).clone("float")
    c = ants.apply_transforms(fixed, moved, [str(tmp_path / "a.mat")], interpolator="linear")
    a = nib.load(tmp_path / "a.nii.gz")
    np.testing.assert_allclose(a.affine, nib.load(ref).affine, atol=1e-4)
    np.testing.assert_allclose(a.get_fdata(), c.numpy(), atol=1e-3)


@needs_tcga
@pytest.mark.parametrize("seq", ["t2", pytest.param("flair", marks=pytest.mark.slow)])
def test_tcga_registration_raises_mutual_information(tmp_path, seq):
    res = register_to_reference(
        TCGA / f"{seq}.nii.gz", TCGA / "t1c.nii.gz", tmp_path / "w.nii.gz", tmp_path / "w.mat"
    )
    assert res["mutual_information_after"] > res["mutual_information_before"] + 0.05, res
    out = nib.load(tmp_path / "w.nii.gz")
    ref = nib.load(TCGA / "t1c.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-3)


def test_corrupt_input_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8bnot really a nifti")
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4)), good)
    out_img, out_mat = tmp_path / "o.nii.gz", tmp_path / "o.mat"
    with pytest.raises(Exception):
        register_to_reference(bad, good, out_img, out_mat)
    assert not out_img.exists() and not out_mat.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz", "good.nii.gz"]  # no temp leftovers


def test_ants_cli_command_matches_the_in_process_registration(tmp_path):
    """The nipype command line of backend ants-cli, checked without ANTs installed: every setting of
    the antspyx path (metric, stages, schedule, initialisation, seed) is on it."""
    ref, mov = tmp_path / "ref.nii.gz", tmp_path / "mov.nii.gz"
    for path in (ref, mov):
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), path)
    stages = [("Rigid", "8x4x2", "3x2x1vox", "200x100x50"), ("Affine", "8x4x2", "3x2x1vox", "200x100x50")]
    cmd = ants_cli_registration(mov, ref, stages, seed=4, sampling=0.15, prefix=str(tmp_path / "reg_")).cmdline
    assert cmd.startswith("antsRegistration --collapse-output-transforms 1 --dimensionality 3 --float 1 ")
    for part in [f"--initial-moving-transform [ {ref}, {mov}, 1 ]", "--random-seed 5",
                 f"--metric MI[ {ref}, {mov}, 1, 32, Regular, 0.15 ]", "--transform Rigid[ 0.1 ]",
                 "--transform Affine[ 0.1 ]", "--convergence [ 200x100x50, 1e-06, 10 ]",
                 "--shrink-factors 8x4x2", "--smoothing-sigmas 3.0x2.0x1.0vox", "--use-histogram-matching 0",
                 "--winsorize-image-intensities [ 0.005, 0.995 ]", f"--output {tmp_path / 'reg_'}"]:
        assert part in cmd, part
    assert cmd.count("--metric") == 2


@pytest.mark.skipif(shutil.which("antsRegistration") is not None, reason="ANTs is installed here")
def test_ants_cli_backend_without_ants_fails_and_writes_nothing(tmp_path):
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4)), ref)
    with pytest.raises(Exception, match="antsRegistration"):
        register_to_reference(ref, ref, tmp_path / "o.nii.gz", tmp_path / "o.mat",
                              RegistrationSettings(backend="ants-cli"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz"]


def test_rejects_unknown_transform(tmp_path):
    with pytest.raises(ValueError):
        register_to_reference("a", "b", tmp_path / "o.nii.gz", tmp_path / "o.mat",
                              RegistrationSettings(transform="syn"))


def test_schedule_stops_at_finest_mm():
    from cesynth.preprocess.registration import _schedule

    def grid(mm):
        return ants.make_image((8, 8, 8), spacing=(mm, mm, 5.5))

    assert _schedule(grid(2.0), (4, 3, 2, 1), 2.0) == ("8x4x2x1", "3x2x1x0vox", "4x3x2x1")
    assert _schedule(grid(1.0), (4, 3, 2, 1), 2.0) == ("8x4x2", "3x2x1vox", "4x3x2")
    # 0.9 mm: 2x shrink (1.8 mm) is the level closest to 2 mm; never stop at 3.6 mm
    assert _schedule(grid(0.9), (4, 3, 2, 1), 2.0)[0] == "8x4x2"
    assert _schedule(grid(1.0), (4, 3, 2, 1), 0.0)[0] == "8x4x2x1"
    with pytest.raises(ValueError):
        _schedule(grid(1.0), (4, 3, 2), 2.0)
