import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cesynth.evaluate import metrics


@pytest.fixture
def vols():
    rng = np.random.default_rng(0)
    gt = gaussian_filter(rng.random((40, 36, 5)), sigma=(2, 2, 0))
    gt = (gt - gt.min()) / (gt.max() - gt.min())
    pred = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1)
    return gt, pred


def test_mae_psnr_by_hand():
    gt = np.zeros((2, 2, 1))
    pred = np.array([0.1, 0.3, 0.5, 0.9]).reshape(2, 2, 1)
    mask = np.array([True, True, False, False]).reshape(2, 2, 1)
    assert metrics.mae(gt, pred, mask) == pytest.approx(0.2)
    mse = (0.01 + 0.09) / 2
    assert metrics.psnr(gt, pred, mask, 0.5) == pytest.approx(10 * math.log10(0.25 / mse))


def test_empty_mask_is_nan(vols):
    gt, pred = vols
    empty = np.zeros(gt.shape, bool)
    assert math.isnan(metrics.mae(gt, pred, empty))
    assert math.isnan(metrics.psnr(gt, pred, empty, 1.0))
    assert math.isnan(metrics.ssim(gt, pred, empty))


def test_psnr_matches_skimage_full_mask(vols):
    gt, pred = vols
    full = np.ones(gt.shape, bool)
    expected = peak_signal_noise_ratio(gt, pred, data_range=1.0)
    assert metrics.psnr(gt, pred, full, 1.0) == pytest.approx(expected)


def test_ssim_reference_matches_skimage_defaults(vols):
    gt, pred = vols
    expected = np.mean([
        structural_similarity(gt[..., i], pred[..., i], data_range=1.0) for i in range(gt.shape[-1])
    ])
    assert metrics.ssim(gt, pred, protocol="reference") == pytest.approx(expected)


def test_ssim_reference_uses_only_slices_with_mask(vols):
    gt, pred = vols
    mask = np.zeros(gt.shape, bool)
    mask[10:12, 10:12, 2] = True
    expected = structural_similarity(gt[..., 2], pred[..., 2], data_range=1.0)
    assert metrics.ssim(gt, pred, mask, protocol="reference") == pytest.approx(expected)


def test_ssim_paper_full_mask_matches_skimage_gaussian(vols):
    gt, pred = vols
    expected = np.mean([
        structural_similarity(
            gt[..., i], pred[..., i], data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        for i in range(gt.shape[-1])
    ])
    full = np.ones(gt.shape, bool)
    assert metrics.ssim(gt, pred, full, protocol="paper") == pytest.approx(expected, abs=1e-10)
    assert metrics.ssim(gt, pred, protocol="paper") == pytest.approx(expected, abs=1e-10)


def test_ssim_paper_masked_averages_map_over_mask(vols):
    gt, pred = vols
    mask = np.zeros(gt.shape, bool)
    mask[12:20, 8:30, 1] = True
    mask[15:25, 15:25, 3] = True
    expected = []
    for i in (1, 3):
        _, smap = structural_similarity(
            gt[..., i], pred[..., i], data_range=1.0, full=True,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        expected.append(smap[mask[..., i]].mean())
    assert metrics.ssim(gt, pred, mask) == pytest.approx(np.mean(expected), abs=1e-10)


def test_ssim_rejects_unknown_protocol(vols):
    gt, pred = vols
    with pytest.raises(ValueError):
        metrics.ssim(gt, pred, protocol="brasyn")


def test_enhancement_dice_hand_cases():
    t1 = np.zeros((4, 1, 1))
    mask = np.ones((4, 1, 1), bool)
    gt = np.array([0.5, 0.5, 0.0, 0.0]).reshape(4, 1, 1)
    pred = np.array([0.5, 0.0, 0.5, 0.0]).reshape(4, 1, 1)
    out = metrics.enhancement_dice(gt, pred, t1, mask)
    assert out == {"dice": pytest.approx(0.5), "sensitivity": pytest.approx(0.5)}
    # Voxels outside the mask are ignored.
    mask[2] = False
    out = metrics.enhancement_dice(gt, pred, t1, mask)
    assert out["dice"] == pytest.approx(2 / 3)
    # Threshold is strict: a difference of exactly delta is not enhancing.
    out = metrics.enhancement_dice(gt, np.full_like(gt, 0.1), t1, np.ones_like(mask), delta=0.1)
    assert out == {"dice": 0.0, "sensitivity": 0.0}


def test_enhancement_dice_empty_conventions():
    z = np.zeros((3, 3, 1))
    out = metrics.enhancement_dice(z, z, z, np.ones(z.shape, bool))
    assert math.isnan(out["dice"]) and math.isnan(out["sensitivity"])
    pred = z.copy()
    pred[0, 0, 0] = 1.0
    out = metrics.enhancement_dice(z, pred, z, np.ones(z.shape, bool))
    assert out["dice"] == 0.0 and math.isnan(out["sensitivity"])


BRAIN_KEYS = {f"{m}_brain" for m in ("mae", "psnr", "ssim", "dice_enh", "sens_enh")}
TUMOUR_KEYS = {k.replace("_brain", "_tumour") for k in BRAIN_KEYS}


def test_scan_metrics_keys_and_nan_tumour(vols):
    gt, pred = vols
    brain = np.ones(gt.shape, bool)
    out = metrics.scan_metrics(gt, pred, np.zeros_like(gt), brain)
    brasyn = {f"brasyn_{k}" for k in ("psnr_brain", "mae_brain", "ssim_brain", "ssim_tumour", "ssim_healthy")}
    et = {"et_contrast", "et_contrast_truth", "et_dice", "et_dice_truth"}
    assert set(out) == BRAIN_KEYS | TUMOUR_KEYS | brasyn | et
    assert all(math.isnan(out[k]) for k in TUMOUR_KEYS | et | {"brasyn_ssim_tumour"})
    assert all(math.isfinite(out[k]) for k in BRAIN_KEYS | brasyn - {"brasyn_ssim_tumour"})


def test_brasyn_protocol_is_blind_to_each_images_own_linear_scale(vols):
    gt, pred = vols
    brain = np.zeros(gt.shape, bool)
    brain[5:35, 5:30, :] = True
    tumour = np.zeros(gt.shape, bool)
    tumour[15:22, 15:22, 1:3] = True
    gt, pred = gt * brain, pred * brain
    base = metrics.brasyn_metrics(gt, pred, brain, tumour)
    assert base == pytest.approx(metrics.brasyn_metrics(3 * gt, 0.5 * pred, brain, tumour))  # own percentiles each
    perfect = metrics.brasyn_metrics(gt, 7 * gt, brain, tumour)
    assert perfect["brasyn_psnr_brain"] > 100 and perfect["brasyn_ssim_tumour"] == pytest.approx(1.0)
    # by hand: percentile clip and scale, then PSNR with peak 1 over the brain
    lo, hi = np.percentile(gt[brain], [0.5, 99.5])
    g = np.clip((gt - lo) / (hi - lo), 0, 1)
    lo, hi = np.percentile(pred[brain], [0.5, 99.5])
    p = np.clip((pred - lo) / (hi - lo), 0, 1)
    assert base["brasyn_psnr_brain"] == pytest.approx(metrics.psnr(g, p, brain, 1.0))
    assert 0 < base["brasyn_ssim_tumour"] < 1 and 0 < base["brasyn_ssim_healthy"] < 1


def test_enhancing_tumour_contrast_and_dice():
    rng = np.random.default_rng(0)
    shape = (30, 30, 10)
    brain = np.zeros(shape, bool)
    brain[2:28, 2:28, :] = True
    tumour = np.zeros(shape, bool)
    tumour[8:20, 8:20, 3:7] = True
    enhancing = tumour.copy()
    enhancing[10:18, 10:18, 4:6] = False  # a ring around a necrotic core
    t1 = (1 + 0.05 * rng.standard_normal(shape)) * brain
    truth = t1 * np.where(enhancing, 1.6, 1.0)  # ET 60% brighter than normal brain
    half = t1 * np.where(enhancing, 1.3, 1.0)
    out = metrics.enhancing_tumour_metrics(truth, 2 * half, t1, brain, tumour, enhancing)  # scale does not matter
    assert out["et_contrast_truth"] == pytest.approx(0.6, abs=0.02)
    assert out["et_contrast"] == pytest.approx(0.3, abs=0.02)
    assert out["et_dice_truth"] == pytest.approx(1.0)
    assert out["et_dice"] < 0.7  # 30% above the T1 is the threshold: about half the ring passes by noise
    none = metrics.enhancing_tumour_metrics(truth, t1, t1, brain, tumour, enhancing)
    assert none["et_contrast"] == pytest.approx(0, abs=0.02) and none["et_dice"] == 0
    assert math.isnan(metrics.enhancing_tumour_metrics(truth, t1, t1, brain, tumour, np.zeros(shape, bool))["et_dice"])


def test_scan_metrics_max_i_per_protocol(vols):
    gt, pred = vols
    gt = 0.8 * gt  # brain max 0.8, so the two protocols' PSNR peaks differ
    brain = np.zeros(gt.shape, bool)
    brain[5:35, 5:30, :] = True
    tumour = np.zeros(gt.shape, bool)
    tumour[15:22, 15:22, 1:3] = True
    t1 = np.zeros_like(gt)
    paper = metrics.scan_metrics(gt, pred, t1, brain, tumour, protocol="paper")
    ref = metrics.scan_metrics(gt, pred, t1, brain, tumour, protocol="reference")
    assert paper["psnr_brain"] == pytest.approx(metrics.psnr(gt, pred, brain, gt[brain].max()))
    # one MAX_I for both regions: the maximum of the image (the paper's "max of image y"), not of the tumour
    assert paper["psnr_tumour"] == pytest.approx(metrics.psnr(gt, pred, tumour, gt[brain].max()))
    assert gt[brain].max() > gt[tumour].max()  # else the check above could not tell them apart
    assert ref["psnr_brain"] == pytest.approx(metrics.psnr(gt, pred, brain, 1.0))
    assert paper["mae_tumour"] == pytest.approx(metrics.mae(gt, pred, tumour))
    assert paper["ssim_brain"] == pytest.approx(metrics.ssim(gt, pred, brain))
    assert ref["ssim_brain"] == pytest.approx(metrics.ssim(gt, pred, brain, protocol="reference"))
    assert paper["dice_enh_tumour"] == pytest.approx(
        metrics.enhancement_dice(gt, pred, t1, tumour)["dice"]
    )


def test_the_metric_and_the_loss_share_one_ssim(vols):
    """cesynth.evaluate.similarity is the one SSIM: the metric (float64 volumes (X, Y, Z)) and the training loss
    (float32 tensors (B, 1, D, H, W)) agree to float32 rounding on the same slices; PSNR likewise."""
    import torch

    from cesynth.evaluate import similarity
    from cesynth.train.losses import ssim_slices

    gt, pred = vols
    as_batch = [torch.from_numpy(np.moveaxis(v, -1, 0)[None, None].astype(np.float32)) for v in (gt, pred)]
    loss_ssim = float(ssim_slices(as_batch[1], as_batch[0]))
    assert metrics.ssim(gt, pred, protocol="paper") == pytest.approx(loss_ssim, abs=1e-6)
    slices = np.moveaxis(similarity.ssim_map_slices(gt, pred), -1, 0)
    assert slices.shape == (gt.shape[-1], gt.shape[0] - 2 * similarity.RADIUS, gt.shape[1] - 2 * similarity.RADIUS)
    assert metrics.psnr(gt, pred, np.ones(gt.shape, bool), 1.0) == pytest.approx(
        similarity.psnr(float(np.mean((gt - pred) ** 2)), 1.0), abs=1e-12)
