"""The intensity contract of model space: every channel of a preprocessed stack lies in [LOW, HIGH] = [0, 1].

Preprocessing puts it there (:mod:`cesynth.preprocess.preprocessing`: each equalization maps brain voxels into [0, 1],
background 0; the masks are 0/1), and five places rely on it:

* the ``direct`` output's sigmoid draws a CE-T1 in (0, 1) (:mod:`cesynth.nets.models`);
* inference clips every synthesis to the range (:func:`clip`; :mod:`cesynth.infer.inference`);
* validation clamps its prediction to the range before the PSNR (:mod:`cesynth.train.training`);
* SSIM's data range, in the loss and in the metrics, is the range's width (:data:`DATA_RANGE`;
  :mod:`cesynth.evaluate.similarity`), and so is the "reference" protocol's PSNR peak (:mod:`cesynth.evaluate.metrics`);
* the enhancement thresholds (``preprocess.enhancement_delta``, ``evaluation.enhancement_delta``) are absolute
  differences in these units.

A normalisation that leaves the range (a z-score, say) would break all five silently, so stacks are checked
when they are written and when they are read (:func:`check_stack`).
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 0.0, 1.0
DATA_RANGE = HIGH - LOW


def clip(volume):
    """``volume`` (numpy array or torch tensor) clipped to the model-space range."""
    return volume.clamp(LOW, HIGH) if hasattr(volume, "clamp") else np.clip(volume, LOW, HIGH)


def check_stack(stack: np.ndarray, channels, path) -> None:
    """Refuse a (C, Z, Y, X) stack with a channel outside [LOW, HIGH] (or not finite), naming ``path``,
    the channels and their ranges."""
    bad = []
    for name, channel in zip(channels, stack):
        low, high = float(np.min(channel)), float(np.max(channel))
        if not (LOW <= low and high <= HIGH):  # NaN fails too
            bad.append(f"{name} [{low:.4g}, {high:.4g}]")
    if bad:
        raise ValueError(f"{path}: channel(s) {', '.join(bad)} outside the model-space intensity range "
                         f"[{LOW:g}, {HIGH:g}] (cesynth/preprocess/intensity.py); preprocess it with an equalization "
                         "that maps into it")
