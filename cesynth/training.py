"""One training stage (paper section III-D), resumable at step granularity.

A stage trains ``stage["epochs"]`` epochs of ``steps_per_epoch`` Adam steps with the loss
lambda1*MAE + lambda2*SSIM-loss + lambda3*local (``stage["lambdas"]``), optionally starting
from the weights of an earlier stage. State is checkpointed atomically at the end of every
epoch and when SLURM (or a user) sends SIGTERM/SIGUSR1; running the same command again resumes
from the last checkpoint. Because patches and dropout are seeded by (seed, epoch, step), a
resumed run ends with the same weights as an uninterrupted one (on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .data import PatchSampler
from .io import atomic_output, write_table
from .losses import SynthesisLoss
from .models import build_model


class Interrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; rerun the same command to resume."""


def select_device(requested="auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def new_model(model_spec: dict) -> torch.nn.Module:
    return build_model(model_spec["architecture"], len(model_spec["inputs"]), model_spec.get("width", 1.0))


def save_weights(model, model_spec, training, history, path):
    payload = {"state_dict": model.state_dict(), "model_spec": model_spec, "target": training["target"],
               "patch": list(training["patch"]), "history": history}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_weights(path, device="cpu"):
    """(model in eval mode, payload) from a weights file written by :func:`save_weights`."""
    payload = torch.load(path, map_location=device, weights_only=False)
    model = new_model(payload["model_spec"]).to(device)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def train_stage(*, train_stacks, val_stacks, model_spec: dict, stage: dict, training: dict, weights_out,
                history_out, checkpoint_dir, init_weights=None, device="auto", log=print, on_step=None):
    """Train one stage; ``on_step(epoch, step, terms)`` is called after every optimizer step."""
    device = select_device(device)
    seed = int(training["seed"])
    torch.manual_seed(seed)
    model = new_model(model_spec).to(device)
    if init_weights:
        model.load_state_dict(torch.load(init_weights, map_location=device, weights_only=False)["state_dict"])
    optimizer = torch.optim.Adam(model.parameters(), lr=float(stage["lr"]))
    loss_fn = SynthesisLoss(tuple(stage["lambdas"]), ssim=training["ssim"], local_norm=training["local_norm"])
    sampler = PatchSampler(train_stacks, model_spec["inputs"], training["target"], training["patch"])
    validation = PatchSampler(val_stacks, model_spec["inputs"], training["target"], training["patch"]) \
        if val_stacks else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) \
        if device.type == "cuda" and training.get("amp", True) and torch.cuda.is_bf16_supported() else nullcontext()

    fingerprint = _fingerprint(model_spec, stage, training, train_stacks, init_weights)
    checkpoint = Path(checkpoint_dir) / "last.pt"
    epoch, step, history = 0, 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            epoch, step, history = state["epoch"], state["step"], state["history"]
            log(f"resuming from {checkpoint}: epoch {epoch + 1}, step {step}")
        else:
            stale = checkpoint.with_name(f"stale-{int(time.time())}.pt")
            checkpoint.rename(stale)
            log(f"configuration changed since {checkpoint} was written; kept it as {stale.name}, starting afresh")

    stop = {"signal": None}
    previous = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum))
                for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        steps, batch_size = int(training["steps_per_epoch"]), int(training["batch_size"])
        while epoch < int(stage["epochs"]):
            model.train()
            sums, n_steps, started = {}, 0, time.time()
            bar = tqdm(range(step, steps), desc=f"epoch {epoch + 1}/{stage['epochs']}", file=sys.stderr,
                       mininterval=5, disable=not training.get("progress", True))
            for step in bar:
                torch.manual_seed(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))  # dropout
                x, y, m = (t.to(device, non_blocking=True) for t in sampler.random_batch(batch_size, seed, epoch, step))
                with autocast:
                    pred = model(x)
                loss, terms = loss_fn(pred.float(), y, m)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                n_steps += 1
                if on_step is not None:
                    on_step(epoch, step, terms)
                if stop["signal"] is not None:
                    _save_checkpoint(checkpoint, model, optimizer, epoch, step + 1, history, fingerprint)
                    raise Interrupted(f"stopped by signal {stop['signal']} at epoch {epoch + 1} step {step + 1}; "
                                      f"checkpoint {checkpoint} saved - rerun to resume")
            row = {"epoch": epoch + 1, "lr": float(stage["lr"]), "seconds": round(time.time() - started, 2),
                   **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()}}
            if validation is not None:
                row.update(evaluate_loss(model, validation, loss_fn, batch_size, device, autocast))
            history.append(row)
            log(json.dumps(row))
            epoch, step = epoch + 1, 0
            _save_checkpoint(checkpoint, model, optimizer, epoch, step, history, fingerprint)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    save_weights(model, model_spec, training, history, weights_out)
    write_table(pd.DataFrame(history), history_out)
    return history


@torch.no_grad()
def evaluate_loss(model, sampler, loss_fn, batch_size, device, autocast=nullcontext()):
    model.eval()
    total, mse, count = {}, 0.0, 0
    for x, y, m in sampler.central_batches(batch_size):
        x, y, m = x.to(device), y.to(device), m.to(device)
        with autocast:
            pred = model(x)
        _, terms = loss_fn(pred.float(), y, m)
        for key, value in terms.items():
            total[key] = total.get(key, 0.0) + value * len(x)
        mse += float(((pred.float() - y) ** 2).mean()) * len(x)
        count += len(x)
    result = {f"val_{k}": v / count for k, v in total.items()}
    result["val_psnr"] = 10 * math.log10(1.0 / max(mse / count, 1e-12))
    return result


def _save_checkpoint(path, model, optimizer, epoch, step, history, fingerprint):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
             "history": history, "fingerprint": fingerprint}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _fingerprint(model_spec, stage, training, train_stacks, init_weights) -> str:
    """What a checkpoint must match to be resumed: any change starts the stage afresh."""
    relevant = {k: v for k, v in training.items() if k not in ("progress", "num_workers")}
    text = json.dumps([model_spec, stage, relevant, sorted(map(str, train_stacks)), str(init_weights or "")],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
