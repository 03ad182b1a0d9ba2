import nibabel as nib
import numpy as np
import pytest
import torch

from cesynth.infer.inference import InferenceSettings, Synthesizer, cpu_fast, slab_inference, slice_halo, sliding_window
from cesynth.io import Stack
from cesynth.nets.device import cpu_bf16_native
from cesynth.nets.models import ARCHITECTURES, SynthesisNet, build_model
from cesynth.nets.weights import load_weights, save_weights
from cesynth.train.training import StageJob, TrainingSettings, train_stage
from test_training import SPEC, settings


class SliceMean(torch.nn.Module):
    """A model whose output for a slice depends on its neighbours: exposes window blending."""

    def forward(self, x):
        return torch.nn.functional.avg_pool3d(x.mean(1, keepdim=True), (3, 1, 1), stride=1, padding=(1, 0, 0),
                                              count_include_pad=False)


def test_sliding_window_equals_whole_volume_for_slice_wise_models():
    torch.manual_seed(0)
    model = build_model("unet2d", 2, 0.0625).eval()
    volume = np.random.default_rng(0).random((2, 11, 32, 32)).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(volume)[None])[0, 0].numpy()
    for window, stride, batch in [(3, 1, 4), (3, 2, 1), (5, 3, 2)]:
        np.testing.assert_allclose(sliding_window(model, volume, window, stride, batch), whole, atol=1e-5)


def test_sliding_window_averages_overlapping_windows():
    volume = np.arange(6, dtype=np.float32)[None, :, None, None] * np.ones((1, 6, 2, 2), np.float32)
    out = sliding_window(SliceMean(), volume, window=3, stride=1, batch_size=2)
    # slice 0 is only in window [0,3): mean(0,1) = 0.5; slice 2 is in three windows
    expected_2 = np.mean([np.mean([1, 2]), np.mean([1, 2, 3]), np.mean([2, 3])])
    assert out[0, 0, 0] == 0.5 and np.isclose(out[2, 0, 0], expected_2)


def test_synthesizer_writes_masked_nifti_in_model_space(stacks, tmp_path):
    torch.manual_seed(0)
    spec = {"architecture": "hrfcn3d", "inputs": ["t1", "t2"], "width": 0.0625}
    model = build_model("hrfcn3d", 2, 0.0625).eval()
    save_weights(model, spec, [], tmp_path / "w.pt", target="ce_t1", patch=[3, 32, 32])
    payload = torch.load(tmp_path / "w.pt")
    pred = Synthesizer(model, payload).write(stacks[0], tmp_path / "synth.nii.gz")
    img = nib.load(tmp_path / "synth.nii.gz")
    stack = Stack(stacks[0])
    np.testing.assert_allclose(img.affine, stack.affine)
    assert img.shape == stack.to_xyz(pred).shape
    brain = stack.to_xyz(np.asarray(stack["brain_mask"])) > 0
    data = img.get_fdata()
    assert data[~brain].max() == 0 and data[brain].max() > 0 and data.max() <= 1
    assert b"SYNTHETIC" in img.header["descrip"].tobytes()


@pytest.mark.parametrize("architecture, halo", [("unet3d", 31), ("hrfcn3d", 40), ("unet2d", 0), ("hrfcn2d", 0)])
def test_slice_halo_is_half_the_receptive_field_along_the_slices(architecture, halo):
    torch.set_num_threads(1)
    model = build_model(architecture, 3, 0.0625)
    assert slice_halo(model) == halo
    assert model.slicewise == (halo == 0)  # Synthesizer.predict skips overlapping windows for slice-wise nets


@pytest.mark.parametrize("architecture", ["unet3d", "hrfcn3d"])
def test_slab_inference_equals_whole_volume_and_needs_the_whole_halo(architecture):
    """In float64, so that rounding (~1e-5 in float32 through hrfcn3d's 40 layers) cannot hide the
    tail of the receptive field: one slice less of context than slice_halo changes the result."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(architecture, 2, 0.0625).eval().double()
    halo = slice_halo(model)
    volume = np.random.default_rng(0).random((2, 2 * halo + 12, 16, 16))
    with torch.no_grad():
        whole = model(torch.from_numpy(volume)[None])[0, 0].numpy()
    # slab 5: slabs whose context is cut by the first slice, by none and by the last slice
    rounding = np.abs(slab_inference(model, volume, 5, halo) - whole).max()
    assert rounding < 1e-11
    np.testing.assert_array_equal(slab_inference(model, volume, 0, 0), whole)  # slab 0: one pass
    # tiny but far above rounding: the edge of the receptive field is reached by few paths
    assert np.abs(slab_inference(model, volume, 5, halo - 1) - whole).max() > 10 * rounding


def test_synthesizer_slab_tiling_matches_one_pass(stacks, tmp_path):
    torch.set_num_threads(1)
    model = build_model("unet3d", 3, 0.0625).eval()
    spec = {"architecture": "unet3d", "inputs": ["t1", "t2", "adc"], "width": 0.0625}
    payload = {"model_spec": spec, "patch": [3, 32, 32]}
    tiled, whole = (Synthesizer(model, payload, InferenceSettings.plain(tiling="slab", slab=slab)).write(stacks[0], out)
                    for slab, out in ((4, tmp_path / "a.nii.gz"), (0, tmp_path / "b.nii.gz")))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="tiling"):
        InferenceSettings.plain(tiling="tiles")


def test_cpu_bf16_inference_of_a_trained_model_stays_close_to_float32(stacks, tmp_path):
    s = settings(epochs=1, steps=30)
    train_stage(StageJob(train_stacks=stacks[:3], val_stacks=[], model_spec={**SPEC, "architecture": "hrfcn3d"},
                         stage=s["stage1"], training=TrainingSettings(**s), weights_out=tmp_path / "w.pt",
                         history_out=tmp_path / "h.tsv",
                         checkpoint_dir=tmp_path / "ckpt", device="cpu"), log=lambda *_: None)
    model, payload = load_weights(tmp_path / "w.pt")
    float32 = Synthesizer(model, payload).write(stacks[3], tmp_path / "fp32.nii.gz")
    fast = cpu_fast(model)  # batch norm folded, channels-last: the same function in float32
    folded = Synthesizer(fast, payload).write(stacks[3], tmp_path / "folded.nii.gz")
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())
    np.testing.assert_allclose(folded, float32, atol=1e-5)
    bf16 = Synthesizer(fast, payload, InferenceSettings.plain(cpu_bf16=True)).write(stacks[3], tmp_path / "bf16.nii.gz")
    stack = Stack(stacks[3])
    brain = np.asarray(stack["brain_mask"]) > 0
    target = np.asarray(stack["ce_t1"])[brain]
    error = np.abs(bf16 - float32)[brain]
    assert error.max() > 0  # bf16 was used
    # bf16 keeps 8 mantissa bits: about 1/256 of the [0, 1] range per voxel; the fast CPU path (inference.cpu_bf16)
    # must stay within 0.003 of float32 on average, with the same error against the target
    assert error.mean() < 0.003 and error.max() < 0.05
    assert np.abs(bf16[brain] - target).mean() == pytest.approx(np.abs(float32[brain] - target).mean(), abs=0.01)
    # config.yaml's "auto": bf16 where this CPU computes it natively, float32 elsewhere
    auto = Synthesizer(fast, payload, InferenceSettings.plain(cpu_bf16="auto")).write(stacks[3],
                                                                                  tmp_path / "auto.nii.gz")
    np.testing.assert_array_equal(auto, bf16 if cpu_bf16_native() else folded)


class GlobalContext(SynthesisNet):
    """A toy net whose every output voxel sees the mean over all slices: no finite halo holds its field."""
    architecture = "toy_global"

    def __init__(self, n_inputs, width=1.0, output="direct"):
        super().__init__(n_inputs, output)
        self.conv = torch.nn.Conv3d(n_inputs, 1, 1)

    def _forward(self, x):
        return self.conv(x + x.mean(dim=2, keepdim=True))


def test_the_halo_of_a_model_with_global_context_is_refused(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "toy_global", GlobalContext)
    with pytest.raises(ValueError, match="toy_global: its receptive field spans more than 543 slices"):
        slice_halo(GlobalContext(1))
