"""Weight files: a trained network's parameters with what is needed to use it again.

Written by training at the end of a stage, read by the next stage (initial weights), by inference
and by prediction. A payload holds ``state_dict``, ``model_spec`` (architecture, inputs, width, output),
``target``, ``patch`` (the training block, whose depth is the inference window), ``history`` and
``preprocessing`` (what the training stacks went through, :func:`cesynth.study.preprocessing_record`;
prediction refuses weights whose record differs from its configuration).
"""

from __future__ import annotations

import torch

from .io import atomic_output
from .models import build_model


def new_model(model_spec: dict) -> torch.nn.Module:
    # Weights written before the output option existed are direct (sigmoid) nets.
    return build_model(model_spec["architecture"], len(model_spec["inputs"]), model_spec.get("width", 1.0),
                       model_spec.get("output", "direct"))


def save_weights(model, model_spec, training, history, path):
    payload = {"state_dict": model.state_dict(), "model_spec": model_spec, "target": training["target"],
               "patch": list(training["patch"]), "history": history, "preprocessing": training.get("preprocessing")}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def read_payload(path, device="cpu") -> dict:
    """The whole payload of a weights file, tensors on ``device``."""
    return torch.load(path, map_location=device, weights_only=False)


def load_weights(path, device="cpu"):
    """(model in eval mode, payload) from a weights file written by :func:`save_weights`."""
    payload = read_payload(path, device)
    model = new_model(payload["model_spec"]).to(device)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload
