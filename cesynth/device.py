"""Where a network runs: the device and its bf16 autocast, shared by training and inference."""

from __future__ import annotations

from contextlib import nullcontext

import torch


DEVICES = ("auto", "cpu", "cuda")  # training.device; an explicit torch device ("cuda:1") works here too
# torch 2.13's oneDNN corrupts the heap in the bf16 weight gradient of a 3D convolution once a patch slice holds
# about 8,192 voxels (88 x 88 runs, 96 x 96 crashes; 2D convolutions do not: BENCHMARKS.md, section cpu_bf16).
# CPU bf16 training (training.cpu_bf16) keeps 3D nets at half that.
CPU_BF16_MAX_SLICE_VOXELS = 64 * 64
CPU_BF16_SETTINGS = (True, False, "auto")


def select_device(requested="auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def bf16_autocast(device: torch.device, cuda=True, cpu=False):
    """bf16 autocast on CUDA (where the GPU supports bf16) and, if asked, on the CPU; else no-op."""
    if device.type == "cuda" and cuda and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def use_cpu_bf16(setting) -> bool:
    """An ``inference.cpu_bf16`` / ``training.cpu_bf16`` setting resolved: true, false, or "auto" (native bf16)."""
    if setting not in CPU_BF16_SETTINGS:
        raise ValueError(f"cpu_bf16 must be one of {CPU_BF16_SETTINGS}, got {setting!r}")
    return setting is True or setting == "auto" and cpu_bf16_native()


def cpu_bf16_training_problem(slicewise: bool, patch) -> str | None:
    """Why ``training.cpu_bf16`` cannot train a net (3D unless ``slicewise``) on ``patch`` (slices, Y, X), or None."""
    voxels = int(patch[1]) * int(patch[2])
    if slicewise or voxels <= CPU_BF16_MAX_SLICE_VOXELS:
        return None
    return (f"training.cpu_bf16 trains 3D nets on patch slices of at most {CPU_BF16_MAX_SLICE_VOXELS} voxels (Y x X), "
            f"patch {list(patch)} has {voxels}: torch's bf16 gradient of a 3D convolution corrupts memory beyond "
            "about 8,192; set cpu_bf16: false for this model or a smaller patch")


def cpu_bf16_training(setting, slicewise: bool, patch, name="model") -> bool:
    """Whether a net trains under bf16 autocast on the CPU: ``training.cpu_bf16`` resolved (:func:`use_cpu_bf16`),
    where "auto" also keeps a 3D net whose patch slices are too large for it in float32 and true refuses it."""
    problem = cpu_bf16_training_problem(slicewise, patch)
    if setting is True and problem:
        raise ValueError(f"{name}: {problem}")
    return use_cpu_bf16(setting) and not problem
