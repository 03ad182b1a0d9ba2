import nibabel as nib
import numpy as np
import torch

from cesynth.inference import sliding_window, synthesize_scan
from cesynth.io import Stack
from cesynth.models import build_model
from cesynth.training import save_weights


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


def test_synthesize_scan_writes_masked_nifti_in_model_space(stacks, tmp_path):
    torch.manual_seed(0)
    spec = {"architecture": "hrfcn3d", "inputs": ["t1", "t2"], "width": 0.0625}
    model = build_model("hrfcn3d", 2, 0.0625).eval()
    save_weights(model, spec, {"target": "ce_t1", "patch": [3, 32, 32]}, [], tmp_path / "w.pt")
    payload = torch.load(tmp_path / "w.pt", weights_only=False)
    pred = synthesize_scan(model, payload, stacks[0], tmp_path / "synth.nii.gz")
    img = nib.load(tmp_path / "synth.nii.gz")
    stack = Stack(stacks[0])
    np.testing.assert_allclose(img.affine, stack.affine)
    assert img.shape == stack.to_xyz(pred).shape
    brain = stack.to_xyz(np.asarray(stack["brain_mask"])) > 0
    data = img.get_fdata()
    assert data[~brain].max() == 0 and data[brain].max() > 0 and data.max() <= 1
    assert b"SYNTHETIC" in img.header["descrip"].tobytes()
