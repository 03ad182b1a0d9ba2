"""Benchmarks: ``python -m benchmarks [--quick]`` prints a table and writes BENCHMARKS.md.

Sections (docs/training.md explains the design):

- input: training patches/s from memory-mapped stacks (``PatchSampler``) vs reading the .nii.gz
  files with nibabel for every patch, against what one GPU step consumes (from FLOPs);
- inference: one 192x256x192 volume with hrfcn3d at paper width: sliding windows vs one pass
  (and exact slabs), seconds and peak RSS; slow on a CPU, so measured on a few slices and
  extrapolated linearly in the number of slices (labelled); every model in float32 and with
  ``inference.cpu_bf16``;
- dag: ``snakemake -n`` on a generated sample sheet of 1,000 scans (100 scans = baseline);
- training: seconds per step and peak RSS of train_stage per model at the paper patch and batch,
  eager vs channels_last vs torch.compile, on the CPU (and CUDA when present);
- cpu_bf16: ``training.cpu_bf16`` at the demo's size (width 0.125, patch 3 x 32 x 32, one thread), float32 vs
  bf16 seconds per step per model, and whether the bf16 weight gradient of a 3D convolution survives at the
  limit slice (``cesynth.nets.device.CPU_BF16_MAX_SLICE_VOXELS``) and above it;
- preprocessing: :func:`benchmarks.preprocessing.run`;
- predict: one new patient end to end, ``snakemake predict --cores 2`` at the paper's grid with hrfcn3d
  at width 1 on the fast CPU path (:mod:`benchmarks.predict`), wall time and peak RSS measured;
- uncertainty: the extra time of the test-time-augmentation map, :func:`benchmarks.uncertainty.run`;
- none: registration and skull-strip jobs of scans that need neither (:mod:`benchmarks.passthrough`);
- demo: where README command 1's time goes, from finished runs of ``python -m benchmarks.demo``
  (:mod:`benchmarks.demo`).

``--only`` runs some sections and keeps the other sections' rows of the existing output file.

Anything whose memory is reported runs in a child process (``--child``) that reports its own peak
RSS (VmHWM, which unlike the child's ``ru_maxrss`` does not include the parent's RSS inherited at
fork/exec): torch allocates outside the Python heap, so tracemalloc would miss it. Every ratio is to
a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BATCH, INPUTS, PAPER_SHAPE_ZYX, PATCH, REPO, make_scans, row, run_child, \
    set_threads, snakemake_executable

# Assumed sustained throughput of one GPU on these 3-D convolutions in bf16: about 40% of an H100
# SXM's 989 dense bf16 TFLOP/s. A training step costs ~3x the forward FLOPs (forward + backward).
GPU_TFLOPS = 400.0
ARCHITECTURES = ["unet2d", "unet3d", "hrfcn2d", "hrfcn3d", "hrfcn3d_ref"]
# config.yaml's demo: model grid (Z, Y, X), width and training patch
DEMO_SHAPE_ZYX, DEMO_WIDTH, DEMO_PATCH = (48, 64, 48), 0.125, (3, 32, 32)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller training widths (< 20 min)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--child", nargs=2, metavar=("FUNCTION", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child[0]](**json.loads(args.child[1]))
        status = Path("/proc/self/status").read_text()
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        print(json.dumps({"result": result, "peak_gb": peak_kb / 2**20}))
        return
    machine = describe_machine()
    rows, started = [], time.time()
    output, partial = Path(args.output), Path(args.output + ".partial")
    kept = [r for r in read_rows(output) if r["section"] not in args.only] if args.only else []
    with tempfile.TemporaryDirectory(prefix="cesynth-bench-") as tmp:
        for name in args.only or SECTIONS:
            t0 = time.time()
            print(f"== {name}", file=sys.stderr, flush=True)
            section = SECTIONS[name](Path(tmp), args.quick)
            print(render_table(section, header=False), f"\n   {name}: {time.time() - t0:.0f} s", file=sys.stderr,
                  flush=True)
            rows += section
            # sections take up to an hour at paper width: keep what is measured if a later one fails
            partial.write_text(render_markdown(kept + rows, finish(machine, started), args))
    print(render_table(rows))
    output.write_text(render_markdown(kept + rows, finish(machine, started), args))
    partial.unlink()
    print(f"wrote {output}", file=sys.stderr)


def finish(machine: dict, started: float) -> dict:
    return {**machine, "total_minutes": round((time.time() - started) / 60, 1), "load_after": os.getloadavg()[0]}


# ----------------------------------------------------------------------------- machine and rows

def describe_machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_kb / 2**20, 1), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "load_before": os.getloadavg()[0]}


def read_rows(path: Path) -> list[dict]:
    """The result rows of an earlier BENCHMARKS.md (values as printed), for the sections ``--only`` does not run."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and line.startswith("| ") and cells[0] not in ("section", "---"):
            section, case, value, unit, ratio, baseline, note = cells
            rows.append(row(section, case, value, unit, float(ratio.replace(",", "")) if ratio else None, baseline,
                            note))
    return rows


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_table(rows, header=True) -> str:
    lines = [f"{'section':<14}{'case':<72}{'value':>12} {'unit':<10}{'x baseline':>11}  note"] if header else []
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}x"
        lines.append(f"{r['section']:<14}{r['case']:<72}{_fmt(r['value']):>12} {r['unit']:<10}{ratio:>11}  "
                     f"{r['note']}")
    return "\n".join(lines)


def render_markdown(rows, machine, args) -> str:
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    took = f" in {machine['total_minutes']} min"
    if args.only:
        took = (f"; the {', '.join(args.only)} rows by `{command} --only {' '.join(args.only)}`{took} (the machine "
                "lines below are that run's), the other rows kept from the run before")
    out = ["# Benchmarks", "",
           f"Generated by `{command}`{took}. Regenerate rather than edit.", "",
           "## Machine", "",
           f"- CPU: {machine['cpu']}, {machine['cores']} cores; RAM {machine['ram_gb']} GB; GPU: {machine['gpu']}",
           f"- torch {machine['torch']}, Python {machine['python']}",
           f"- load average (1 min) {machine['load_before']:.1f} before, {machine['load_after']:.1f} after (the "
           "benchmark's own processes count; more than the cores means other jobs shared them and times are upper "
           "bounds)", "",
           "## Results", "",
           "Ratios are to the named baseline measured in the same run. *Extrapolated* figures are "
           "computed from measured ones as stated in their note.", "",
           "| section | case | value | unit | x baseline | baseline | note |",
           "|---|---|---:|---|---:|---|---|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}"
        out.append(f"| {r['section']} | {r['case']} | {_fmt(r['value'])} | {r['unit']} | {ratio} | "
                   f"{r['baseline']} | {r['note']} |")
    out += ["", "## Assumptions", "",
            f"- One GPU training step = 3 x forward FLOPs (`cesynth.nets.summary.model_summary`) x batch {BATCH}, at "
            f"an assumed sustained {GPU_TFLOPS:.0f} TFLOP/s (about 40% of an H100 SXM's dense bf16 peak).",
            "- Peak memory = peak RSS (VmHWM) of a child process that does only the measured work (includes the "
            "Python interpreter and torch, about 0.3-0.5 GB).", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- data for the benchmarks

# ----------------------------------------------------------------------------- a. input pipeline

def gpu_step_seconds(architecture: str) -> tuple[float, float]:
    """(assumed seconds of one paper-size GPU training step, forward TFLOPs per sample)."""
    from cesynth.nets.models import build_model
    from cesynth.nets.summary import conv_flops
    import torch

    model = build_model(architecture, len(INPUTS), 1.0)
    tflops = conv_flops(model, torch.zeros(1, len(INPUTS), *PATCH)) / 1e12
    return 3 * BATCH * tflops / GPU_TFLOPS, tflops


def bench_input(tmp: Path, quick: bool):
    import nibabel as nib
    import torch

    from cesynth.train.data import PatchSampler, StepBatches

    stacks, niftis = make_scans(tmp / "scans", 4 if quick else 8)
    sampler = PatchSampler(stacks, INPUTS, "ce_t1", PATCH)
    rows = []

    def rate(fn, steps):
        fn(0)  # first touch of a step's code path
        t = time.perf_counter()
        for step in range(1, steps + 1):
            fn(step)
        return BATCH * steps / (time.perf_counter() - t)

    def nifti_batch(step):
        """The baseline: every patch is read from the gzip-compressed NIfTI files through nibabel."""
        arrays = []
        for scan, z0, y0, x0 in sampler.random_positions(BATCH, 0, 0, step):
            d, h, w = PATCH
            arrays.append([np.asarray(nib.load(niftis[scan][m]).dataobj[x0:x0 + w, y0:y0 + h, z0:z0 + d])
                           for m in [*INPUTS, "ce_t1", "enhancement_mask"]])
        return torch.from_numpy(np.stack([np.stack(a) for a in arrays]))

    baseline = rate(nifti_batch, 2 if quick else 6)
    mmap = rate(lambda step: sampler.random_batch(BATCH, 0, 0, step), 100 if quick else 400)
    loader = torch.utils.data.DataLoader(StepBatches(sampler, BATCH, 0, 0, 0, 10**6), batch_size=None,
                                         num_workers=2)
    batches = iter(loader)
    loader_rate = rate(lambda step: next(batches), 100 if quick else 400)
    del batches
    rows.append(row("input", "nibabel .nii.gz read per patch (baseline)", baseline, "patches/s", 1.0))
    rows.append(row("input", "PatchSampler, memory-mapped .npy stacks", mmap, "patches/s", mmap / baseline,
                    "nii.gz", "page cache warm (stacks just written)"))
    rows.append(row("input", "PatchSampler via DataLoader, 2 workers", loader_rate, "patches/s",
                    loader_rate / baseline, "nii.gz", "what train_stage uses with num_workers=2"))
    for architecture in ARCHITECTURES:
        seconds, tflops = gpu_step_seconds(architecture)
        need = BATCH / seconds
        rows.append(row("input", f"one GPU consumes, {architecture} (assumed)", need, "patches/s", mmap / need,
                        "mmap rate / need",
                        f"{tflops:.3g} TFLOP fwd/sample, step {seconds * 1e3:.0f} ms at {GPU_TFLOPS:.0f} TFLOP/s"))
    return rows


# ----------------------------------------------------------------------------- b. inference

def child_infer(mode: str, slices: int, batch_size: int = 1, architecture: str = "hrfcn3d", device: str = "cpu",
                cpu_bf16: bool = False):
    """Seconds of one paper-width prediction: ``mode`` window = sliding windows over ``slices``
    slices; onepass = the whole ``slices``-slice block in one forward."""
    import torch

    from cesynth.infer.inference import slab_inference, sliding_window
    from cesynth.nets.models import build_model

    set_threads()
    torch.manual_seed(0)
    model = build_model(architecture, len(INPUTS), 1.0).eval().to(device)
    volume = np.random.default_rng(0).random((len(INPUTS), slices, *PAPER_SHAPE_ZYX[1:]), dtype=np.float32)
    t = time.perf_counter()
    if mode == "window":  # with Synthesizer.predict's stride; bf16 autocast on CUDA as in config.yaml
        sliding_window(model, volume, PATCH[0], PATCH[0] if model.slicewise else 1, batch_size, device, amp=True,
                       cpu_bf16=cpu_bf16)
    else:
        slab_inference(model, volume, 0, 0)
    result = {"seconds": time.perf_counter() - t}
    if device == "cuda":
        result["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def bench_inference(tmp: Path, quick: bool):
    from cesynth.infer.inference import slice_halo
    from cesynth.nets.models import build_model

    n_z = PAPER_SHAPE_ZYX[0]
    halo = slice_halo(build_model("hrfcn3d", len(INPUTS), 0.0625))  # the field does not depend on width
    small, large = (3, 6) if quick else (3, 12)
    (r1, m1, _), (r2, m2, _) = (run_child("child_infer", mode="onepass", slices=s) for s in (small, large))
    per_slice_gb = (m2 - m1) / (large - small)
    per_slice_s = r2["seconds"] / large

    def memory(slices):
        return m1 + per_slice_gb * (slices - small)

    batch = 2 if quick else 8  # 8 = config.yaml's inference.batch_size
    timings, bf16 = {}, {}
    for architecture in ARCHITECTURES:  # whole-volume sliding-window inference of every model
        stride = PATCH[0] if build_model(architecture, 1, 0.0625).slicewise else 1  # as Synthesizer.predict
        windows = -(-(n_z - PATCH[0]) // stride) + 1
        for cpu_bf16, into in ((False, timings), (True, bf16)):
            result, peak, _ = run_child("child_infer", mode="window", slices=PATCH[0] + stride * (batch - 1),
                                        batch_size=batch, architecture=architecture, cpu_bf16=cpu_bf16)
            into[architecture] = windows, result["seconds"] / batch, peak
    whole_s = np.prod(timings["hrfcn3d"][:2])
    rows = []
    for architecture, (windows, seconds, peak) in timings.items():
        bf16_seconds, bf16_peak = bf16[architecture][1:]
        rows += [
            row("inference", f"{architecture}: sliding window, batch {batch}, {windows} windows",
                windows * seconds / 60, "min", windows * seconds / whole_s,
                "" if architecture == "hrfcn3d" else "hrfcn3d sliding window",
                f"extrapolated: {windows} x {seconds:.2f} s/window measured on {batch} windows"
                + (" (stride 3: slice-wise net)" if windows < n_z - PATCH[0] + 1 else "")),
            row("inference", f"{architecture}: sliding window, batch {batch}: peak RSS", peak, "GB", None, "",
                "measured; target <= 8 GB"),
            row("inference", f"{architecture}: sliding window, batch {batch}, CPU bf16 (inference.cpu_bf16)",
                windows * bf16_seconds / 60, "min", bf16_seconds / seconds, f"{architecture} float32",
                f"extrapolated as above; peak RSS {bf16_peak:.2f} GB"),
        ]
    rows += [
        row("inference", "hrfcn3d one pass (untiled), 192 slices", per_slice_s * n_z / 60, "min",
            per_slice_s * n_z / whole_s, "hrfcn3d sliding window",
            f"extrapolated from {large} slices in one pass ({r2['seconds']:.0f} s)"),
        row("inference", "hrfcn3d one pass (untiled), 192 slices: peak RSS", memory(n_z), "GB", None, "",
            f"extrapolated linearly from {small} ({m1:.2f} GB) and {large} ({m2:.2f} GB) slices; "
            f"{'fits' if memory(n_z) < 0.9 * describe_machine()['ram_gb'] else 'does not fit'} in this RAM"),
    ]
    for slab in (8, 32):
        computed = sum(min(z + slab + halo, n_z) - max(z - halo, 0) for z in range(0, n_z, slab))
        rows += [row("inference", f"hrfcn3d exact slabs of {slab} (+{halo} halo each side)",
                     per_slice_s * computed / 60, "min", per_slice_s * computed / whole_s, "hrfcn3d sliding window",
                     f"extrapolated: {computed} slices computed"),
                 row("inference", f"hrfcn3d exact slabs of {slab}: peak RSS", memory(slab + 2 * halo), "GB", None, "",
                     "extrapolated (as one pass)")]
    return rows + _cuda_inference_rows(timings, batch, n_z)


def _cuda_inference_rows(timings: dict, batch: int, n_z: int) -> list:
    """Whole-volume sliding-window inference of every model on the GPU (bf16), measured, not extrapolated."""
    import torch

    if not torch.cuda.is_available():
        return [row("inference", "CUDA", "not measured", "", None, "", "no GPU on this machine")]
    rows = []
    for architecture, (windows, _, _) in timings.items():
        stride = 1 if windows == n_z - PATCH[0] + 1 else PATCH[0]
        result, _, _ = run_child("child_infer", mode="window", slices=n_z, batch_size=batch,
                                 architecture=architecture, device="cuda")
        rows.append(row("inference", f"{architecture}: CUDA bf16, sliding window, batch {batch}, whole volume",
                        result["seconds"], "s", None, "", f"measured; peak {result['cuda_peak_gb']:.1f} GB "
                        f"allocated; stride {stride}"))
    return rows


# ----------------------------------------------------------------------------- c. DAG

def write_sheet(root: Path, n_scans: int, with_mask_every=10) -> Path:
    """A sample sheet of n_scans (2 per patient) whose files are links to one tiny valid NIfTI."""
    from cesynth.io import save_nifti

    root.mkdir(parents=True, exist_ok=True)
    tiny = root / "tiny.nii.gz"
    save_nifti(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) + 0.1, np.eye(4), tiny)
    mask = root / "mask.nii.gz"
    save_nifti((np.arange(512).reshape(8, 8, 8) % 2).astype(np.float32), np.eye(4), mask)
    lines = ["patient\tscan\tt1\tt2\tadc\tce_t1\ttumour_mask"]
    for i in range(n_scans):
        scan = root / f"S{i:04d}"
        scan.mkdir(exist_ok=True)
        for m in [*INPUTS, "ce_t1"]:
            (scan / f"{m}.nii.gz").symlink_to(tiny)
        tumour = ""
        if i % with_mask_every == 0:
            (scan / "mask.nii.gz").symlink_to(mask)
            tumour = f"S{i:04d}/mask.nii.gz"
        lines.append(f"P{i // 2:04d}\tS{i:04d}\t" + "\t".join(f"S{i:04d}/{m}.nii.gz" for m in [*INPUTS, "ce_t1"])
                     + f"\t{tumour}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def dry_run_seconds(tmp: Path, n_scans: int) -> tuple[float, int]:
    """(seconds, jobs) of ``snakemake -n`` for all studies of config.yaml over an n-scan sheet."""
    sheet = write_sheet(tmp / f"sheet{n_scans}", n_scans)
    workdir = tmp / f"dag{n_scans}"
    workdir.mkdir()
    snakemake = snakemake_executable()
    t = time.perf_counter()
    proc = subprocess.run([snakemake, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
                           "--cores", "1", "--config", f"input={{source: samplesheet, samplesheet: {sheet}}}"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"snakemake -n failed on {n_scans} scans:\n{proc.stderr[-3000:]}")
    total = next((line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("total")), "0")
    return seconds, int(total)


def bench_dag(tmp: Path, quick: bool):
    base_s, base_jobs = dry_run_seconds(tmp, 100)
    s, jobs = dry_run_seconds(tmp, 1000)
    return [row("dag", f"snakemake -n, 100 scans ({base_jobs} jobs, baseline)", base_s, "s", 1.0),
            row("dag", f"snakemake -n, 1,000 scans ({jobs} jobs), 3 studies", s, "s", s / base_s, "100 scans",
                "target <= 30 s")]


# ----------------------------------------------------------------------------- d. training steps

def child_train(stacks, architecture, width, steps, device, patch=PATCH, **options):
    """Seconds per train_stage step (median after the first, which includes warm-up and compilation);
    ``options``: training keys such as channels_last, compile, cpu_bf16."""
    import torch

    from cesynth.train.training import StageJob, TrainingSettings, train_stage

    set_threads()
    stamps = []
    stage = {"lambdas": [1, 1, 1], "lr": 1e-4, "epochs": 1}
    training = TrainingSettings.plain(device=device, width=width, batch_size=BATCH, patch=patch,
                                      steps_per_epoch=steps + 1, stage1=stage, stage2=stage, **options)
    out = Path(tempfile.mkdtemp(prefix="train-"))
    stamps.append(time.perf_counter())
    job = StageJob(train_stacks=stacks, val_stacks=[], model_spec={"architecture": architecture, "inputs": INPUTS,
                   "width": width}, stage=stage, training=training, weights_out=out / "w.pt", history_out=out / "h.tsv",
                   checkpoint_dir=out / "ckpt", device=device, progress=False)
    train_stage(job, log=lambda *_: None, on_step=lambda *_: stamps.append(time.perf_counter()))
    shutil.rmtree(out)
    result = {"first": stamps[1] - stamps[0], "step": float(np.median(np.diff(stamps[1:])))}
    if device == "cuda":
        result["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def child_bf16_conv3d_backward(side: int):
    """The bf16-autocast weight gradient of a channels-last Conv3d 8->8 on 3 patches of 3 x side x side (torch
    2.13 on AMX CPUs corrupts the heap at about 8,192 voxels per slice)."""
    import torch

    from cesynth.nets.device import bf16_autocast

    set_threads()
    conv = torch.nn.Conv3d(8, 8, 3, padding=1).to(memory_format=torch.channels_last_3d)
    x = torch.rand(3, 8, 3, side, side).to(memory_format=torch.channels_last_3d)
    with bf16_autocast(torch.device("cpu"), cpu=True):
        y = conv(x)
    y.float().sum().backward()
    return {"exit": 0}


def bench_training(tmp: Path, quick: bool):
    import torch

    stacks, _ = make_scans(tmp / "train_scans", 2, nifti=False)
    stacks = [str(s) for s in stacks]
    width = 0.125 if quick else 1.0
    steps = 1  # at paper width a CPU step takes minutes
    label = f"width {width}" + (" (quick; paper is 1.0)" if quick else "")
    rows = []
    variants = [("eager", {}), ("channels_last", {"channels_last": True}), ("torch.compile", {"compile": True})]
    # Inductor builds take minutes per model on 2 cores: the two smallest models, with a time limit.
    compile_models, compile_limit = (["hrfcn3d_ref"], 300) if quick else (["unet2d", "hrfcn3d_ref"], 1200)
    for architecture in ARCHITECTURES:
        base = None
        for name, options in variants:
            if name == "torch.compile" and architecture not in compile_models:
                continue
            result, peak, wall = run_child("child_train", timeout=compile_limit if name == "torch.compile" else None,
                                           stacks=stacks, architecture=architecture, width=width, steps=steps,
                                           device="cpu", **options)
            case = f"{architecture} {label}, CPU, {name}"
            if result is None:
                rows.append(row("training", case, "timeout", "", None, "", f"no result after {wall:.0f} s"))
                continue
            base = base or result["step"]
            rows.append(row("training", f"{case}: s/step", result["step"], "s", result["step"] / base,
                            f"{architecture} eager",
                            f"median of {steps} step(s) after the first ({result['first']:.1f} s)"))
            rows.append(row("training", f"{case}: peak RSS", peak, "GB"))
    if torch.cuda.is_available():
        for architecture in ARCHITECTURES:
            base = None
            for name, options in variants:
                result, _, _ = run_child("child_train", stacks=stacks, architecture=architecture, width=1.0,
                                         steps=steps, device="cuda", **options)
                base = base or result["step"]
                rows.append(row("training", f"{architecture} width 1.0, CUDA bf16, {name}: s/step", result["step"],
                                "s", result["step"] / base, f"{architecture} eager",
                                f"peak {result['cuda_peak_gb']:.1f} GB allocated"))
    else:
        rows.append(row("training", "CUDA", "not measured", "", None, "", "no GPU on this machine"))
    return rows


def bench_cpu_bf16(tmp: Path, quick: bool):
    """training.cpu_bf16 at the demo's size, one thread per job as config.yaml runs it, and its crash limit."""
    import torch

    from cesynth.nets.device import CPU_BF16_MAX_SLICE_VOXELS, cpu_bf16_native

    stacks, _ = make_scans(tmp / "demo_scans", 2, shape=DEMO_SHAPE_ZYX, nifti=False)
    stacks, steps, rows = [str(s) for s in stacks], 10 if quick else 60, []
    for architecture in ARCHITECTURES[:4]:
        seconds = {}
        for cpu_bf16 in (False, True):
            result, _, _ = run_child("child_train", threads=1, stacks=stacks, architecture=architecture,
                                     width=DEMO_WIDTH, steps=steps, device="cpu", channels_last=True,
                                     patch=list(DEMO_PATCH), cpu_bf16=cpu_bf16)
            seconds[cpu_bf16] = result["step"]
            name = "bf16 (training.cpu_bf16)" if cpu_bf16 else "float32"
            rows.append(row("cpu_bf16", f"{architecture} width {DEMO_WIDTH}, patch 3x32x32, batch {BATCH}, 1 thread, "
                            f"channels_last, {name}: s/step", result["step"], "s", result["step"] / seconds[False],
                            f"{architecture} float32", f"median of {steps} steps after the first"))
    limit = int(CPU_BF16_MAX_SLICE_VOXELS ** 0.5)
    for side in (limit, 96):
        probe, _, _ = run_child("child_bf16_conv3d_backward", threads=1, crash_ok=True, side=side)
        code = probe["exit"]
        outcome = "works" if code == 0 else f"crashes (signal {-code})" if code < 0 else f"crashes (exit {code})"
        rows.append(row("cpu_bf16", f"bf16 autocast Conv3d 8->8 weight gradient, 3 patches of 3x{side}x{side}"
                        + (" (the limit)" if side == limit else ""), outcome, "", None, "",
                        f"torch {torch.__version__}; native bf16 on this CPU: {cpu_bf16_native()}"))
    return rows


# ----------------------------------------------------------------------------- preprocessing

def bench_preprocessing(tmp: Path, quick: bool):
    """benchmarks/preprocessing.py's rows as a table: seconds per step, registration against
    antspyx's default rigid registration (the baseline), and the per-scan total (target <= 60 s)."""
    import pandas as pd

    from benchmarks import preprocessing  # imports ants: only when this section runs

    table = pd.DataFrame(preprocessing.run(repeats=1))
    rows = []
    for (case, step), group in table.groupby(["case", "step"], sort=False):
        group = group.set_index("method")
        baseline = group.seconds.get(BASELINE_REGISTRATION)
        for method, r in group.iterrows():
            note = ", ".join(f"{label} {r[key]:.3g}" for key, label in
                             [("mi_after", "MI after"), ("error_mm", "known-motion error mm")]
                             if key in r and pd.notna(r[key]))
            rows.append(row("preprocessing", f"{case}: {step}, {method}", r.seconds, "s",
                            None if baseline is None else r.seconds / baseline,
                            "" if baseline is None or method == BASELINE_REGISTRATION else BASELINE_REGISTRATION,
                            note))
    per_scan = table[~table.step.str.contains("known-motion")]
    for case, group in per_scan.groupby("case", sort=False):
        ours = group[~group.method.isin([BASELINE_REGISTRATION, "cesynth, earlier schedule"])].seconds.sum()
        default = (group[group.method == BASELINE_REGISTRATION].seconds.sum()
                   + group[~group.step.str.startswith("register")].seconds.sum())
        rows.append(row("preprocessing", f"{case}: total per scan (registrations + strip + resample/equalize)",
                        ours, "s", ours / default, "same with ants.registration Rigid", "target <= 60 s"))
    return rows


def bench_predict(tmp: Path, quick: bool):
    """:mod:`benchmarks.predict` in a process of its own (its peak RSS then counts only that run's processes)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.predict"], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"benchmarks.predict failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    synthesis = result["jobs"]["predict_synthesize FG6692"]
    others = ", ".join(f"{name.split()[0]} {job['s']:.0f} s" for name, job in result["jobs"].items()
                       if not name.startswith("predict_synthesize"))
    case = ("TCGA-FG-6692 (T1, T2, FLAIR raw), 192x256x192, hrfcn3d width 1, inference.cpu_bf16, stride 3, "
            "predict.uncertainty false, --cores 2")
    return [row("predict", f"snakemake predict, one patient end to end: {case}", result["wall_s"] / 60, "min", None,
                "", f"measured; target <= 10 min; synthesis {synthesis['s'] / 60:.1f} min "
                f"({synthesis['cpu_time'] / 60:.1f} CPU min); {others}; load {result['load'][0]:.1f} before, "
                f"{result['load'][1]:.1f} after"),
            row("predict", "snakemake predict, one patient end to end: peak RSS", result["peak_gb"], "GB", None, "",
                "measured: the largest process of the run; target <= 8 GB")]


def bench_none(tmp: Path, quick: bool):
    from benchmarks import passthrough

    return passthrough.rows(tmp)


def bench_demo(tmp: Path, quick: bool):
    from benchmarks import demo

    return demo.rows()


def bench_viewer(tmp: Path, quick: bool):
    from benchmarks import viewer

    return viewer.bench(tmp, quick)


def bench_uncertainty(tmp: Path, quick: bool):
    from benchmarks import uncertainty

    return uncertainty.run(quick)


def child_tta_windows(**kwargs):
    from benchmarks import uncertainty

    return uncertainty.child_windows(**kwargs)


BASELINE_REGISTRATION = "ants.registration Rigid"
SECTIONS = {"input": bench_input, "inference": bench_inference, "dag": bench_dag, "training": bench_training,
            "cpu_bf16": bench_cpu_bf16,
            "preprocessing": bench_preprocessing, "predict": bench_predict, "uncertainty": bench_uncertainty,
            "viewer": bench_viewer, "none": bench_none, "demo": bench_demo}
CHILDREN = {"child_infer": child_infer, "child_train": child_train,
            "child_bf16_conv3d_backward": child_bf16_conv3d_backward, "child_tta_windows": child_tta_windows}
