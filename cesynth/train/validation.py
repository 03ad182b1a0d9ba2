"""The validation metric of a training stage: losses and brain PSNR of whole held-out scans (the validation curves)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from cesynth.evaluate import similarity
from cesynth.preprocess import intensity


@torch.no_grad()
def evaluate_loss(model, sampler, loss_fn, batch_size, device, autocast=nullcontext()):
    """Validation losses and brain PSNR of every held-out scan, the PSNR defined as the test metric's.

    Each scan is covered by non-overlapping windows of the training depth (the reference code's
    tiling), predicted on whole slices and clipped to the model-space range like a synthesis
    (:mod:`cesynth.preprocess.intensity`); ``val_psnr`` is the mean over scans of 10 log10(MAX_I^2 / MSE) over the
    scan's brain voxels with MAX_I = the target's maximum there (metrics.py, "paper" protocol). The test metric
    averages overlapping windows instead (``inference.stride``), so it can differ slightly.
    """
    model.eval()
    total, count, psnrs = {}, 0, []
    for scan_index in range(len(sampler.stacks)):
        squared, n_brain, max_i = 0.0, 0, 0.0
        windows = list(sampler.brain_windows(scan_index))
        for i in range(0, len(windows), batch_size):
            x, y, m, brain = (torch.from_numpy(np.stack(a)).to(device) for a in zip(*windows[i:i + batch_size]))
            with autocast:
                pred = model(x)
            _, terms = loss_fn(pred.float(), y, m)
            for key, value in terms.items():
                total[key] = total.get(key, 0.0) + value * len(x)
            count += len(x)
            if brain.any():  # a window between two parts of a brain may hold none of it
                error = (intensity.clip(pred.float()) - y)[brain]
                squared += float((error.double() ** 2).sum())
                n_brain += int(brain.sum())
                max_i = max(max_i, float(y[brain].max()))
        if n_brain:
            psnrs.append(similarity.psnr(max(squared / n_brain, 1e-12), max_i))
    result = {f"val_{k}": v / max(count, 1) for k, v in total.items()}
    result["val_psnr"] = float(np.mean(psnrs)) if psnrs else float("nan")
    return result
