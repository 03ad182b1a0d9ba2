"""One training stage (paper section III-D), resumable at step granularity.

A stage trains ``stage["epochs"]`` epochs of ``steps_per_epoch`` Adam steps with the loss
lambda1*MAE + lambda2*SSIM-loss + lambda3*local (``stage["lambdas"]``), optionally starting
from the weights of an earlier stage. State is checkpointed atomically at the end of every
epoch and when SLURM (or a user) sends SIGTERM/SIGUSR1; running the same command again resumes
from the last checkpoint. Because patches and dropout are seeded by (seed, epoch, step), a
resumed run ends with the same weights as an uninterrupted one (on the CPU), with or without
DataLoader workers.

GPU options (``training`` keys, all optional): ``num_workers`` (DataLoader processes; batches
are pinned on CUDA), ``amp`` (bf16 autocast where supported), ``cudnn_benchmark`` (default on),
``channels_last`` (NDHWC / NHWC convolutions), ``compile`` (``torch.compile``), ``tensorboard``
(scalars under ``<stage>/tensorboard``, needs the ``tensorboard`` package). Data-parallel
training: started by torchrun (:func:`run_distributed`), every process calls :func:`train_stage`,
which reads WORLD_SIZE/RANK/LOCAL_RANK and wraps the model in DistributedDataParallel; see
docs/training.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .data import PatchSampler, StepBatches
from .io import atomic_output, remove_partial_writes, write_table
from .losses import SynthesisLoss
from .models import build_model


class Interrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; rerun the same command to resume."""


def select_device(requested="auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def bf16_autocast(device: torch.device, cuda=True, cpu=False):
    """bf16 autocast on CUDA (where the GPU supports bf16) and, if asked, on the CPU; else no-op."""
    if device.type == "cuda" and cuda and torch.cuda.is_bf16_supported() or device.type == "cpu" and cpu:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


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
    """Train one stage; ``on_step(epoch, step, terms)`` is called after every optimizer step.

    Under torchrun (WORLD_SIZE > 1) each process trains on its share of every step's patches and
    only rank 0 logs and writes files.
    """
    rank, world, device, own_group = _init_distributed(device)
    if rank:
        log = _quiet
    seed = int(training["seed"])
    torch.manual_seed(seed)
    model = new_model(model_spec).to(device)
    if init_weights:
        model.load_state_dict(torch.load(init_weights, map_location=device, weights_only=False)["state_dict"])
    memory_format = _channels_last(model) if training.get("channels_last", False) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # Only 3D nets take a 5-D input in NDHWC; the 2D nets reshape theirs and follow the weights.
    input_format = memory_format if memory_format == torch.channels_last_3d else torch.contiguous_format
    optimizer = torch.optim.Adam(model.parameters(), lr=float(stage["lr"]))
    loss_fn = SynthesisLoss(tuple(stage["lambdas"]), ssim=training["ssim"], local_norm=training["local_norm"])
    sampler = PatchSampler(train_stacks, model_spec["inputs"], training["target"], training["patch"])
    validation = PatchSampler(val_stacks, model_spec["inputs"], training["target"], training["patch"]) \
        if val_stacks else None
    # No CPU autocast in training: on torch 2.13 a 3D conv's bf16 backward corrupts the heap (BENCHMARKS.md).
    autocast = bf16_autocast(device, cuda=training.get("amp", True))
    if device.type == "cuda":
        # Fixed patch shapes: autotuning pays off after the first step (it makes CUDA runs non-bitwise).
        torch.backends.cudnn.benchmark = bool(training.get("cudnn_benchmark", True))

    fingerprint = _fingerprint(model_spec, stage, training, train_stacks, init_weights)
    checkpoint = Path(checkpoint_dir) / "last.pt"
    if rank == 0:  # a run killed while saving left a partial file that nothing else removes
        partial = [p for out in (checkpoint, weights_out, history_out) for p in remove_partial_writes(out)]
        if partial:
            log(f"removed {len(partial)} partial file(s) of a killed run: {', '.join(p.name for p in partial)}")
    epoch, step, history = 0, 0, []
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            epoch, step, history = state["epoch"], state["step"], state["history"]
            log(f"resuming from {checkpoint}: epoch {epoch + 1}, step {step}")
        elif rank == 0:
            stale = checkpoint.with_name(f"stale-{int(time.time())}.pt")
            checkpoint.rename(stale)
            log(f"configuration changed since {checkpoint} was written; kept it as {stale.name}, starting afresh")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    if training.get("compile", False):
        net = torch.compile(net)
    writer = _tensorboard(Path(checkpoint_dir).parent / "tensorboard") \
        if training.get("tensorboard", False) and rank == 0 else None

    stop = {"signal": None}
    previous = {s: signal.signal(s, lambda signum, _: stop.update(signal=signum))
                for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        steps, batch_size = int(training["steps_per_epoch"]), int(training["batch_size"])
        while epoch < int(stage["epochs"]):
            model.train()
            sums, n_steps, started = {}, 0, time.time()
            loader = torch.utils.data.DataLoader(
                StepBatches(sampler, batch_size, seed, epoch, step, steps, rank, world), batch_size=None,
                num_workers=int(training.get("num_workers", 0)), pin_memory=device.type == "cuda")
            bar = tqdm(enumerate(loader, start=step), initial=step, total=steps, file=sys.stderr, mininterval=5,
                       desc=f"epoch {epoch + 1}/{stage['epochs']}", disable=rank or not training.get("progress", True))
            for step, batch in bar:
                torch.manual_seed(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))  # dropout
                x, y, m = (t.to(device, non_blocking=True) for t in batch)
                with autocast:
                    pred = net(x.contiguous(memory_format=input_format))
                loss, terms = loss_fn(pred.float(), y, m)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                n_steps += 1
                if writer is not None:
                    for key, value in terms.items():
                        writer.add_scalar(f"train/{key}", value, epoch * steps + step + 1)
                if on_step is not None:
                    on_step(epoch, step, terms)
                if _any_rank(stop["signal"], world, device):
                    if rank == 0:
                        _save_checkpoint(checkpoint, model, optimizer, epoch, step + 1, history, fingerprint)
                    _barrier(world)  # no process exits (and gets its siblings killed) before the checkpoint is saved
                    raise Interrupted(f"stopped by signal {stop['signal']} at epoch {epoch + 1} step {step + 1}; "
                                      f"checkpoint {checkpoint} saved - rerun to resume")
            sums = _mean_over_ranks(sums, world, device)
            row = {"epoch": epoch + 1, "lr": float(stage["lr"]), "seconds": round(time.time() - started, 2),
                   **{f"train_{k}": v / max(n_steps, 1) for k, v in sums.items()}}
            if validation is not None and rank == 0:
                row.update(evaluate_loss(model, validation, loss_fn, batch_size, device, autocast))
            history.append(row)
            log(json.dumps(row))
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(f"epoch/{key}", value, epoch + 1)
            epoch, step = epoch + 1, 0
            if rank == 0:
                _save_checkpoint(checkpoint, model, optimizer, epoch, step, history, fingerprint)
            _barrier(world)
        if rank == 0:
            save_weights(model, model_spec, training, history, weights_out)
            write_table(pd.DataFrame(history), history_out)
        _barrier(world)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if writer is not None:
            writer.close()
        if own_group:
            torch.distributed.destroy_process_group()
    return history


def run_distributed(n_procs: int, **kwargs):
    """:func:`train_stage` in ``n_procs`` processes (one per GPU) started by torchrun on this node.

    ``kwargs`` must be JSON-serialisable (no ``log``/``on_step``). SIGTERM/SIGUSR1 received here are
    passed on as SIGTERM, which torchrun forwards to every process: they checkpoint and stop together.
    """
    with tempfile.TemporaryDirectory() as tmp:
        arguments = Path(tmp) / "train_stage.json"
        arguments.write_text(json.dumps(kwargs, default=str))
        sys.stdout.flush()
        sys.stderr.flush()
        # Into the rule's log when redirect_output has replaced sys.stdout/stderr by the log file.
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 f"--nproc-per-node={n_procs}", "-m", "cesynth.training", str(arguments)],
                                stdout=_fileno(sys.stdout), stderr=_fileno(sys.stderr))
        stopped = {}

        def forward(signum, _frame):
            stopped["signal"] = signum
            proc.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
        try:
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if stopped:
        raise Interrupted(f"stopped by signal {stopped['signal']}; the checkpoint is saved - rerun to resume")
    if code:
        raise RuntimeError(f"distributed training ({n_procs} processes) failed with exit code {code}")


def _fileno(stream):
    """The stream's file descriptor, or None (inherit) for in-memory streams such as pytest's."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _init_distributed(requested):
    """(rank, world size, device, whether this call created the process group) from torchrun's env."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = select_device(requested)
    if world == 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    own = not torch.distributed.is_initialized()
    if own:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, device, own


def _any_rank(signum, world, device) -> bool:
    """Whether any process got a stop signal: all must stop at the same step or DDP deadlocks."""
    if world == 1:
        return signum is not None
    flag = torch.tensor([0 if signum is None else 1], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def _mean_over_ranks(sums: dict, world, device) -> dict:
    """Per-process loss sums -> their mean over processes, so the history describes every patch."""
    if world == 1:
        return sums
    values = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(sums, (values / world).tolist()))


def _barrier(world):
    if world > 1:
        torch.distributed.barrier()


def _channels_last(model) -> torch.memory_format:
    """NDHWC for 3D nets; the per-slice 2D nets have 4-D weights, so NHWC."""
    return torch.channels_last_3d if any(isinstance(m, torch.nn.Conv3d) for m in model.modules()) \
        else torch.channels_last


def _tensorboard(logdir):
    from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

    return SummaryWriter(str(logdir))


def _quiet(*_args):
    pass


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


# Settings that change speed or logging, not what is learned (up to float rounding): resumable across them.
HOW_NOT_WHAT = ("progress", "num_workers", "threads", "cudnn_benchmark", "channels_last", "compile", "tensorboard")


def _fingerprint(model_spec, stage, training, train_stacks, init_weights) -> str:
    """What a checkpoint must match to be resumed: any change starts the stage afresh."""
    relevant = {k: v for k, v in training.items() if k not in HOW_NOT_WHAT}
    text = json.dumps([model_spec, stage, relevant, sorted(map(str, train_stacks)), str(init_weights or "")],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


if __name__ == "__main__":  # one process of run_distributed
    train_stage(**json.loads(Path(sys.argv[1]).read_text()))
