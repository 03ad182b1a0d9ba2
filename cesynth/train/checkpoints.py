"""The identity of a training checkpoint: what it must match to be resumed (any other change starts afresh)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict


# Settings that change speed or logging, not what is learned (up to float rounding): resumable across them.
HOW_NOT_WHAT = ("num_workers", "threads", "cudnn_benchmark", "channels_last", "compile", "tensorboard")


def fingerprint(model_spec, stage, training, train_stacks, init_weights) -> str:
    """What a checkpoint must match to be resumed: any change starts the stage afresh."""
    relevant = {k: v for k, v in asdict(training).items() if k not in HOW_NOT_WHAT}
    text = json.dumps([model_spec, stage, relevant, sorted(map(str, train_stacks)), str(init_weights or "")],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
