"""The model-space intensity contract (cesynth/preprocess/intensity.py): every stack channel in [0, 1], checked on write
and read, and every equalization maps into it."""

import json

import numpy as np
import pytest

from cesynth.io import Stack, save_stack
from cesynth.preprocess import intensity
from cesynth.preprocess.preprocessing import EQUALIZATION_METHODS, equalize
from conftest import make_stack


def test_a_stack_outside_the_range_is_not_written(tmp_path):
    rng = np.random.default_rng(0)
    t1 = rng.normal(size=(4, 16, 16)).astype(np.float32)  # a z-score: the normalisation the contract rules out
    stack = np.stack([t1, np.ones_like(t1)])
    with pytest.raises(ValueError) as caught:
        save_stack(stack, ["t1", "brain_mask"], np.eye(4), tmp_path / "S_desc-preproc.npy", tmp_path / "S.json")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'S_desc-preproc.npy'}: channel(s) t1 [") and "brain_mask" not in message
    assert "outside the model-space intensity range [0, 1]" in message
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_stack_changed_on_disk_is_refused_on_reading(tmp_path):
    path = make_stack(tmp_path / "S_desc-preproc.npy", seed=0)
    assert Stack(path).has("t1")  # as written: in range
    data = np.load(path)
    channels = json.loads(path.with_suffix(".json").read_text())["channels"]
    data[channels.index("ce_t1"), 0, 0, 0] = np.nan
    data[channels.index("t2"), 0, 0, 0] = 1.5
    np.save(path, data)
    with pytest.raises(ValueError, match=r"S_desc-preproc.npy: channel\(s\) t2 \[0, 1.5\], ce_t1 \[nan, nan\] outside"):
        Stack(path)


@pytest.mark.parametrize("method", EQUALIZATION_METHODS)
def test_every_equalization_maps_into_the_range(method):
    rng = np.random.default_rng(1)
    volume = np.exp(rng.normal(3, 1, size=(12, 12, 12))).astype(np.float32)  # skewed, with outliers
    volume[0, 0, 0] = 1e6
    brain = np.zeros(volume.shape, bool)
    brain[2:10, 2:10, 2:10] = True
    out = equalize(volume, brain, method)
    assert out[brain].min() >= intensity.LOW and out[brain].max() <= intensity.HIGH
    assert (out[~brain] == 0).all() and out[brain].std() > 0.05


def test_clip_keeps_numpy_and_torch_in_the_range():
    import torch

    values = [-0.5, 0.25, 1.5]
    assert intensity.clip(np.array(values)).tolist() == [0.0, 0.25, 1.0]
    assert intensity.clip(torch.tensor(values)).tolist() == [0.0, 0.25, 1.0]
