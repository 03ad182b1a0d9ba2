"""Training patches from preprocessed stacks (paper section III-D).

Each step draws ``batch_size`` scans at random (with replacement, as the reference code does)
and from each a block of ``patch[0]`` consecutive axial slices (paper: 3) whose centre slice
contains brain, cropped in-plane to ``patch[1:]`` (paper: the full 256 x 192 slice).

Sampling is a pure function of (seed, epoch, step), so a run resumed from any step draws the
same patches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from .io import Stack


class PatchSampler:
    def __init__(self, stack_paths, inputs: list[str], target: str, patch, local_mask="enhancement_mask"):
        self.stacks = [Stack(p) for p in stack_paths]
        if not self.stacks:
            raise ValueError("no training scans: check the split table")
        self.inputs, self.target, self.local_mask = list(inputs), target, local_mask
        self.patch = tuple(int(p) for p in patch)
        self._brain_slices = [np.flatnonzero(s["brain_mask"].any(axis=(1, 2))) for s in self.stacks]
        shape = self.stacks[0].data.shape[1:]
        if any(p > n for p, n in zip(self.patch, shape)):
            raise ValueError(f"patch {self.patch} is larger than the volumes {shape}")

    def patch_at(self, scan_index, z0, y0=0, x0=0):
        """(inputs (M,D,H,W), target (1,D,H,W), local mask (1,D,H,W)) as float32 arrays."""
        stack = self.stacks[scan_index]
        d, h, w = self.patch
        window = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + w))
        x = np.stack([stack[m][window] for m in self.inputs])
        y = stack[self.target][window][None]
        m = stack[self.local_mask][window][None] if stack.has(self.local_mask) else np.zeros_like(y)
        return x, y, m

    def random_batch(self, batch_size: int, seed: int, epoch: int, step: int):
        rng = np.random.default_rng([seed, epoch, step])
        d, h, w = self.patch
        parts = []
        for scan_index in rng.integers(len(self.stacks), size=batch_size):
            n_z, n_y, n_x = self.stacks[scan_index].data.shape[1:]
            centres = self._brain_slices[scan_index]
            centre = rng.choice(centres) if len(centres) else rng.integers(n_z)
            z0 = int(np.clip(centre - d // 2, 0, n_z - d))
            parts.append(self.patch_at(scan_index, z0, rng.integers(n_y - h + 1), rng.integers(n_x - w + 1)))
        return _to_tensors(parts)

    def central_batches(self, batch_size: int):
        """Deterministic validation patches: the block at the centre of each scan's brain."""
        d, h, w = self.patch
        parts = []
        for scan_index, stack in enumerate(self.stacks):
            n_z, n_y, n_x = stack.data.shape[1:]
            slices = self._brain_slices[scan_index]
            centre = int(np.median(slices)) if len(slices) else n_z // 2
            parts.append(self.patch_at(scan_index, int(np.clip(centre - d // 2, 0, n_z - d)),
                                       (n_y - h) // 2, (n_x - w) // 2))
        return [_to_tensors(parts[i:i + batch_size]) for i in range(0, len(parts), batch_size)]


def _to_tensors(parts):
    return tuple(torch.from_numpy(np.stack(arrays)) for arrays in zip(*parts))
