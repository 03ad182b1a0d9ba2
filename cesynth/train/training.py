"""One training stage (paper section III-D), resumable at step granularity.

A stage trains ``stage["epochs"]`` epochs of ``steps_per_epoch`` Adam steps with the loss
lambda1*MAE + lambda2*SSIM-loss + lambda3*local (``stage["lambdas"]``), optionally starting
from the weights of an earlier stage. State is checkpointed atomically at the end of every
epoch and when SLURM (or a user) sends SIGTERM/SIGUSR1; running the same command again resumes
from the last checkpoint. Because patches and dropout are seeded by (seed, epoch, step), a
resumed run ends with the same weights as an uninterrupted one (on the CPU), with or without
DataLoader workers.

GPU options (``training`` keys): ``num_workers`` (DataLoader processes; batches
are pinned on CUDA), ``amp`` (bf16 autocast where supported), ``cudnn_benchmark`` (default on),
``channels_last`` (NDHWC / NHWC convolutions), ``compile`` (``torch.compile``), ``tensorboard``
(scalars under ``<stage>/tensorboard``, needs the ``tensorboard`` package). On the CPU, ``cpu_bf16``
trains under bf16 autocast (3D nets on patch slices of at most
:data:`~cesynth.nets.device.CPU_BF16_MAX_SLICE_VOXELS` voxels). Data-parallel
training: started by torchrun (:func:`run_distributed`), every process calls :func:`train_stage`,
which reads WORLD_SIZE/RANK/LOCAL_RANK and wraps the model in DistributedDataParallel; see
docs/training.md.

The stage runs in the parts of nnU-Net v2's trainer (:class:`StageTrainer`): ``on_train_start``
(resume, wrap, signals), ``train_step``, ``on_epoch_end`` (history, validation, checkpoint),
``on_train_end`` (weights); :func:`train_stage` is the loop over them. Weight files are
:mod:`cesynth.nets.weights`.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cesynth.infer.inference import channels_last_format
from cesynth.io import atomic_output, remove_partial_writes, write_table
from cesynth.nets.device import bf16_autocast, cpu_bf16_training
from cesynth.nets.weights import new_model, read_payload, safe_load, save_weights
from cesynth.train import checkpoints, distributed, validation
from cesynth.train.data import PatchSampler, StepBatches
from cesynth.train.losses import SynthesisLoss

__all__ = ["Interrupted", "StageJob", "StageTrainer", "TRAINERS", "TrainingSettings", "register_trainer",
           "run_distributed", "train_stage"]


# training.local_mask -> the stack channel of the local loss and of the enhancing patches: the paper's rough
# mask M, or the expert enhancing-tumour label where a training scan has one (M where it has not).
LOCAL_MASKS = {"enhancement": "enhancement_mask", "et_label": "et_mask"}


class Interrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; rerun the same command to resume."""


class Collapsed(RuntimeError):
    """The net stopped learning in a way more steps cannot repair (non-finite loss, constant output)."""


# A net whose output over a fixed probe batch varies less than this (sd, intensity units of [0, 1]) draws
# a blank image (a U-Net without batch norm whose ReLUs all died at a high learning rate does exactly this).
COLLAPSED_OUTPUT_SD = 1e-4
PROBE_EPOCH = 2**31  # the probe batch's "epoch": no real epoch draws the same patches


@dataclass(frozen=True)
class TrainingSettings:
    """A model's training settings, read once: its merged ``training`` section
    (:func:`cesynth.pipeline.plans.model_settings`).

    Every key of the section is required here: config.yaml sets it, or the schema fills in its one default (a test
    walks config.yaml, the schema and this class for a second default); ``trainer`` is optional by design.
    """
    seed: int
    device: str
    threads: int
    width: float
    output: str
    num_workers: int
    cudnn_benchmark: bool
    channels_last: bool
    compile: bool
    tensorboard: bool
    amp: bool
    cpu_bf16: bool | str
    batch_size: int
    patch: tuple[int, int, int]
    enhancing_patches: float
    steps_per_epoch: int
    ssim: str
    local_norm: str
    pixel_loss: str
    stage1: dict
    stage2: dict
    local_mask: str
    histogram_loss: float
    augment: dict
    target: str  # the synthesis target channel (config ``reference``)
    trainer: str = "StageTrainer"
    preprocessing: dict | None = None  # the run's preprocessing record, kept in the weights

    def __post_init__(self):
        object.__setattr__(self, "patch", tuple(self.patch))  # hashable, also when read from YAML or JSON

    @classmethod
    def plain(cls, **changes) -> "TrainingSettings":
        """The plainest run, for tools and tests: float32 in the default memory layout, uniform patches, the paper's
        loss terms, on the CPU; ``changes`` override."""
        stage = {"lambdas": [1.0, 1.0, 1.0], "lr": 1e-3, "epochs": 1}
        return cls(**{"seed": 0, "device": "cpu", "threads": 1, "width": 0.0625, "output": "direct", "num_workers": 0,
                      "cudnn_benchmark": True, "channels_last": False, "compile": False, "tensorboard": False,
                      "amp": True, "cpu_bf16": False, "batch_size": 2, "patch": (3, 32, 32), "enhancing_patches": 0.0,
                      "steps_per_epoch": 100, "ssim": "ssim", "local_norm": "mask", "pixel_loss": "mae",
                      "local_mask": "enhancement", "histogram_loss": 0.0, "augment": {"flip": False, "gamma": 0.0},
                      "stage1": stage, "stage2": stage, "target": "ce_t1", **changes})


@dataclass(frozen=True)
class StageJob:
    """What one stage trains and where it writes, built once from the config (workflow_scripts/train.py).

    ``training``: the model's settings, ``stage`` its stage1 or stage2 entry; ``init_weights``: the earlier stage's
    weights to start from; ``name`` (e.g. "hrfcn3d stage 2") names the run in its messages; ``progress``: a progress
    bar per epoch. JSON-serialisable (:func:`run_distributed` passes it to every process).
    """
    train_stacks: list
    val_stacks: list
    model_spec: dict
    stage: dict
    training: TrainingSettings
    weights_out: str | Path
    history_out: str | Path
    checkpoint_dir: str | Path
    init_weights: str | Path | None = None
    device: str = "auto"
    name: str = "model"
    progress: bool = True

    @classmethod
    def from_json(cls, text: str) -> "StageJob":
        fields = json.loads(text)
        return cls(**{**fields, "training": TrainingSettings(**fields["training"])})


# The trainer a model's ``training.trainer`` names (config/schema.yaml's enum is tested against these keys).
# A variant is a subclass of StageTrainer registered here under its class name (docs/extending.md).
TRAINERS: dict[str, type] = {}


def register_trainer(cls: type) -> type:
    """Class decorator: make ``cls`` selectable as ``training.trainer: <its class name>``."""
    TRAINERS[cls.__name__] = cls
    return cls


def train_stage(job: StageJob, log=print, on_step=None):
    """Train one stage with the trainer its ``training.trainer`` names; ``on_step(epoch, step, terms)`` is called
    after every optimizer step.

    Under torchrun (WORLD_SIZE > 1) each process trains on its share of every step's patches and
    only rank 0 logs and writes files. A net that collapses raises :class:`Collapsed` naming ``job.name``, the
    stage, the step and what to change; no weights are written.
    """
    name = job.training.trainer
    if name not in TRAINERS:
        raise ValueError(f"training.trainer {name!r} is not a registered trainer; known: {', '.join(sorted(TRAINERS))}")
    trainer = TRAINERS[name](job, log)
    try:
        trainer.on_train_start()
        while trainer.epoch < trainer.epochs:
            trainer.on_epoch_start()
            for trainer.step, batch in trainer.batches():
                terms = trainer.train_step(batch)
                trainer.on_step_end(terms)
                if on_step is not None:
                    on_step(trainer.epoch, trainer.step, terms)
                if trainer.stop_requested():
                    trainer.interrupt()
            trainer.on_epoch_end()
        trainer.on_train_end()
    finally:
        trainer.close()
    return trainer.history


@register_trainer
class StageTrainer:
    """The state of one training stage and its steps; see the module docstring for the order of calls.

    ``model`` is the net that trains (wrapped in DistributedDataParallel and/or torch.compile where asked, in
    :meth:`on_train_start`); :attr:`module` is the net itself, whose weights are saved and validated.
    """

    def __init__(self, job: StageJob, log=print):
        self.job, self.training, self.stage = job, job.training, job.stage
        self.rank, self.world, self.device, self.own_group = distributed.init_process_group(job.device)
        self.log = _quiet if self.rank else log
        self.checkpoint = Path(job.checkpoint_dir) / "last.pt"
        self.seed, self.epochs = self.training.seed, int(self.stage["epochs"])
        self.steps, self.batch_size = self.training.steps_per_epoch, self.training.batch_size
        self.epoch, self.step, self.history = 0, 0, []
        self.sums, self.n_steps, self.started = {}, 0, 0.0  # of the current epoch (on_epoch_start)
        self.signal, self.previous_handlers, self.writer = None, {}, None
        self.fingerprint = checkpoints.fingerprint(job.model_spec, job.stage, job.training, job.train_stacks,
                                                   job.init_weights)
        self.model, self.input_format = self.build_model()
        cpu_bf16 = cpu_bf16_training(self.training.cpu_bf16, self.module.slicewise, self.training.patch, self.job.name,
                                     job.model_spec["architecture"])
        self.autocast = bf16_autocast(self.device, cuda=self.training.amp, cpu=cpu_bf16)
        if cpu_bf16 and self.device.type == "cpu":
            self.log(f"{job.name}: bf16 autocast on the CPU (training.cpu_bf16: {self.training.cpu_bf16})")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(self.stage["lr"]))
        self.loss_fn = self.build_loss()
        self.sampler, self.validation = self.build_samplers()
        if self.device.type == "cuda":
            # Fixed patch shapes: autotuning pays off after the first step (it makes CUDA runs non-bitwise).
            torch.backends.cudnn.benchmark = self.training.cudnn_benchmark

    @property
    def module(self) -> torch.nn.Module:
        """The net itself, out of its DistributedDataParallel and torch.compile wrappers."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile
        return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model

    def build_model(self) -> tuple[torch.nn.Module, torch.memory_format]:
        """The net (seeded, so every run starts alike, or from ``init_weights``) and the memory format of its input."""
        torch.manual_seed(self.seed)
        model = new_model(self.job.model_spec).to(self.device)
        if self.job.init_weights:
            model.load_state_dict(read_payload(self.job.init_weights, self.device)["state_dict"])
        memory_format = channels_last_format(model) if self.training.channels_last else torch.contiguous_format
        # Only 3D nets take a 5-D input in NDHWC; the 2D nets reshape theirs and follow the weights.
        return (model.to(memory_format=memory_format),
                memory_format if memory_format == torch.channels_last_3d else torch.contiguous_format)

    def build_loss(self) -> SynthesisLoss:
        training = self.training
        return SynthesisLoss(tuple(self.stage["lambdas"]), ssim=training.ssim, local_norm=training.local_norm,
                             pixel=training.pixel_loss, histogram=training.histogram_loss)

    def build_samplers(self) -> tuple[PatchSampler, PatchSampler | None]:
        """Training patches (enhancing-centred and augmented as configured) and the validation scans' windows."""
        training, inputs = self.training, self.job.model_spec["inputs"]
        local_mask = LOCAL_MASKS[training.local_mask]
        sampler = PatchSampler(self.job.train_stacks, inputs, training.target, training.patch, local_mask,
                               enhancing=training.enhancing_patches, augment=training.augment)
        validation = PatchSampler(self.job.val_stacks, inputs, training.target, training.patch,
                                  local_mask) if self.job.val_stacks else None
        return sampler, validation

    def on_train_start(self):
        """Clean up after a killed run, resume its checkpoint, wrap the net, catch stop signals."""
        if self.rank == 0:  # a run killed while saving left a partial file that nothing else removes
            partial = [p for out in (self.checkpoint, self.job.weights_out, self.job.history_out)
                       for p in remove_partial_writes(out)]
            if partial:
                self.log(f"removed {len(partial)} partial file(s) of a killed run: {', '.join(p.name for p in partial)}")
        if self.checkpoint.exists():
            self.resume()
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.training.compile:
            self.model = torch.compile(self.model)
        if self.training.tensorboard and self.rank == 0:
            self.writer = _tensorboard(self.checkpoint.parent.parent / "tensorboard")
        self.previous_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def resume(self):
        """Continue from the checkpoint if it was written by this configuration, else keep it aside."""
        state = safe_load(self.checkpoint, self.device)
        if state["fingerprint"] == self.fingerprint:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
            self.log(f"resuming from {self.checkpoint}: epoch {self.epoch + 1}, step {self.step}")
        elif self.rank == 0:
            stale = self.checkpoint.with_name(f"stale-{int(time.time())}.pt")
            self.checkpoint.rename(stale)
            self.log(f"configuration changed since {self.checkpoint} was written; kept it as {stale.name}, "
                     "starting afresh")

    def _on_signal(self, signum, _frame):
        self.signal = signum

    def on_epoch_start(self):
        self.module.train()
        self.sums, self.n_steps, self.started = {}, 0, time.time()

    def batches(self):
        """(step, batch) for the rest of this epoch, from ``self.step`` on (a resumed epoch starts mid-way)."""
        loader = torch.utils.data.DataLoader(
            StepBatches(self.sampler, self.batch_size, self.seed, self.epoch, self.step, self.steps, self.rank,
                        self.world), batch_size=None, num_workers=self.training.num_workers,
            pin_memory=self.device.type == "cuda")
        return tqdm(enumerate(loader, start=self.step), initial=self.step, total=self.steps, file=sys.stderr,
                    mininterval=5, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                    disable=self.rank or not self.job.progress)

    def train_step(self, batch) -> dict:
        """One optimizer step on one batch; returns the loss terms."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, self.step]).generate_state(1)[0]))  # dropout
        x, y, m = (t.to(self.device, non_blocking=True) for t in batch)
        with self.autocast:
            pred = self.model(x.contiguous(memory_format=self.input_format))
        loss, terms = self.loss_fn(pred.float(), y, m)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return terms

    def on_step_end(self, terms: dict):
        if not all(math.isfinite(v) for v in terms.values()):
            self.collapse(f"its loss is not finite ({', '.join(f'{k} {v:g}' for k, v in terms.items())})")
        for key, value in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.n_steps += 1
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f"train/{key}", value, self.epoch * self.steps + self.step + 1)

    def stop_requested(self) -> bool:
        return distributed.any_rank(self.signal, self.world, self.device)

    def interrupt(self):
        """Checkpoint after the current step and stop (the same step in every process)."""
        if self.rank == 0:
            self.save_checkpoint(self.epoch, self.step + 1)
        distributed.barrier(self.world)  # no process exits (and gets its siblings killed) before the checkpoint is saved
        raise Interrupted(f"stopped by signal {self.signal} at epoch {self.epoch + 1} step {self.step + 1}; "
                          f"checkpoint {self.checkpoint} saved - rerun to resume")

    def collapse(self, what: str):
        """Stop with one message: which net, where, what happened, what to change."""
        raise Collapsed(f"{self.job.name} collapsed at epoch {self.epoch + 1}, step {self.step + 1}: {what}. Lower its "
                        f"learning rate (now {self.stage['lr']:g}; a stage1/stage2 lr in the model's entry), or train "
                        "it with output: residual (it starts at the T1 and cannot go blank); no weights were written")

    @torch.no_grad()
    def check_output(self):
        """Collapse if the net's output over one fixed batch of training patches is constant."""
        x, _, _ = (t.to(self.device) for t in self.sampler.random_batch(self.batch_size, self.seed, PROBE_EPOCH, 0))
        self.module.eval()
        spread = float(self.module(x.contiguous(memory_format=self.input_format)).float().std())
        self.module.train()
        if not spread > COLLAPSED_OUTPUT_SD:  # NaN fails too
            self.collapse(f"its output is constant (sd {spread:.2g} over a batch of training patches)")

    def on_epoch_end(self):
        """Log the epoch's mean losses (and validation), then checkpoint the finished epoch."""
        self.check_output()
        sums = distributed.mean_over_ranks(self.sums, self.world, self.device)
        row = {"epoch": self.epoch + 1, "lr": float(self.stage["lr"]), "seconds": round(time.time() - self.started, 2),
               **{f"train_{k}": v / max(self.n_steps, 1) for k, v in sums.items()}}
        if self.validation is not None and self.rank == 0:
            row.update(self.validate())
        self.history.append(row)
        self.log(json.dumps(row))
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(f"epoch/{key}", value, self.epoch + 1)
        self.epoch, self.step = self.epoch + 1, 0
        if self.rank == 0:
            self.save_checkpoint(self.epoch, self.step)
        distributed.barrier(self.world)

    def validate(self) -> dict:
        """Validation columns of the history row (rank 0 only)."""
        return validation.evaluate_loss(self.module, self.validation, self.loss_fn, self.batch_size, self.device,
                                        self.autocast)

    def save_checkpoint(self, epoch, step):
        state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch,
                 "step": step, "history": self.history, "fingerprint": self.fingerprint}
        with atomic_output(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def on_train_end(self):
        if self.rank == 0:
            save_weights(self.module, self.job.model_spec, self.history, self.job.weights_out,
                         target=self.training.target, patch=self.training.patch,
                         preprocessing=self.training.preprocessing)
            write_table(pd.DataFrame(self.history), self.job.history_out)
        distributed.barrier(self.world)

    def close(self):
        """Restore the signal handlers, close the TensorBoard writer and the process group this run made."""
        for s, handler in self.previous_handlers.items():
            signal.signal(s, handler)
        if self.writer is not None:
            self.writer.close()
        if self.own_group:
            torch.distributed.destroy_process_group()


def run_distributed(n_procs: int, job: StageJob):
    """:func:`train_stage` of ``job`` in ``n_procs`` processes (one per GPU) started by torchrun on this node.

    SIGTERM/SIGUSR1 received here are
    passed on as SIGTERM, which torchrun forwards to every process: they checkpoint and stop together.
    """
    with tempfile.TemporaryDirectory() as tmp:
        arguments = Path(tmp) / "train_stage.json"
        arguments.write_text(json.dumps(asdict(job), default=str))
        sys.stdout.flush()
        sys.stderr.flush()
        # Into the rule's log when redirect_output has replaced sys.stdout/stderr by the log file.
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 f"--nproc-per-node={n_procs}", "-m", "cesynth.train.training", str(arguments)],
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


def _tensorboard(logdir):
    from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

    return SummaryWriter(str(logdir))


def _quiet(*_args):
    pass


if __name__ == "__main__":  # one process of run_distributed
    train_stage(StageJob.from_json(Path(sys.argv[1]).read_text()))
