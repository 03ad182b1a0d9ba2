"""Where a network runs: the device and its bf16 autocast, shared by training and inference."""

from __future__ import annotations

from contextlib import nullcontext

import torch


DEVICES = ("auto", "cpu", "cuda")  # training.device; an explicit torch device ("cuda:1") works here too


def select_device(requested="auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def bf16_autocast(device: torch.device, cuda=True, cpu=False):
    """bf16 autocast on CUDA (where the GPU supports bf16) and, if asked, on the CPU; else no-op."""
    if device.type == "cuda" and cuda and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
