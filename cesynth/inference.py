"""Whole-volume synthesis by sliding windows along the slice axis (MONAI-style aggregation).

The models are trained on blocks of ``window`` consecutive axial slices; at inference every
block position (stride ``stride``) is predicted and overlapping predictions are averaged, so
each slice is synthesised from the same kind of context the model saw in training. Windows
are batched (``batch_size``) and only one batch lives on the device at a time, so memory does
not grow with the number of slices.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from .io import Stack, save_nifti
from .training import load_weights, select_device


@torch.no_grad()
def sliding_window(model, volume: np.ndarray, window: int, stride: int = 1, batch_size: int = 4,
                   device="cpu", amp=False) -> np.ndarray:
    """Predict (Z, Y, X) from inputs (M, Z, Y, X) by averaging overlapping slice windows."""
    device = torch.device(device)
    n_z = volume.shape[1]
    window = min(window, n_z)
    starts = list(range(0, n_z - window + 1, stride))
    if starts[-1] != n_z - window:  # always cover the last slices
        starts.append(n_z - window)
    total = np.zeros(volume.shape[1:], dtype=np.float64)
    counts = np.zeros(n_z, dtype=np.float64)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
    for i in range(0, len(starts), batch_size):
        batch_starts = starts[i:i + batch_size]
        x = torch.from_numpy(np.stack([volume[:, z:z + window] for z in batch_starts])).to(device)
        with autocast:
            pred = model(x).float().cpu().numpy()[:, 0]
        for z, block in zip(batch_starts, pred):
            total[z:z + window] += block
            counts[z:z + window] += 1
    return (total / counts[:, None, None]).astype(np.float32)


def synthesize_scan(model, payload, stack_path, out_path, stride=1, batch_size=4, device="cpu", amp=False):
    """Write the synthetic CE-T1 of one preprocessed scan as NIfTI in model space.

    Background (outside the brain mask) is 0 and values are clipped to [0, 1], like the targets.
    """
    stack = Stack(stack_path)
    inputs = stack.get(payload["model_spec"]["inputs"])
    window = payload["patch"][0]
    pred = sliding_window(model, np.ascontiguousarray(inputs), window, stride, batch_size, device, amp)
    pred = np.clip(pred, 0, 1) * (stack["brain_mask"] > 0)
    spec = payload["model_spec"]
    save_nifti(stack.to_xyz(pred), stack.affine, out_path,
               description=f"SYNTHETIC CE-T1 (cesynth {spec['architecture']}), not acquired")
    return pred


def synthesize_all(weights, stack_paths, out_paths, stride=1, batch_size=4, device="auto", amp=True):
    device = select_device(device)
    model, payload = load_weights(weights, device)
    for stack_path, out_path in zip(stack_paths, out_paths):
        synthesize_scan(model, payload, stack_path, out_path, stride, batch_size, device, amp)
