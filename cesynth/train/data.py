"""Training patches from preprocessed stacks (paper section III-D).

Each step draws ``batch_size`` scans at random (with replacement, as the reference code does)
and from each a block of ``patch[0]`` consecutive axial slices (paper: 3) whose centre slice
contains brain, cropped in-plane to ``patch[1:]`` (paper: the full 256 x 192 slice) around a
brain voxel of that slice. A fraction ``enhancing`` of the patches is centred on a voxel of the
enhancement mask M instead (nnU-Net's foreground oversampling): enhancing tissue is a few per mille
of the brain, so uniform patches hold little of what the local loss is about. ``local_mask`` names the
channel of the local loss and of that oversampling; a stack without it (a patient without expert
labels when it is ``et_mask``) uses M.

Augmentation (``augment``, off by default): a left-right mirror of the whole patch (brains are near
symmetric, tumours are not on one side), and a random gamma exp(N(0, gamma)) per input channel, the
target untouched: sequences differ between sites in contrast, which a few training patients cannot show.

Sampling is a pure function of (seed, epoch, step), so a run resumed from any step draws the
same patches as an uninterrupted one, whichever process (DataLoader worker, DDP rank) reads them.
With ``world`` data-parallel processes a step draws ``world * batch_size`` patches and process
``rank`` reads its own ``batch_size`` of them.
"""

from __future__ import annotations

import numpy as np
import torch

from cesynth.io import Stack


class PatchSampler:
    def __init__(self, stack_paths, inputs: list[str], target: str, patch, local_mask="enhancement_mask",
                 enhancing: float = 0.0, augment: dict | None = None):
        self.paths = [str(p) for p in stack_paths]
        if not self.paths:
            raise ValueError("no training scans: check the split table")
        if not 0 <= enhancing <= 1:
            raise ValueError(f"the fraction of enhancing patches must lie in [0, 1], got {enhancing}")
        self.stacks = [Stack(p) for p in self.paths]
        self.inputs, self.target = list(inputs), target
        self.local_masks = [local_mask if s.has(local_mask) else "enhancement_mask" for s in self.stacks]
        self.patch, self.enhancing = tuple(int(p) for p in patch), float(enhancing)
        self.augment = {"flip": False, "gamma": 0.0, **(augment or {})}
        self._brain_slices = [np.flatnonzero(s["brain_mask"].any(axis=(1, 2))) for s in self.stacks]
        self._enhancing_voxels = [np.argwhere(s[m]) if enhancing and s.has(m) else np.empty((0, 3))
                                  for s, m in zip(self.stacks, self.local_masks)]
        shape = self.stacks[0].data.shape[1:]
        if any(p > n for p, n in zip(self.patch, shape)):
            raise ValueError(f"patch {self.patch} is larger than the volumes {shape}")

    def __getstate__(self):
        # Pickled memory maps would copy whole volumes into spawned workers; reopen them by path.
        return {k: v for k, v in self.__dict__.items() if k != "stacks"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stacks = [Stack(p) for p in self.paths]

    def patch_at(self, scan_index, z0, y0=0, x0=0):
        """(inputs (M,D,H,W), target (1,D,H,W), local mask (1,D,H,W)) as float32 arrays."""
        d, h, w = self.patch
        window = (slice(z0, z0 + d), slice(y0, y0 + h), slice(x0, x0 + w))
        return self._arrays(scan_index, window)

    def _arrays(self, scan_index, window):
        stack, local = self.stacks[scan_index], self.local_masks[scan_index]
        x = np.stack([stack[m][window] for m in self.inputs])
        y = stack[self.target][window][None]
        m = stack[local][window][None] if stack.has(local) else np.zeros_like(y)
        return x, y, m

    def random_positions(self, batch_size: int, seed: int, epoch: int, step: int):
        """The (scan, z0, y0, x0) of every patch of one step; no voxel is read."""
        rng = np.random.default_rng([seed, epoch, step])
        positions = []
        for scan_index in rng.integers(len(self.stacks), size=batch_size):
            enhancing = self._enhancing_voxels[scan_index]
            if len(enhancing) and rng.random() < self.enhancing:  # none listed when the fraction is 0
                centre = enhancing[rng.integers(len(enhancing))]
            else:
                centre = self._brain_centre(scan_index, rng)
            starts = np.clip(centre - np.array(self.patch) // 2, 0, np.array(self.stacks[scan_index].data.shape[1:]) -
                             self.patch)
            positions.append((int(scan_index), *map(int, starts)))
        return positions

    def _brain_centre(self, scan_index, rng) -> np.ndarray:
        """(z, y, x) of a random brain voxel in a slice drawn uniformly among the brain slices."""
        stack = self.stacks[scan_index]
        slices = self._brain_slices[scan_index]
        if not len(slices):
            return np.array([rng.integers(n) for n in stack.data.shape[1:]])
        z = rng.choice(slices)
        in_slice = np.argwhere(stack["brain_mask"][z])
        return np.array([z, *in_slice[rng.integers(len(in_slice))]])

    def random_batch(self, batch_size: int, seed: int, epoch: int, step: int, rank: int = 0, world: int = 1):
        positions = self.random_positions(batch_size * world, seed, epoch, step)
        # its own generator: augmentation leaves the positions (and resumed runs) as they were
        rng = np.random.default_rng([seed, epoch, step, 1])
        patches = [self._augmented(self.patch_at(*p), rng) for p in positions]
        return _to_tensors(patches[rank * batch_size:(rank + 1) * batch_size])

    def _augmented(self, arrays, rng):
        x, y, m = arrays
        flip, gammas = rng.random() < 0.5, np.exp(rng.normal(0, 1, len(x)) * self.augment["gamma"])
        if self.augment["flip"] and flip:
            x, y, m = (a[..., ::-1] for a in (x, y, m))
        if self.augment["gamma"]:
            x = np.clip(x, 0, None) ** gammas[:, None, None, None]
        return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (x, y, m))

    def brain_windows(self, scan_index: int):
        """Non-overlapping full-slice windows of ``patch[0]`` slices covering one scan's brain.

        Yields (inputs (M,D,Y,X), target (1,D,Y,X), local mask (1,D,Y,X), brain mask (1,D,Y,X)); the last
        window is shifted back to end at the last brain slice, so a few slices may be seen twice.
        """
        stack = self.stacks[scan_index]
        n_z, n_y, n_x = stack.data.shape[1:]
        slices = self._brain_slices[scan_index]
        d = self.patch[0]
        if not len(slices):
            return
        first, last = int(slices[0]), int(slices[-1])
        for z0 in sorted({min(max(z, 0), n_z - d) for z in [*range(first, last + 1, d), last - d + 1]}):
            window = slice(z0, z0 + d)
            yield *self._arrays(scan_index, (window,)), stack["brain_mask"][window][None] > 0


class StepBatches(torch.utils.data.Dataset):
    """Item i = the batch of step ``first_step + i`` of one epoch, for a DataLoader with workers.

    Items depend only on their index, so the order of workers cannot change what a step sees.
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, seed: int, epoch: int, first_step: int,
                 steps: int, rank: int = 0, world: int = 1):
        self.sampler, self.batch_size, self.seed, self.epoch = sampler, batch_size, seed, epoch
        self.first_step, self.steps, self.rank, self.world = first_step, steps, rank, world

    def __len__(self):
        return self.steps - self.first_step

    def __getitem__(self, i):
        return self.sampler.random_batch(self.batch_size, self.seed, self.epoch, self.first_step + i,
                                         self.rank, self.world)


def _to_tensors(parts):
    return tuple(torch.from_numpy(np.stack(arrays)) for arrays in zip(*parts))
