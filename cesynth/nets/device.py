"""Where a network runs: the device and its bf16 autocast, shared by training and inference."""

from __future__ import annotations

import os
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


# The bf16 paths of oneDNN, weakest first. ONEDNN_MAX_CPU_ISA caps what oneDNN uses (so a CPU can behave like an
# older one): a cap below AVX512_CORE_BF16 leaves bf16 emulated, one below AMX leaves AVX512-BF16.
CPU_BF16_KINDS = (None, "avx512_bf16", "amx")
_ISA_CAP_KIND = {"AVX512_CORE_BF16": "avx512_bf16", "AVX512_CORE_FP16": "avx512_bf16", "AVX10_1_512": "avx512_bf16"}
# Where CPU bf16 training has been shown to learn as float32 does, per bf16 path and architecture (the demo on
# each path: docs/demo.md, "On other CPUs"). The plain 3D U-Net learned in bf16 on AMX but stalled on an AVX512-BF16
# CPU (+1.1 dB, issue #32; it also stalled on some float32 paths and seeds); the batch-norm unet3d that replaced it
# has not been trained in bf16 on a CPU, so "auto" keeps it in float32.
CPU_BF16_TRAINING_VALIDATED = {"amx": {"unet2d", "unet3d_plain", "hrfcn2d", "hrfcn3d"},
                               "avx512_bf16": {"unet2d", "hrfcn2d", "hrfcn3d"}}


def cpu_bf16_kind() -> str | None:
    """This CPU's native bf16 path as oneDNN will use it: "amx", "avx512_bf16" or None (bf16 emulated, slower)."""
    found = "amx" if torch.cpu._is_amx_tile_supported() else (
        "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else None)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    allowed = "amx" if cap in ("ALL", "DEFAULT") or "AMX" in cap else _ISA_CAP_KIND.get(cap)
    return min(found, allowed, key=CPU_BF16_KINDS.index)


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN may use them)."""
    return cpu_bf16_kind() is not None


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


def cpu_bf16_training(setting, slicewise: bool, patch, name="model", architecture=None) -> bool:
    """Whether a net trains under bf16 autocast on the CPU: ``training.cpu_bf16`` resolved (:func:`use_cpu_bf16`),
    where "auto" also keeps in float32 a 3D net whose patch slices are too large for it (true refuses it) and an
    ``architecture`` not shown to learn in bf16 on this CPU's bf16 path (CPU_BF16_TRAINING_VALIDATED)."""
    problem = cpu_bf16_training_problem(slicewise, patch)
    if setting is True and problem:
        raise ValueError(f"{name}: {problem}")
    if setting == "auto" and architecture not in CPU_BF16_TRAINING_VALIDATED.get(cpu_bf16_kind(), ()):
        return False
    return use_cpu_bf16(setting) and not problem
