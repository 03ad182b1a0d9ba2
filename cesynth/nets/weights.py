"""Weight files: a trained network's parameters with what is needed to use it again.

Written by training at the end of a stage, read by the next stage (initial weights), by inference
and by prediction. A payload holds ``state_dict``, ``model_spec`` (architecture, inputs, width, output),
``target``, ``patch`` (the training block, whose depth is the inference window), ``history`` and
``preprocessing`` (what the training stacks went through, :func:`cesynth.pipeline.plans.preprocessing_record`;
prediction refuses weights whose record differs from its configuration).

Weights and checkpoints are data, not code: they hold only tensors and plain values (dicts, lists,
strings, numbers) and are read with ``torch.load(weights_only=True)``, whose unpickler builds nothing
else, so a file copied from another site cannot run code when it is opened. A file that needs more
(a pickled Python object) or is no cesynth payload at all is refused with one line (:class:`UnsafeWeights`).
"""

from __future__ import annotations

import pickle
import re

import torch

from cesynth.io import atomic_output
from cesynth.nets.models import CHANGED_ARCHITECTURES, build_model

PAYLOAD_KEYS = ("state_dict", "model_spec", "target", "patch")


class UnsafeWeights(ValueError):
    """A weights or checkpoint file that is not plain tensors and values, or not a cesynth payload."""


def new_model(model_spec: dict) -> torch.nn.Module:
    # Weights written before the output option existed are direct (sigmoid) nets.
    return build_model(model_spec["architecture"], len(model_spec["inputs"]), model_spec.get("width", 1.0),
                       model_spec.get("output", "direct"))


def save_weights(model, model_spec, history, path, *, target: str, patch, preprocessing: dict | None = None):
    """The weights file of a trained net: tensors and plain values only (:func:`safe_load`), with what it needs to
    be applied (its spec, target channel, training patch) and the preprocessing it was trained after."""
    payload = {"state_dict": model.state_dict(), "model_spec": model_spec, "target": target, "patch": list(patch),
               "history": _plain(history), "preprocessing": _plain(preprocessing)}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def safe_load(path, device="cpu"):
    """``torch.load`` that builds only tensors and plain values; anything else is refused, never run."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found:
            raise UnsafeWeights(f"{path}: refused: the file holds a pickled Python object ({found.group(1)}), not only "
                                "tensors and plain values; loading it could run code. Use weights written by cesynth"
                                ) from None
        raise UnsafeWeights(f"{path}: refused: not a PyTorch weights file ({str(error).splitlines()[0]})") from None
    except (OSError, RuntimeError, KeyError, EOFError, ValueError) as error:
        raise UnsafeWeights(f"{path}: refused: not a PyTorch weights file ({type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None


def read_payload(path, device="cpu") -> dict:
    """The whole payload of a weights file, tensors on ``device``."""
    payload = safe_load(path, device)
    missing = [k for k in PAYLOAD_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise UnsafeWeights(f"{path}: refused: not a cesynth weights file (it lacks {', '.join(missing)})")
    return payload


def load_weights(path, device="cpu"):
    """(model in eval mode, payload) from a weights file written by :func:`save_weights`."""
    payload = read_payload(path, device)
    model = new_model(payload["model_spec"]).to(device)
    try:
        fit = model.load_state_dict(payload["state_dict"], strict=False)
        misfit = [f"{len(keys)} {what} tensors" for what, keys in
                  (("missing", fit.missing_keys), ("unexpected", fit.unexpected_keys)) if keys]
    except RuntimeError:  # a tensor of another shape
        misfit = ["tensors of other shapes"]
    if misfit:
        architecture = payload["model_spec"]["architecture"]
        change = CHANGED_ARCHITECTURES.get(architecture)
        raise ValueError(f"{path}: the weights do not fit this version's {architecture} ({', '.join(misfit)})"
                         f"{'; ' + change if change else ''}; retrain the model")
    return model.eval(), payload


def _plain(value):
    """``value`` with numpy scalars as Python numbers: the safe unpickler builds no numpy objects."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") and not isinstance(value, torch.Tensor) else value
