"""SSIM and PSNR, written once for the training loss, the validation curves and the test metrics.

SSIM (Wang et al. 2004): Gaussian window of WINDOW x WINDOW pixels (sigma SIGMA), constants K1, K2, over 2-D
slices, 'valid' filtering: the map covers only the pixels where the whole window fits, i.e. RADIUS pixels
from each border are left out. That is what TF's ``tf.image.ssim`` does (the reference code's loss) and what
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
averages. The loss runs it in float32 on the training device, the metrics in float64 on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cesynth.preprocess.intensity import DATA_RANGE

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
RADIUS = (WINDOW - 1) // 2  # border pixels outside the 'valid' map (skimage: truncate 3.5 x sigma 1.5 -> 5)
# Slices filtered at once by the metrics: bounds the float64 intermediates (about ten maps of 16 paper-size
# 256 x 192 slices, 60 MB) whatever the volume's depth.
SLICES_PER_PASS = 16


def gaussian_window(window: int, sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    coords = torch.arange(window, dtype=dtype, device=device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_maps(x: torch.Tensor, y: torch.Tensor, data_range=DATA_RANGE, window=WINDOW, sigma=SIGMA, k1=K1, k2=K2):
    """Per-pixel SSIM and contrast-structure maps of (N, 1, H, W) images, 'valid' filtering, in their dtype."""
    if min(x.shape[-2:]) < window:
        raise ValueError(f"slice {tuple(x.shape[-2:])} smaller than SSIM window {window}")
    g = gaussian_window(window, sigma, x.dtype, x.device)
    # Separable Gaussian: one pass along W then one along H.
    gw, gh = g.view(1, 1, 1, window), g.view(1, 1, window, 1)

    def filt(t):
        return F.conv2d(F.conv2d(t, gw), gh)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance * cs, cs


def ssim_map_slices(gt: np.ndarray, pred: np.ndarray, data_range=DATA_RANGE) -> np.ndarray:
    """SSIM maps (H - 2 RADIUS, W - 2 RADIUS, Z) of the axial slices of two (H, W, Z) volumes, in float64."""
    def slices(volume, start):
        part = volume[..., start:start + SLICES_PER_PASS]
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(part, -1, 0), dtype=np.float64))[:, None]

    with torch.no_grad():
        maps = [ssim_maps(slices(gt, z), slices(pred, z), data_range)[0][:, 0].numpy()
                for z in range(0, gt.shape[-1], SLICES_PER_PASS)]
    return np.moveaxis(np.concatenate(maps), 0, -1)


def psnr(mse: float, max_i: float) -> float:
    """10 log10(MAX_I^2 / MSE) in dB (inf for MSE 0)."""
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(max_i**2 / mse))
