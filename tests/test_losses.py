import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from cesynth.train.losses import SynthesisLoss, ms_ssim_slices, ssim_slices


def _pair(shape, noise, seed=0):
    """Smoothed random target in [0, 1] and a noisy prediction of it."""
    rng = np.random.default_rng(seed)
    target = gaussian_filter(rng.random(shape), sigma=(0, 0, 0, 2, 2))
    target = (target - target.min()) / (target.max() - target.min())
    pred = np.clip(target + noise * rng.standard_normal(shape), 0, 1)
    return torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)


@pytest.mark.parametrize("smooth", [True, False])
def test_ssim_slices_matches_skimage(smooth):
    rng = np.random.default_rng(1)
    shape = (2, 1, 3, 40, 33)
    if smooth:
        pred, target = _pair(shape, 0.1)
    else:
        pred = torch.tensor(rng.random(shape), dtype=torch.float32)
        target = torch.tensor(rng.random(shape), dtype=torch.float32)
    expected = np.mean([
        structural_similarity(
            target[b, 0, d].double().numpy(), pred[b, 0, d].double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )
        for b in range(shape[0]) for d in range(shape[2])
    ])
    assert ssim_slices(pred, target).item() == pytest.approx(expected, abs=1e-4)


def test_ssim_slices_identical_is_one():
    pred, _ = _pair((1, 1, 3, 24, 24), 0.0)
    assert ssim_slices(pred, pred).item() == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_identical_is_one():
    pred, _ = _pair((1, 1, 2, 180, 180), 0.0)
    assert ms_ssim_slices(pred, pred).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("size", [180, 64, 11])
def test_ms_ssim_monotone_in_noise_and_bounded(size):
    values = []
    for noise in (0.02, 0.1, 0.3):
        pred, target = _pair((2, 1, 2, size, size + 7), noise)
        values.append(ms_ssim_slices(pred, target).item())
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] > values[1] > values[2]


def test_ms_ssim_single_scale_equals_ssim():
    # 15x15 fits only one 11x11 scale, so MS-SSIM degenerates to SSIM.
    pred, target = _pair((1, 1, 3, 15, 15), 0.1)
    assert ms_ssim_slices(pred, target).item() == pytest.approx(ssim_slices(pred, target).item(), abs=1e-6)


def test_ssim_rejects_too_small_slices():
    x = torch.zeros(1, 1, 3, 8, 8)
    with pytest.raises(ValueError):
        ssim_slices(x, x)


def _tiny():
    target = torch.zeros(1, 1, 3, 16, 16)
    pred = target.clone()
    pred[0, 0, 1, :4, :4] = 0.5  # 16 voxels off by 0.5
    mask = torch.zeros_like(target)
    mask[0, 0, 1, :2, :4] = 1  # 8 mask voxels, all inside the error patch
    return pred, target, mask


@pytest.mark.parametrize("local_norm,expected_local", [("mask", 0.5), ("all", 8 * 0.5 / 768)])
def test_loss_terms_by_hand(local_norm, expected_local):
    pred, target, mask = _tiny()
    total, terms = SynthesisLoss(local_norm=local_norm)(pred, target, mask)
    assert terms["mae"] == pytest.approx(16 * 0.5 / 768)
    assert terms["local"] == pytest.approx(expected_local)
    expected_ssim = 1 - ssim_slices(pred, target).item()
    assert terms["ssim"] == pytest.approx(expected_ssim)
    assert terms["total"] == pytest.approx(terms["mae"] + expected_ssim + expected_local, rel=1e-6)
    assert total.item() == pytest.approx(terms["total"])
    assert set(terms) == {"mae", "ssim", "local", "total"}


def test_mse_pixel_term_by_hand():
    pred, target, mask = _tiny()
    total, terms = SynthesisLoss(lambdas=(1.0, 0.0, 0.0), pixel="mse")(pred, target, mask)
    assert set(terms) == {"mse", "ssim", "local", "total"}
    assert terms["mse"] == pytest.approx(16 * 0.25 / 768) and total.item() == pytest.approx(terms["mse"])


def test_empty_mask_local_is_zero():
    pred, target, mask = _tiny()
    _, terms = SynthesisLoss()(pred, target, torch.zeros_like(mask))
    assert terms["local"] == 0.0


def test_lambdas_weighting():
    pred, target, mask = _tiny()
    _, t = SynthesisLoss()(pred, target, mask)
    total, _ = SynthesisLoss(lambdas=(0.1, 0.1, 10.0))(pred, target, mask)
    assert total.item() == pytest.approx(0.1 * t["mae"] + 0.1 * t["ssim"] + 10 * t["local"], rel=1e-6)


@pytest.mark.parametrize("ssim", ["ssim", "ms-ssim"])
def test_gradients_flow(ssim):
    pred, target = _pair((2, 1, 3, 32, 32), 0.1)
    pred.requires_grad_(True)
    mask = (target > 0.6).float()
    total, _ = SynthesisLoss(ssim=ssim)(pred, target, mask)
    total.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_bf16_autocast_matches_float32():
    pred, target = _pair((1, 1, 3, 32, 32), 0.1)
    mask = (target > 0.6).float()
    loss = SynthesisLoss(ssim="ms-ssim")
    ref, _ = loss(pred, target, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = loss(pred.bfloat16(), target.bfloat16(), mask)
    assert out.dtype == torch.float32
    # Only the bf16 rounding of the inputs differs.
    assert out.item() == pytest.approx(ref.item(), abs=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, target = _pair((1, 1, 3, 32, 32), 0.1)
    mask = (target > 0.6).float()
    loss = SynthesisLoss(ssim="ms-ssim")
    cpu, _ = loss(pred, target, mask)
    gpu, _ = loss(pred.cuda(), target.cuda(), mask.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), abs=1e-5)


def test_invalid_options():
    with pytest.raises(ValueError):
        SynthesisLoss(ssim="psnr")
    with pytest.raises(ValueError):
        SynthesisLoss(local_norm="none")
