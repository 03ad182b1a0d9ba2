"""Rigid/affine co-registration of one MRI sequence onto a reference (the CE-T1).

Paper section III-A: every input sequence is co-registered to the contrast-enhanced
T1. We call the antsRegistration binary that antspyx bundles directly (rather than
``ants.registration``) so that the metric, stages, initialisation and random seed
are all explicit; ``ants.registration`` only passes a seed through a global and
refuses non-"Repro" transforms in deterministic mode. Sites with their own ANTs build
can run the same registration through it (``backend="ants-cli"``, nipype's interface).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy.io import savemat

from cesynth.inputs.validate import InputError, Problem
from cesynth.io import atomic_output

if TYPE_CHECKING:
    import ants
# antspyx is imported where it is used: its import takes ~2 s, which a `none` job (a grid check and a copy,
# the most common job on BraTS-form cohorts) should not pay.

_TRANSFORMS = {"rigid": ("Rigid",), "affine": ("Rigid", "Affine")}
TRANSFORMS = (*_TRANSFORMS, "none")  # "none": inputs already on the reference grid (checked, copied)

# Multi-resolution schedule (shared by every linear stage). Shrink factors are
# capped by ITK per axis, so the 26-slice clinical volumes still get >= 3 slices
# at the coarsest level; smoothing is in voxels of the shrunken image.
SHRINK_FACTORS = (8, 4, 2, 1)
SMOOTHING_VOX = (3, 2, 1, 0)
ITERATIONS = (200, 100, 50, 20)  # ANTs converges (1e-6 over 10 steps) before these on every test case
_MI_BINS = 32
# transform "none": an input counts as on the reference grid when its affine matches to this (mm; the
# float32 NIfTI header rounds at ~1e-5 mm).
GRID_TOLERANCE_MM = 1e-3


def _read_float(path) -> ants.ANTsImage:
    import ants

    img = ants.image_read(str(path))
    if img.dimension != 3 or img.components != 1:
        raise ValueError(f"{path}: expected a 3D scalar image, got dimension={img.dimension}")
    return img.clone("float")


def _schedule(fixed: ants.ANTsImage, iterations, finest_mm):
    """ANTs strings for shrink factors, smoothing and iterations, without levels finer than ``finest_mm``."""
    if len(iterations) != len(SHRINK_FACTORS):
        raise ValueError(f"iterations needs {len(SHRINK_FACTORS)} levels (shrink {SHRINK_FACTORS}), got {iterations}")
    spacing = min(fixed.spacing)
    # Keep the finest level whose voxels are still >= finest_mm, and always the coarsest one.
    keep = [i for i, s in enumerate(SHRINK_FACTORS) if i == 0 or s * spacing >= finest_mm * 0.999]
    if SHRINK_FACTORS[keep[-1]] * spacing > finest_mm and keep[-1] + 1 < len(SHRINK_FACTORS):
        keep.append(keep[-1] + 1)  # the next level would undershoot finest_mm: take it rather than stop coarser
    return ("x".join(str(SHRINK_FACTORS[i]) for i in keep), "x".join(str(SMOOTHING_VOX[i]) for i in keep) + "vox",
            "x".join(str(int(iterations[i])) for i in keep))


def mutual_information(fixed: ants.ANTsImage, moving_on_fixed: ants.ANTsImage) -> float:
    """Mattes MI between two images on the same grid, sign flipped so higher = better.

    ``ants.image_mutual_information`` returns the ANTs *cost*, which is negative MI.
    """
    import ants

    return -float(ants.image_mutual_information(fixed, moving_on_fixed))


def _set_threads(threads: int) -> None:
    # ITK reads this once, at its first use in the process; later changes are
    # ignored. One thread makes the MI sums order-independent, and the determinism
    # guarantee relies on that: callers that need it must set the variable (or call
    # this) before any other ants call.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))


BACKENDS = ("antspyx", "ants-cli")


@dataclass(frozen=True)
class RegistrationSettings:
    """The ``registration`` config section (a scan's sample-sheet column may override ``transform``), with the
    job's ``threads`` and the ``seed`` that jitters the metric's sampling grid."""
    transform: str = "rigid"
    iterations: tuple = ITERATIONS
    sampling: float = 0.15
    finest_mm: float = 2.0
    backend: str = "antspyx"
    seed: int = 0
    threads: int = 1


def register_to_reference(moving_path, reference_path, out_image_path, out_transform_path,
                          settings: RegistrationSettings = RegistrationSettings()) -> dict:
    """Register ``moving_path`` onto ``reference_path`` with Mattes mutual information.

    Stages: centre-of-mass initialisation, then Rigid (and Affine for
    ``transform="affine"``), each 4-level multi-resolution. Writes the moving image
    resampled onto the reference grid (linear) and the ANTs ``.mat`` transform
    (reference -> moving point mapping, usable with ``antsApplyTransforms -t``).
    Both outputs are written atomically.

    Speed knobs (``settings``): ``iterations`` per level (coarse -> fine; shrink factors 8, 4, 2, 1), ``sampling``
    (fraction of voxels in the metric, regular grid jittered by the seed), and ``finest_mm``: levels
    whose voxels would be finer than this are skipped (a 1 mm scan stops at 2x shrink; rigid
    alignment is already sub-voxel there, and the 1x level costs as much as all others together).
    ``backend``: "antspyx" (the antsRegistration that antspyx bundles, in this process) or
    "ants-cli" (a site-installed ``antsRegistration`` through nipype, same settings).

    Returns ``mutual_information_before``/``_after`` (higher = better aligned; the
    before value uses the scanner (header) alignment), ``seconds``, ``transform``.
    """
    import ants

    s = settings
    _check_settings(moving_path, s.transform, s.seed, s.backend)
    t0 = time.perf_counter()
    _set_threads(s.threads)
    fixed = _read_float(reference_path)
    moving = _read_float(moving_path)
    stages = [(stage, *_schedule(fixed, s.iterations, s.finest_mm)) for stage in _TRANSFORMS[s.transform]]
    with tempfile.TemporaryDirectory(prefix="cesynth_reg_") as work:
        prefix = os.path.join(work, "reg_")
        if s.backend == "antspyx":
            _run_antspyx(fixed, moving, stages, s.seed, s.sampling, prefix)
        else:
            ants_cli_registration(moving_path, reference_path, stages, s.seed, s.sampling, prefix, s.threads).run()
        mat = prefix + "0GenericAffine.mat"
        with atomic_output(out_transform_path) as tmp:
            shutil.copyfile(mat, str(tmp))
        warped = ants.apply_transforms(fixed, moving, [mat], interpolator="linear")

    identity = ants.resample_image_to_target(moving, fixed, interp_type="linear")
    result = {
        "transform": s.transform,
        "mutual_information_before": mutual_information(fixed, identity),
        "mutual_information_after": mutual_information(fixed, warped),
    }
    with atomic_output(out_image_path) as tmp:
        ants.image_write(warped, str(tmp))
    result["seconds"] = time.perf_counter() - t0
    return result


def _check_settings(moving_path, transform, seed, backend):
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(_TRANSFORMS)}, got {transform!r}")
    if backend not in BACKENDS:
        raise ValueError(f"registration backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "ants-cli" and shutil.which("antsRegistration") is None:
        raise RuntimeError(f"{moving_path}: registration.backend 'ants-cli' needs antsRegistration (ANTs) on the "
                           "PATH; it is not there (backend 'antspyx' needs nothing installed)")


def coregister(scan, moving_path, reference_path, out_image_path, out_transform_path,
               settings: RegistrationSettings) -> dict:
    """Bring one input onto the reference grid: :func:`register_to_reference`, or for ``transform="none"``
    (inputs already co-registered, e.g. BraTS) :func:`keep_on_grid`; the outputs are the same files."""
    if settings.transform == "none":
        return keep_on_grid(scan, moving_path, reference_path, out_image_path, out_transform_path)
    return register_to_reference(moving_path, reference_path, out_image_path, out_transform_path, settings)


def coregister_scan(scan, modalities, moving_paths, reference_path, out_image_paths, out_transform_paths,
                    settings: RegistrationSettings) -> list[dict]:
    """:func:`coregister` every input of one scan, in one process (ANTs starts once per scan, not per input);
    each QC dict names its modality."""
    return [{"modality": modality, **coregister(scan, moving, reference_path, image, transform, settings)}
            for modality, moving, image, transform
            in zip(modalities, moving_paths, out_image_paths, out_transform_paths, strict=True)]


def keep_on_grid(scan, moving_path, reference_path, out_image_path, out_transform_path,
                 tolerance_mm=GRID_TOLERANCE_MM) -> dict:
    """An input that is already on the reference grid: check its header, copy it unchanged and write an
    identity ``.mat``, so that every later step reads the same files as after a registration.

    Only headers are read (about a second per job in all, instead of ten for reading, comparing and
    rewriting the volumes); the QC's mutual information is left empty (nothing was aligned).
    Refuses (:class:`InputError` naming the scan and file) an input whose shape or affine differs.
    """
    t0 = time.perf_counter()
    moving, reference = nib.load(str(moving_path)), nib.load(str(reference_path))
    if moving.shape[:3] != reference.shape[:3]:
        raise InputError([Problem(scan, str(moving_path), f"registration 'none' needs the input on the reference "
                                  f"grid, but its shape {moving.shape[:3]} differs from {reference_path}'s "
                                  f"{reference.shape[:3]}; register it (registration: rigid)")])
    offset = float(np.abs(moving.affine - reference.affine).max())
    if offset > tolerance_mm:
        raise InputError([Problem(scan, str(moving_path), f"registration 'none' needs the input on the reference "
                                  f"grid, but its affine differs from {reference_path}'s by up to {offset:.3g} "
                                  f"(tolerance {tolerance_mm} mm); register it (registration: rigid)")])
    with atomic_output(out_transform_path) as tmp:
        write_identity_transform(tmp)
    with atomic_output(out_image_path) as tmp:
        if "".join(Path(moving_path).suffixes[-2:]) == "".join(Path(out_image_path).suffixes[-2:]):
            shutil.copyfile(moving_path, tmp)
        else:  # another NIfTI flavour (.nii): rewrite it in the output's
            nib.save(moving, str(tmp))
    return {"transform": "none", "mutual_information_before": None, "mutual_information_after": None,
            "seconds": time.perf_counter() - t0}


def write_identity_transform(path):
    """The identity as ANTs writes it (ITK's MATLAB v4 ``.mat``: 12 affine parameters and the centre)."""
    savemat(str(path), {"AffineTransform_double_3_3": np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], float)[:, None],
                        "fixed": np.zeros((3, 1))}, format="4")


def _run_antspyx(fixed, moving, stages, seed, sampling, prefix):
    """antsRegistration as bundled by antspyx, on the images in memory; writes ``<prefix>0GenericAffine.mat``."""
    from ants.internal import get_lib_fn, get_pointer_string

    f, m = get_pointer_string(fixed), get_pointer_string(moving)
    args = [
        "--dimensionality", "3",
        "--float", "1",
        "--collapse-output-transforms", "1",
        "--interpolation", "Linear",
        "--winsorize-image-intensities", "[0.005,0.995]",
        "--use-histogram-matching", "0",  # cross-contrast: histogram matching would be wrong
        # 1 = align intensity centres of mass: handles large translations and gives the
        # rotation search a start inside the capture range of tilted heads.
        "--initial-moving-transform", f"[{f},{m},1]",
        # ANTs treats seed 0 as "seed from the clock", so shift to keep 0 valid.
        "--random-seed", str(int(seed) + 1),
    ]
    for stage, shrink, smooth, iters in stages:
        args += [
            "--transform", f"{stage}[0.1]",
            "--metric", f"MI[{f},{m},1,{_MI_BINS},Regular,{float(sampling)}]",
            "--convergence", f"[{iters},1e-6,10]",
            "--shrink-factors", shrink,
            "--smoothing-sigmas", smooth,
        ]
    rc = get_lib_fn("antsRegistration")(args + ["--output", prefix])
    if rc != 0:
        raise RuntimeError(f"antsRegistration failed with exit code {rc}")


def ants_cli_registration(moving_path, reference_path, stages, seed, sampling, prefix, threads=1):
    """The nipype ``antsRegistration`` interface with the settings of :func:`_run_antspyx`; not run.

    ``stages``: (transform, shrink, smoothing, iterations) as from :func:`_schedule`. Its
    ``.cmdline`` is the command; ``.run()`` needs ``antsRegistration`` on the PATH.
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no version check over the network (nodes are often offline)
    from nipype.interfaces.ants import Registration

    def levels(text):
        return [int(v) for v in text.removesuffix("vox").split("x")]

    n = len(stages)
    return Registration(
        fixed_image=[str(reference_path)], moving_image=[str(moving_path)], dimension=3, float=True,
        collapse_output_transforms=True, interpolation="Linear", winsorize_lower_quantile=0.005,
        winsorize_upper_quantile=0.995, use_histogram_matching=[False] * n, initial_moving_transform_com=1,
        random_seed=int(seed) + 1, transforms=[s[0] for s in stages], transform_parameters=[(0.1,)] * n,
        metric=["MI"] * n, metric_weight=[1.0] * n, radius_or_number_of_bins=[_MI_BINS] * n,
        sampling_strategy=["Regular"] * n, sampling_percentage=[float(sampling)] * n,
        number_of_iterations=[levels(s[3]) for s in stages], convergence_threshold=[1e-6] * n,
        convergence_window_size=[10] * n, shrink_factors=[levels(s[1]) for s in stages],
        smoothing_sigmas=[levels(s[2]) for s in stages], sigma_units=["vox"] * n,
        output_transform_prefix=prefix, num_threads=int(threads), terminal_output="allatonce")
