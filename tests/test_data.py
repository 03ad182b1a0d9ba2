"""Patch sampling: deterministic per (seed, epoch, step), valid patches, picklable for spawned workers."""

import pickle

import numpy as np
import pytest
import torch

from cesynth.io import Stack
from cesynth.train.data import PatchSampler


def test_random_batch_is_a_function_of_seed_epoch_step(stacks):
    sampler = PatchSampler(stacks, ["t1", "t2"], "ce_t1", [3, 16, 16])
    a, b = sampler.random_batch(3, 0, 1, 2), sampler.random_batch(3, 0, 1, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], sampler.random_batch(3, 0, 1, 3)[0])
    x, y, m = a
    assert x.shape == (3, 2, 3, 16, 16) and y.shape == m.shape == (3, 1, 3, 16, 16)


def test_patches_are_cut_from_the_stacks_at_their_positions(stacks):
    sampler = PatchSampler(stacks, ["t1", "t2"], "ce_t1", [3, 16, 16])
    (scan, z0, y0, x0), = sampler.random_positions(1, 5, 0, 0)
    x, y, _ = sampler.random_batch(1, 5, 0, 0)
    stack = Stack(stacks[scan])
    np.testing.assert_array_equal(x[0, 1], stack["t2"][z0:z0 + 3, y0:y0 + 16, x0:x0 + 16])
    np.testing.assert_array_equal(y[0, 0], stack["ce_t1"][z0:z0 + 3, y0:y0 + 16, x0:x0 + 16])
    assert stack["brain_mask"][z0 + 1].any(), "the centre slice of a patch contains brain"


def test_pickled_sampler_reopens_memory_maps_instead_of_copying_volumes(stacks):
    sampler = PatchSampler(stacks, ["t1"], "ce_t1", [3, 16, 16])
    data = pickle.dumps(sampler)
    assert len(data) < 10_000  # paths, not the 4 x 12 x 32 x 32 voxels
    copy = pickle.loads(data)
    assert all(torch.equal(p, q) for p, q in zip(copy.random_batch(2, 1, 0, 0), sampler.random_batch(2, 1, 0, 0)))


def test_patch_larger_than_volume_is_refused(stacks):
    with pytest.raises(ValueError, match="larger than the volumes"):
        PatchSampler(stacks, ["t1"], "ce_t1", [3, 64, 16])


def test_patches_are_centred_on_brain_and_enhancing_voxels_are_oversampled(stacks):
    patch = [3, 8, 8]
    plain = PatchSampler(stacks, ["t1"], "ce_t1", patch)
    oversampled = PatchSampler(stacks, ["t1"], "ce_t1", patch, enhancing=0.5)

    def enhancing_share(sampler):
        masks = [sampler.patch_at(*p)[2] for step in range(60) for p in sampler.random_positions(4, 0, 0, step)]
        return np.mean([m.any() for m in masks])

    for scan, z0, y0, x0 in plain.random_positions(40, 0, 0, 0):
        assert Stack(stacks[scan])["brain_mask"][z0 + 1, y0 + 4, x0 + 4], "patch centre lies in the brain"
    plain_share, over_share = enhancing_share(plain), enhancing_share(oversampled)
    assert over_share >= 0.5 and over_share > plain_share + 0.2
    with pytest.raises(ValueError, match=r"enhancing patches must lie in \[0, 1\]"):
        PatchSampler(stacks, ["t1"], "ce_t1", patch, enhancing=1.5)
