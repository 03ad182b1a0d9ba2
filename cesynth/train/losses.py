"""Training losses for CE-T1 synthesis (Chen et al., section III-C).

Tensors are ``(B, 1, D, H, W)`` with D the slice axis; SSIM terms are computed
per 2-D ``(H, W)`` slice, as in the paper and the Keras reference code.

Border convention: all SSIM filtering is 'valid' (no padding), i.e. the SSIM
map is only evaluated where the whole 11x11 Gaussian window fits. This is what
TF's ``tf.image.ssim``/``ssim_multiscale`` do (the reference code), and it gives
the same mean as ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, which crops
a ``(win-1)//2`` border before averaging.

All SSIM arithmetic runs in float32 with autocast disabled: the small constants
C1 = 1e-4 and the variance differences underflow/cancel badly in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cesynth.evaluate.similarity import K1, K2, SIGMA, WINDOW, ssim_maps
from cesynth.preprocess.intensity import DATA_RANGE

# TF ssim_multiscale power factors (Wang et al. 2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LOCAL_NORMS = ("mask", "all")  # training.local_norm
PIXEL_LOSSES = ("mae", "mse")  # training.pixel_loss


def _to_slices(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, D, H, W) -> (B*D, 1, H, W) float32."""
    if x.ndim != 5 or x.shape[1] != 1:
        raise ValueError(f"expected (B, 1, D, H, W), got {tuple(x.shape)}")
    b, _, d, h, w = x.shape
    return x.float().permute(0, 2, 1, 3, 4).reshape(b * d, 1, h, w)


def _ssim_cs(x, y, data_range, window, sigma, k1, k2):
    """Per-image mean SSIM and mean contrast-structure term (:func:`cesynth.evaluate.similarity.ssim_maps`).

    x, y: (N, 1, H, W) float32. Returns two (N,) tensors.
    """
    ssim, cs = ssim_maps(x, y, data_range, window, sigma, k1, k2)
    return ssim.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ssim_slices(pred, target, data_range=DATA_RANGE, window=WINDOW, sigma=SIGMA, k1=K1, k2=K2):
    """Mean SSIM over all B*D axial slices (Gaussian window, 'valid' border)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        ssim, _ = _ssim_cs(_to_slices(pred), _to_slices(target), data_range, window, sigma, k1, k2)
        return ssim.mean()


def ms_ssim_slices(
    pred,
    target,
    data_range=DATA_RANGE,
    window=WINDOW,
    sigma=SIGMA,
    k1=K1,
    k2=K2,
    weights=MS_SSIM_WEIGHTS,
):
    """Mean multi-scale SSIM over all B*D slices, following tf.image.ssim_multiscale.

    Between scales the image is 2x2 average-pooled, after replicating the last
    row/column when a side is odd (TF pads 'SYMMETRIC' by the remainder).
    Negative cs/ssim values are zeroed before the power, as TF's relu does.

    Small images: TF requires the coarsest scale to still fit the window
    (H, W >= 176 for 5 scales). Here the number of scales is reduced to the
    largest s with ``ceil(min(H, W) / 2**(s-1)) >= window`` and the first s weights
    are renormalised to sum to 1; with s = 1 this is plain SSIM.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x, y = _to_slices(pred), _to_slices(target)
        side = min(x.shape[-2:])
        if side < window:
            raise ValueError(f"slice {tuple(x.shape[-2:])} smaller than SSIM window {window}")
        n_scales = 1
        while n_scales < len(weights) and -(-side // 2**n_scales) >= window:
            n_scales += 1
        w = torch.tensor(weights[:n_scales], dtype=torch.float32, device=x.device)
        w = w / w.sum()

        factors = []
        for scale in range(n_scales):
            ssim, cs = _ssim_cs(x, y, data_range, window, sigma, k1, k2)
            # cs at the finer scales, full SSIM (with luminance) at the coarsest.
            factors.append(ssim if scale == n_scales - 1 else cs)
            if scale < n_scales - 1:
                pad = (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)
                x = F.avg_pool2d(F.pad(x, pad, mode="replicate"), 2)
                y = F.avg_pool2d(F.pad(y, pad, mode="replicate"), 2)
        values = torch.stack(factors, dim=-1)  # (N, n_scales)
        positive = values > 0
        # where + clamp keeps exact zeros (TF relu) without inf*0 = nan gradients.
        powered = torch.where(positive, values.clamp_min(1e-12) ** w, torch.zeros_like(values))
        return powered.prod(dim=-1).mean()


SSIM_KINDS = {"ssim": ssim_slices, "ms-ssim": ms_ssim_slices}  # training.ssim


def histogram_distance(pred, target) -> torch.Tensor:
    """Mean over patches of the L1 distance between the sorted voxel values of prediction and target.

    For one patch this is the 1-D Wasserstein distance between the two intensity distributions: zero for
    any rearrangement of the target's voxels, so it asks for the right amount of bright tissue, not where.
    """
    return (pred.flatten(1).sort(dim=1).values - target.flatten(1).sort(dim=1).values).abs().mean()


class SynthesisLoss(torch.nn.Module):
    """L = l1*MAE + l2*(1 - mean slice SSIM) + l3*local (paper eq. 1).

    ``ssim="ssim"`` uses single-scale SSIM (paper text); ``"ms-ssim"`` uses the
    TF multi-scale SSIM of the reference code. The local term is
    ``sum |pred - target| * M`` divided by all voxels (``local_norm="all"``, the default as in config.yaml
    and config/paper.yaml; as the
    MAE term: the paper writes both as plain L1 norms and the reference code divides
    both by all voxels, so lambda3/lambda1 means what it means in the paper) or by the
    number of mask voxels (``"mask"``, clamped to >= 1: the local term becomes a mean
    error inside M, which scales lambda3 by about 1 / the mask fraction).
    ``pixel="mse"`` replaces the MAE term by the MSE (the reference code's 2D U-Net
    baseline); the term is then reported as ``mse``.

    ``histogram`` > 0 adds that weight times :func:`histogram_distance` (not in the paper): MAE and SSIM
    pull every voxel to its conditional mean, so a net that cannot tell which voxels are vessels or
    enhancing rims draws none of them, and an image without its bright tail looks unlike a CE-T1 to the
    eye and to any metric that windows each image by its own percentiles (BraSyn's).
    """

    def __init__(self, lambdas=(1.0, 1.0, 1.0), ssim="ssim", local_norm="all", pixel="mae", histogram=0.0):
        super().__init__()
        if ssim not in SSIM_KINDS:
            raise ValueError(f"ssim must be one of {tuple(SSIM_KINDS)}, got {ssim!r}")
        if local_norm not in LOCAL_NORMS:
            raise ValueError(f"local_norm must be one of {LOCAL_NORMS}, got {local_norm!r}")
        if pixel not in PIXEL_LOSSES:
            raise ValueError(f"pixel loss must be one of {PIXEL_LOSSES}, got {pixel!r}")
        self.lambdas = tuple(float(v) for v in lambdas)
        self.ssim_fn = SSIM_KINDS[ssim]
        self.local_norm = local_norm
        self.pixel = pixel
        self.histogram = float(histogram)

    def forward(self, pred, target, enhancement_mask):
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred, target = pred.float(), target.float()
            mask = enhancement_mask.float()
            abs_err = (pred - target).abs()
            pixel = abs_err.mean() if self.pixel == "mae" else (abs_err**2).mean()
            ssim_term = 1.0 - self.ssim_fn(pred, target)
            denom = mask.sum().clamp_min(1.0) if self.local_norm == "mask" else abs_err.numel()
            local = (abs_err * mask).sum() / denom
            l1, l2, l3 = self.lambdas
            total = l1 * pixel + l2 * ssim_term + l3 * local
            terms = {self.pixel: pixel, "ssim": ssim_term, "local": local}
            if self.histogram:
                terms["histogram"] = histogram_distance(pred, target)
                total = total + self.histogram * terms["histogram"]
        return total, {**{k: v.item() for k, v in terms.items()}, "total": total.item()}
