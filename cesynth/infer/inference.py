"""Whole-volume synthesis, tiled along the slice axis.

``tiling="window"`` (default): the models are trained on blocks of ``window`` consecutive axial
slices; at inference every block position (stride ``stride``) is predicted and overlapping
predictions are averaged, so each slice is synthesised from the same kind of context the model
saw in training. ``stride=1`` (config/paper.yaml; the function's default) averages every overlapping window
(MONAI-style aggregation); ``stride=window`` (config.yaml's ``inference.stride: 3``) predicts non-overlapping windows
without blending, as the reference code does (the last window is moved back to end at the last
slice when the slice count is not a multiple of ``window``). Windows are batched
(``batch_size``) and only one batch lives on the device at a time, so memory does not grow with
the number of slices.

``tiling="slab"``: slabs of ``slab`` output slices, each predicted with ``slice_halo(model)``
slices of context on either side (half the model's receptive field along the slice axis), which
gives exactly the whole-volume prediction (up to float rounding) with bounded memory;
``slab: 0`` predicts the whole volume in one pass.

:class:`Synthesizer` applies a trained model with one :class:`InferenceSettings` (rules infer, uncertainty and
predict alike); ``inference.views`` averages the predictions of test-time views of the inputs (mirrored, moved) into
the synthesis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cesynth.io import Stack, save_nifti
from cesynth.nets.device import bf16_autocast, select_device, use_cpu_bf16
from cesynth.nets.summary import receptive_field
from cesynth.nets.weights import load_weights
from cesynth.preprocess import intensity

TILINGS = ("window", "slab")


def cpu_fast(model: torch.nn.Module) -> torch.nn.Module:
    """The CPU inference path of ``inference.cpu_bf16``: a copy with every batch norm folded into the
    convolution before it (eval mode: the same affine map, one pass over memory less) in channels-last
    layout (NDHWC; NHWC for the slice-wise 2D nets), where oneDNN's bf16 convolutions run fastest
    (BENCHMARKS.md: hrfcn3d 2.2x faster than bf16 in the default layout)."""
    model = copy.deepcopy(model).eval()
    for sequence in (m for m in model.modules() if isinstance(m, torch.nn.Sequential)):
        for i in range(1, len(sequence)):
            conv, norm = sequence[i - 1], sequence[i]
            if isinstance(conv, (torch.nn.Conv2d, torch.nn.Conv3d)) and \
                    isinstance(norm, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                sequence[i - 1], sequence[i] = fuse_conv_bn_eval(conv, norm), torch.nn.Identity()
    return model.to(memory_format=channels_last_format(model))


def channels_last_format(model) -> torch.memory_format:
    """The channels-last layout of a net's weights, in training and inference alike: NDHWC for 3D nets; the
    slice-wise 2D nets have 4-D weights, so NHWC."""
    return torch.channels_last if model.slicewise else torch.channels_last_3d


def _layout(x: torch.Tensor, model, cpu_bf16: bool) -> torch.Tensor:
    """Inputs of the fast CPU path in channels-last layout (the 2D nets reshape theirs internally)."""
    fast = cpu_bf16 and x.device.type == "cpu" and not model.slicewise
    return x.contiguous(memory_format=torch.channels_last_3d) if fast else x


@torch.no_grad()
def sliding_window(model, volume: np.ndarray, window: int, stride: int = 1, batch_size: int = 4,
                   device="cpu", amp=False, cpu_bf16=False) -> np.ndarray:
    """Predict (Z, Y, X) from inputs (M, Z, Y, X) by averaging overlapping slice windows.

    ``amp``: bf16 autocast on CUDA; ``cpu_bf16``: on the CPU (fast only on CPUs with AMX or AVX512-BF16).
    """
    device = torch.device(device)
    n_z = volume.shape[1]
    window = min(window, n_z)
    starts = list(range(0, n_z - window + 1, stride))
    if starts[-1] != n_z - window:  # always cover the last slices
        starts.append(n_z - window)
    total = np.zeros(volume.shape[1:], dtype=np.float64)
    counts = np.zeros(n_z, dtype=np.float64)
    autocast = bf16_autocast(device, amp, cpu_bf16)
    for i in range(0, len(starts), batch_size):
        batch_starts = starts[i:i + batch_size]
        x = _layout(torch.from_numpy(np.stack([volume[:, z:z + window] for z in batch_starts])).to(device), model,
                    cpu_bf16)
        with autocast:
            pred = model(x).float().cpu().numpy()[:, 0]
        for z, block in zip(batch_starts, pred):
            total[z:z + window] += block
            counts[z:z + window] += 1
    return (total / counts[:, None, None]).astype(np.float32)


@torch.no_grad()
def slab_inference(model, volume: np.ndarray, slab: int, halo: int, device="cpu", amp=False,
                   cpu_bf16=False) -> np.ndarray:
    """Predict (Z, Y, X) from inputs (M, Z, Y, X) in slabs of ``slab`` slices with ``halo`` slices of context.

    Equals ``model(volume)`` when ``halo >= slice_halo(model)``: no slice outside the context can
    reach a slab's outputs, and the volume's own edges are padded as in one pass. ``slab <= 0``: one pass.
    """
    device = torch.device(device)
    n_z = volume.shape[1]
    slab = n_z if slab <= 0 else slab
    out = np.empty(volume.shape[1:], dtype=np.promote_types(volume.dtype, np.float32))  # float64 for exactness tests
    for z0 in range(0, n_z, slab):
        z1 = min(z0 + slab, n_z)
        a, b = max(z0 - halo, 0), min(z1 + halo, n_z)
        x = _layout(torch.from_numpy(np.ascontiguousarray(volume[None, :, a:b])).to(device), model, cpu_bf16)
        with bf16_autocast(device, amp, cpu_bf16):
            out[z0:z1] = model(x)[0, 0, z0 - a:z1 - a].double().cpu().numpy()
    return out


# receptive_field is clipped to its probe patch, so the probe grows (depth 2d + 1) until the field fits inside it
# (built-in 3D nets: unet3d's field of 63 slices at the second probe, hrfcn3d's 81 at the third). A field wider
# than the last probe (33 doubled four times: more slices than an MRI volume has) is global context, which no
# slab halo can bound.
FIRST_PROBE_DEPTH, LAST_PROBE_DEPTH = 33, 543


def slice_halo(model) -> int:
    """Slices of input on either side that can influence an output slice (0 for the 2D nets).

    Raises ValueError for a model whose field along the slice axis is not bounded (global context)."""
    depth = FIRST_PROBE_DEPTH
    while depth <= LAST_PROBE_DEPTH:
        extent = receptive_field(model, (depth, model.size_divisor, model.size_divisor), model.n_inputs)[0]
        if extent < depth:
            return (extent - 1) // 2
        depth = 2 * depth + 1
    raise ValueError(f"{model.architecture}: its receptive field spans more than {LAST_PROBE_DEPTH} slices (global "
                     "context?), so no halo makes slabs equal to one whole-volume pass; use inference.tiling: "
                     "window")


# Test-time views: the synthesis may average the prediction of the scan with those of changed views of its inputs
# (``inference.views``); the uncertainty map is their spread (cesynth/infer/uncertainty.py). A view is undone exactly on
# its prediction, so every member predicts the same voxels of the same scan.
@dataclass(frozen=True)
class View:
    """One changed view of a (M, Z, Y, X) input: mirrored along X and/or moved by ``shift`` voxels (Z, Y, X).

    A shift pads zeros (the background of the preprocessed stacks) before the volume, in plane also after it
    up to a multiple of the net's ``size_divisor``, so nothing of the scan is cut off.
    """

    name: str
    flip_x: bool = False
    shift: tuple[int, int, int] = (0, 0, 0)

    def apply(self, volume: np.ndarray, divisor: int) -> np.ndarray:
        out = volume[..., ::-1] if self.flip_x else volume
        pads = [(0, 0), (self.shift[0], 0)]
        for size, s in zip(volume.shape[2:], self.shift[1:]):
            pads.append((s, -(size + s) % divisor))
        return np.ascontiguousarray(np.pad(out, pads))

    def invert(self, pred: np.ndarray, shape) -> np.ndarray:
        """The prediction (Z', Y', X') of :meth:`apply`'s volume, back on the scan's (Z, Y, X) grid."""
        z, y, x = self.shift
        out = pred[z:z + shape[0], y:y + shape[1], x:x + shape[2]]
        return out[..., ::-1] if self.flip_x else out


# The views ``inference.views`` and ``uncertainty.views`` may name (docs/uncertainty.md has what each adds).
VIEWS = {v.name: v for v in (
    View("flip_x", flip_x=True),
    View("z1", shift=(1, 0, 0)), View("z2", shift=(2, 0, 0)),
    View("yx1", shift=(0, 1, 1)), View("yx2", shift=(0, 2, 2)),
    View("flip_x_z1", flip_x=True, shift=(1, 0, 0)), View("flip_x_z2", flip_x=True, shift=(2, 0, 0)),
)}


def views_for(model, names) -> list[View]:
    """The named views that change a prediction of ``model``: a slice-wise (2D) net predicts every slice
    alone, so for it a view that differs from the scan or from an earlier view only by moved slice windows
    would repeat a prediction."""
    views = [VIEWS[n] for n in names]
    if not model.slicewise:
        return views
    seen, kept = {(False, (0, 0))}, []
    for view in views:
        key = (view.flip_x, view.shift[1:])
        if key not in seen:
            seen.add(key)
            kept.append(view)
    return kept


@dataclass(frozen=True)
class InferenceSettings:
    """How a volume is tiled and where it runs: the ``inference`` config section with the model's ``device`` and
    ``amp`` (:func:`cesynth.pipeline.plans.inference_settings`). No field has a default (config.yaml holds them);
    :meth:`plain` is the plainest run, for tools and tests."""
    stride: int
    batch_size: int
    tiling: str
    slab: int
    views: tuple[str, ...]  # test-time views averaged into the synthesis (names of VIEWS)
    cpu_bf16: bool | str  # or "auto": where the CPU computes bf16 natively
    device: str
    amp: bool

    def __post_init__(self):
        if self.tiling not in TILINGS:
            raise ValueError(f"inference tiling must be one of {TILINGS}, got {self.tiling!r}")
        object.__setattr__(self, "views", tuple(self.views))  # hashable, also when built from a config list

    @classmethod
    def plain(cls, **changes) -> "InferenceSettings":
        """Every overlapping window averaged, no test-time view, on the CPU in float32; ``changes`` override."""
        return cls(**{"stride": 1, "batch_size": 4, "tiling": "window", "slab": 0, "views": (), "cpu_bf16": False,
                      "device": "cpu", "amp": False, **changes})


class Synthesizer:
    """A trained model that synthesizes CE-T1 volumes with one :class:`InferenceSettings`: on its device, on the
    fast CPU path where ``cpu_bf16`` chooses it. The one way ``infer``, ``uncertainty`` and ``predict`` apply a
    model; ``payload`` is its weights file's (the inputs it reads, the training patch)."""

    def __init__(self, model, payload: dict, settings: InferenceSettings | None = None):
        settings = settings or InferenceSettings.plain()
        self.settings, self.payload = settings, payload
        self.device = select_device(settings.device)
        self.cpu_bf16 = use_cpu_bf16(settings.cpu_bf16) and self.device.type == "cpu"
        self.model = cpu_fast(model) if self.cpu_bf16 else model
        self.window = payload["patch"][0]
        self.halo = slice_halo(self.model) if settings.tiling == "slab" else None
        self.views = views_for(self.model, settings.views)

    @classmethod
    def load(cls, weights, settings: InferenceSettings) -> "Synthesizer":
        model, payload = load_weights(weights, select_device(settings.device))
        return cls(model, payload, settings)

    def inputs(self, stack: Stack) -> np.ndarray:
        """The (M, Z, Y, X) input channels of a preprocessed stack, in the model's order."""
        return np.ascontiguousarray(stack.get(self.payload["model_spec"]["inputs"]))

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(Z, Y, X) prediction of inputs (M, Z, Y, X) as they are (no view), unclipped and unmasked."""
        s = self.settings
        if s.tiling == "slab":
            return slab_inference(self.model, inputs, s.slab, self.halo, self.device, s.amp, self.cpu_bf16)
        # A slice-wise (2D) net predicts a slice identically in every window: overlap would only repeat work.
        stride = self.window if self.model.slicewise else s.stride
        return sliding_window(self.model, inputs, self.window, stride, s.batch_size, self.device, s.amp,
                              self.cpu_bf16)

    def predict_views(self, inputs: np.ndarray, views) -> list[np.ndarray]:
        """The raw prediction of each view of ``inputs``, moved back onto the scan's grid."""
        divisor = self.model.size_divisor
        return [view.invert(self.predict(view.apply(inputs, divisor)), inputs.shape[1:]) for view in views]

    def synthesize(self, stack: Stack) -> np.ndarray:
        """The synthetic CE-T1 (Z, Y, X) of one preprocessed stack: the mean of the scan's prediction and those of
        ``settings.views``, clipped to the model-space range [0, 1] of the targets
        (:mod:`cesynth.preprocess.intensity`) and 0 outside the brain mask."""
        inputs = self.inputs(stack)
        pred = self.predict(inputs)
        if self.views:
            pred = np.mean([pred, *self.predict_views(inputs, self.views)], axis=0)
        return intensity.clip(pred) * (np.asarray(stack["brain_mask"]) > 0)

    def write(self, stack_path, out_path) -> np.ndarray:
        """Write the synthesis of one preprocessed scan as NIfTI in model space; returns it (Z, Y, X)."""
        stack = Stack(stack_path)
        pred = self.synthesize(stack)
        save_nifti(stack.to_xyz(pred), stack.affine, out_path,
                   description=f"SYNTHETIC CE-T1 (cesynth {self.payload['model_spec']['architecture']}), not acquired")
        return pred


def synthesize_all(weights, stack_paths, out_paths, settings: InferenceSettings):
    synthesizer = Synthesizer.load(weights, settings)
    for stack_path, out_path in zip(stack_paths, out_paths):
        synthesizer.write(stack_path, out_path)


def write_identity(stack_paths, out_paths, channel="t1"):
    """The no-model baseline: each scan's preprocessed ``channel`` (brain-masked, equalized) as its synthesis.

    Scored like a model, it shows what a network adds over handing the radiologist the T1 itself.
    """
    for stack_path, out_path in zip(stack_paths, out_paths):
        stack = Stack(stack_path)
        save_nifti(stack.to_xyz(np.asarray(stack[channel]) * (stack["brain_mask"] > 0)), stack.affine, out_path,
                   description=f"no-model baseline: the preprocessed {channel}")
