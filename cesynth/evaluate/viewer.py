"""Offline slice viewers: one standalone HTML page per patient, opening from the file system with no network.

A page holds the NiiVue viewer (vendored in viewer_assets/, BSD-2) and the patient's volumes inline, as
base64 gzipped 8-bit NIfTI. A few panes (``shown``), each one NiiVue instance on its own canvas, show one
volume each in axial, coronal and sagittal views; a menu above each pane switches it to any volume of the
page, and the panes share one crosshair. Few panes because each is a WebGL context whose shaders compile on
its first draw: about 0.3 s per pane where the browser draws on the CPU (no GPU), so eight panes took 5 s to
open. The expert labels are drawn as coloured outlines (NiiVue's drawing layer, rim only) that a check box
hides.

8-bit: each volume is stored as 256 levels over its own finite range (NIfTI scl_slope/scl_inter), so a level
is 1/255 of that range; the page's initial window spans most of the range of an image, so that is about
one grey level of the screen, and for the |error| and uncertainty maps, whose window is narrower than their
range, a few. NaN voxels become the volume's minimum (a page of a broken volume still opens).
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from cesynth.evaluate.plots import display_max
from cesynth.evaluate.report import best_model
from cesynth.io import Stack, atomic_output, load_nifti, write_html_page

ASSETS = Path(__file__).with_name("viewer_assets")
# Browsers keep at most 16 WebGL contexts per page, and each pane is one.
MAX_PANES = 16
# Label values of the outline layer, coloured by NiiVue's $itksnap drawing colours (1 red, 2 green).
TUMOUR, ENHANCING = 1, 2
# The per-patient metrics shown beside the panes, when the table has them.
METRIC_COLUMNS = ["psnr_brain", "ssim_brain", "mae_brain", "psnr_tumour", "ssim_tumour", "dice_enh_tumour"]


@dataclass
class Pane:
    """What a pane can show (one entry of every pane's menu): a volume (X, Y, Z: NIfTI voxel order) with its
    initial window and colour map; ``overlay`` (same grid) is drawn over it from ``overlay_window[0]`` up, which
    the page's threshold slider moves."""

    title: str
    volume: np.ndarray
    window: tuple[float, float]
    colormap: str = "gray"
    overlay: np.ndarray | None = None
    overlay_window: tuple[float, float] = (0.0, 1.0)


def encode_volume(volume: np.ndarray, affine: np.ndarray) -> str:
    """Base64 of a gzipped NIfTI of ``volume`` as 8 bits over its finite range (NaN -> its minimum)."""
    volume = np.asarray(volume, dtype=np.float32)
    finite = volume[np.isfinite(volume)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    slope = (hi - lo) / 255 or 1.0  # a constant (or empty) map: one level
    levels = np.rint((np.nan_to_num(volume, nan=lo, posinf=hi, neginf=lo) - lo) / slope)
    image = nib.Nifti1Image(levels.astype(np.uint8), affine)
    image.header.set_slope_inter(slope, lo)
    return _encode(image)


def encode_labels(labels: np.ndarray, affine: np.ndarray) -> str:
    """Base64 of a gzipped uint8 NIfTI label map (NiiVue drawings must be uint8 on the background's grid)."""
    return _encode(nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), affine))


def _encode(image) -> str:
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=1)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def window(volume: np.ndarray, brain: np.ndarray | None = None, percentile: float = 99.9) -> tuple[float, float]:
    """Initial grey-scale window: 0 to the ``percentile`` inside the brain (the report's figures' window), of
    the finite voxels; (0, 1) for an empty or all-zero map."""
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32), nan=0.0)
    return 0.0, display_max(volume, np.ones(volume.shape, bool) if brain is None else brain, percentile)


def label_map(tumour: np.ndarray | None, enhancing: np.ndarray | None) -> np.ndarray | None:
    """One label volume for the outlines: ENHANCING inside the enhancing tumour, TUMOUR in the rest of the
    tumour; None without any label."""
    if tumour is None and enhancing is None:
        return None
    shape = (tumour if tumour is not None else enhancing).shape
    labels = np.zeros(shape, np.uint8)
    if tumour is not None:
        labels[np.asarray(tumour) > 0] = TUMOUR
    if enhancing is not None:
        labels[np.asarray(enhancing) > 0] = ENHANCING
    return labels


def page(title: str, panes: list[Pane], affine: np.ndarray, *, shown: list[int] | None = None,
         labels: np.ndarray | None = None, metrics: pd.DataFrame | None = None, banner: str = "",
         note: str = "") -> str:
    """The standalone HTML of one viewer: a pane for each index of ``shown`` (default: every one of ``panes``)
    starting on that entry of ``panes``, each with a menu of all of them; the panes linked by one crosshair, which
    starts at the centre of the labels (else of the volume), the ``labels`` outlines (toggle), ``metrics`` (one
    row per model) beside them, ``banner`` in red above everything."""
    shown = list(range(len(panes))) if shown is None else list(shown)
    if not 0 < len(shown) <= MAX_PANES:
        raise ValueError(f"a viewer page holds 1 to {MAX_PANES} panes (one WebGL canvas each), not {len(shown)}")
    if not all(0 <= i < len(panes) for i in shown):
        raise ValueError(f"shown {shown} names a pane beyond the {len(panes)} given")
    volumes = {}  # id -> base64, so each payload sits once in the page
    # outlineOpacity: the labels' fill, faint but not 0 (NiiVue draws the rim only where the fill is drawn)
    config = {"panes": [], "shown": shown, "labels": None, "outlineOpacity": 0.02,
              "start": _centre_mm(panes[0].volume, labels, affine)}
    for i, pane in enumerate(panes):
        volumes[f"v{i}"] = encode_volume(pane.volume, affine)
        entry = {"title": pane.title, "volume": f"v{i}", "colormap": pane.colormap, "window": list(pane.window)}
        if pane.overlay is not None:
            volumes[f"o{i}"] = encode_volume(pane.overlay, affine)
            entry.update(overlay=f"o{i}", overlayWindow=list(pane.overlay_window))
        config["panes"].append(entry)
    if labels is not None and np.any(labels):
        volumes["labels"] = encode_labels(labels, affine)
        config["labels"] = "labels"
    data = "".join(f'<script type="application/octet-stream" id="{key}">{payload}</script>\n'
                   for key, payload in volumes.items())
    # metrics as rows, models as columns: the side column is narrow and a study has few models
    table = metrics.set_index("model").T.to_html(na_rep="", float_format=lambda v: f"{v:.3f}", border=0) \
        if metrics is not None and not metrics.empty else ""
    return (_TEMPLATE
            .replace("{{title}}", html.escape(title))
            .replace("{{banner}}", f'<div class="banner">{html.escape(banner)}</div>' if banner else "")
            .replace("{{note}}", html.escape(note))
            .replace("{{metrics}}", table)
            .replace("{{outline}}", "" if config["labels"] else "hidden")
            .replace("{{threshold}}", "" if any(p.overlay is not None for p in panes) else "hidden")
            .replace("{{config}}", json.dumps(config).replace("</", "<\\/"))
            .replace("{{data}}", data)
            .replace("{{niivue}}", _niivue()))


def _centre_mm(volume, labels, affine) -> list[float]:
    """World position (mm) of the labels' centre of mass, else of the volume's centre."""
    inside = np.argwhere(labels > 0) if labels is not None and np.any(labels) else None
    voxel = inside.mean(axis=0) if inside is not None else (np.asarray(volume.shape[:3]) - 1) / 2
    return [float(v) for v in nib.affines.apply_affine(affine, voxel)]


# WebAssembly modules inlined in the bundle as base64 ("AGFzbQ" is "\0asm"): the blosc, lz4 and zstd codecs of
# OME-Zarr volumes, which a page of NIfTI volumes never calls; 1.3 of the bundle's 2.3 MB.
_WASM_LITERAL = re.compile(rb'"AGFzbQ[A-Za-z0-9+/=]*"')


@functools.cache
def _niivue() -> str:
    """The NiiVue bundle without its Zarr codecs, gzipped, in base64: 0.44 MB against 0.8 with them (the page
    inflates it with the browser's own DecompressionStream)."""
    bundle = _WASM_LITERAL.sub(b'""', (ASSETS / "niivue.umd.js").read_bytes())
    return base64.b64encode(gzip.compress(bundle, mtime=0)).decode("ascii")


def write_page(path, *args, **kwargs) -> int:
    """Write :func:`page` to ``path`` atomically; return its size in bytes."""
    text = page(*args, **kwargs)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def channel(stack: Stack, name: str) -> np.ndarray:
    """One channel of a stack as float32 in NIfTI voxel order (X, Y, Z), the order of the syntheses' files."""
    return stack.to_xyz(np.asarray(stack[name], dtype=np.float32))


def input_panes(stack: Stack, names, brain: np.ndarray) -> list[Pane]:
    """A pane per input sequence, each with its own window."""
    return [Pane(name, image, window(image, brain)) for name, image in ((n, channel(stack, n)) for n in names)]


def report_panes(stack: Stack, syntheses: dict, best: str, uncertainty, modalities,
                 reference: str) -> tuple[list[Pane], list[int]]:
    """Panes of one test patient: the inputs (own windows), the real CE-T1 and each model's synthesis (the real
    one's window, so brightness compares), |synthesis - truth| of ``best`` (0 to half that window) and its
    ``uncertainty`` map (NIfTI path or None; 0 to its 99th percentile in the brain), all (X, Y, Z); and the ones
    shown at first: the first input, the real CE-T1, ``best``'s synthesis and its error."""
    brain = channel(stack, "brain_mask") > 0
    truth = channel(stack, reference)
    truth_window = window(truth, brain)
    panes = input_panes(stack, modalities, brain)
    shown = [0, len(panes)]
    panes.append(Pane(f"{reference} (acquired)", truth, truth_window))
    images = {model: load_nifti(path)[0] for model, path in syntheses.items()}
    shown.append(len(panes) + list(images).index(best))
    panes += [Pane(f"{model} (synthetic)", image, truth_window) for model, image in images.items()]
    shown.append(len(panes))
    panes.append(Pane(f"|{best} - {reference}|", np.abs(images[best] - truth), (0.0, truth_window[1] / 2), "magma"))
    if uncertainty is not None:
        spread = load_nifti(uncertainty)[0]
        panes.append(Pane(f"uncertainty {best}", spread, window(spread, brain, 99), "magma"))
    return panes, shown


def report_viewer(path, *, scan: str, study: str, stack_path, models: dict, metrics: pd.DataFrame, modalities,
                  reference: str) -> int:
    """The report's viewer of one test patient: :func:`report_panes` of ``models`` (model -> (synthesis, its
    uncertainty map or None), NIfTI paths) with the best model of ``metrics`` (the study's per-scan table;
    highest mean brain PSNR among the models with a map, as in the study's figures), the expert labels and the
    patient's metrics; the panes not shown at first are in every pane's menu."""
    stack = Stack(stack_path)
    best = best_model(metrics, [m for m, (_, spread) in models.items() if spread] or list(models))
    panes, shown = report_panes(stack, {m: synth for m, (synth, _) in models.items()}, best, models[best][1],
                                modalities, reference)
    labels = label_map(*(channel(stack, c) if stack.has(c) else None for c in ("tumour_mask", "et_mask")))
    rows = metrics[metrics.scan == scan]
    table = rows[["model", *[c for c in METRIC_COLUMNS if c in rows and rows[c].notna().any()]]]
    return write_page(path, f"{study}: {scan}", panes, stack.affine, shown=shown, labels=labels, metrics=table,
                      note=f"model grid {'x'.join(map(str, panes[0].volume.shape))}; best model {best} "
                           "(highest mean brain PSNR of the study)")


def predict_viewer(path, *, scan: str, stack_path, synthesis, uncertainty, inputs, model: str, warning: str) -> int:
    """The viewer beside a prediction: the inputs, the synthesis and, given an ``uncertainty`` map (model-space
    NIfTI), the synthesis with the map over it from a threshold (the 90th percentile in the brain at first);
    ``warning`` (cesynth.infer.predict.WARNING, which says SYNTHETIC) in the red banner. Panes start on the first
    input, the synthesis and the overlaid synthesis; the other inputs are in every pane's menu."""
    stack = Stack(stack_path)
    brain = channel(stack, "brain_mask") > 0
    panes = input_panes(stack, inputs, brain)
    synth = load_nifti(synthesis)[0]
    panes.append(Pane(f"SYNTHETIC ce_t1 ({model})", synth, window(synth, brain)))
    if uncertainty is not None:
        spread = np.nan_to_num(load_nifti(uncertainty)[0], nan=0.0)
        inside = spread[brain]
        start = float(np.percentile(inside, 90)) if inside.size else 0.0
        panes.append(Pane("SYNTHETIC ce_t1 + uncertainty", synth, window(synth, brain), overlay=spread,
                          overlay_window=(start, window(spread, brain, 99)[1])))
    return write_page(path, f"SYNTHETIC CE-T1: {scan}", panes, stack.affine,
                      shown=[0, *range(len(inputs), len(panes))], banner=warning, note=f"model {model}, model grid")


def study_index(path, *, study: str, metrics: pd.DataFrame, pages: dict) -> None:
    """A page listing a study's test patients, each linked to its viewer (``pages``: scan -> link relative to
    ``path``), with its set and every model's brain PSNR, to pick patients by."""
    psnr = metrics.pivot_table(index="scan", columns="model", values="psnr_brain")
    table = pd.DataFrame({"patient scan": [f"<a href='{html.escape(link)}'>{html.escape(scan)}</a>"
                                           for scan, link in pages.items()],
                          "set": metrics.drop_duplicates("scan").set_index("scan")["set"].reindex(list(pages)).values})
    table = table.join(psnr.reindex(list(pages)).add_prefix("PSNR brain ").reset_index(drop=True))
    write_html_page(path, f"{study}: slice viewers, one page per test patient",
                    table.to_html(index=False, escape=False, na_rep="", float_format=lambda v: f"{v:.2f}"),
                    intro="Each page opens offline: the inputs, the acquired and synthetic CE-T1, the error and "
                          "uncertainty of the best model, in four linked panes of axial / coronal / sagittal views "
                          "(a menu above each pane switches its volume), the tumour outlines and the patient's "
                          "metrics.")


_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body{margin:0;background:#111;color:#ddd;font:13px sans-serif}
header{padding:6px 10px;display:flex;flex-wrap:wrap;gap:14px;align-items:center}
header h1{font-size:16px;margin:0}
.banner{background:#b00;color:#fff;font-weight:bold;padding:6px 10px;font-size:15px}
main{display:flex;gap:8px;padding:0 8px 8px}
#grid{flex:1;display:grid;gap:6px;grid-template-columns:repeat(auto-fill,minmax(420px,1fr))}
body.single #grid{grid-template-columns:repeat(auto-fill,minmax(220px,1fr))}
figure{margin:0;background:#000}
figcaption{padding:2px 4px;white-space:nowrap;overflow:hidden}
figcaption .value{float:right;color:#fc6}
figcaption select{background:#222;color:#ddd;border:1px solid #444;font:13px sans-serif;max-width:75%}
.view{aspect-ratio:3.1}
body.single .view{aspect-ratio:1}
aside{width:330px;overflow-x:auto}
aside table{border-collapse:collapse;font-size:12px}
aside td,aside th{border:1px solid #444;padding:2px 4px;text-align:right}
.hidden{display:none}
#help{color:#999}
</style></head>
<body class="multi">
{{banner}}
<header><h1>{{title}}</h1>
<label>view <select id="view"><option value="multi">axial + coronal + sagittal</option><option value="axial">axial
</option><option value="coronal">coronal</option><option value="sagittal">sagittal</option></select></label>
<label class="{{outline}}"><input type="checkbox" id="outline" checked> tumour (red) / enhancing (green) outline
</label>
<label class="{{threshold}}">uncertainty above <input type="range" id="threshold" min="0" max="1" step="0.001">
<span id="threshold-value"></span></label>
<span id="help">click: crosshair in every pane · arrows: axial / sagittal slice · PgUp/PgDn: coronal ·
right-drag: window/level · scroll: slice</span>
<span id="status"></span></header>
<main><div id="grid"></div><aside><p>{{note}}</p>{{metrics}}</aside></main>
<!-- NiiVue 0.69.0 (cesynth/evaluate/viewer_assets/niivue.umd.js, gzip, base64), BSD 2-Clause License,
Copyright (c) 2021, Niivue; https://github.com/niivue/niivue -->
<script type="application/octet-stream" id="niivue">{{niivue}}</script>
<script type="application/json" id="config">{{config}}</script>
{{data}}<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const viewer = {panes: [], ready: false, error: null};
window.cesynthViewer = viewer;  // for tests and the browser console
window.addEventListener("error", (e) => { viewer.error = String(e.message); });
window.addEventListener("unhandledrejection", (e) => { viewer.error = String(e.reason); });

function bytes(id) {
  const text = document.getElementById(id).textContent.trim();
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text).buffer;
  const raw = atob(text), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out.buffer;
}

function volume(id, colormap, range, opacity) {
  return niivue.NVImage.loadFromUrl({url: id + ".nii.gz", name: id + ".nii.gz", buffer: bytes(id), colormap,
    opacity, cal_min: range[0], cal_max: range[1], trustCalMinMax: true});
}

let SLICE;  // NiiVue's slice types by the names of the view menu, once NiiVue is loaded

async function loadNiivue() {
  const text = new Blob([bytes("niivue")]).stream().pipeThrough(new DecompressionStream("gzip"));
  (0, eval)(await new Response(text).text());  // the UMD bundle defines globalThis.niivue
  SLICE = {multi: niivue.SLICE_TYPE.MULTIPLANAR, axial: niivue.SLICE_TYPE.AXIAL,
    coronal: niivue.SLICE_TYPE.CORONAL, sagittal: niivue.SLICE_TYPE.SAGITTAL};
}

// Every pane shows the same grid, so one pane's crosshair (as a fraction of the volume) is every pane's.
function follow(leader) {
  for (const nv of viewer.panes) {
    if (nv !== leader) { nv.scene.crosshairPos = leader.scene.crosshairPos.slice(); nv.drawScene(); }
  }
  showValues();
}

function showValues() {
  const vox = viewer.panes[0].frac2vox(viewer.panes[0].scene.crosshairPos);
  viewer.panes.forEach((nv, i) => {
    const value = nv.volumes[0].getValue(vox[0], vox[1], vox[2]);
    document.getElementById("value-" + i).textContent = value.toFixed(3);
  });
  document.getElementById("status").textContent = "voxel " + vox.join(", ");
}

function move(dx, dy, dz) {
  for (const nv of viewer.panes) nv.moveCrosshairInVox(dx, dy, dz);
  showValues();
}

function setOutline(shown) {
  for (const nv of viewer.panes) { nv.drawOpacity = shown ? config.outlineOpacity : 0; nv.drawScene(); }
}

function setThreshold(value) {
  viewer.threshold = value;
  for (const nv of viewer.panes) {
    if (!config.panes[nv.shown].overlay) continue;
    nv.volumes[1].cal_min = value;
    nv.updateGLVolume();
  }
  document.getElementById("threshold-value").textContent = Number(value).toFixed(3);
}

function addFigure(grid, i) {
  const figure = document.createElement("figure");
  figure.innerHTML = `<figcaption><select aria-label="volume of pane ${i + 1}"></select>` +
    `<span class="value" id="value-${i}"></span></figcaption>` +
    `<div class="view"><canvas id="pane-${i}" tabindex="0"></canvas></div>`;
  const menu = figure.querySelector("select");
  config.panes.forEach((pane, k) => menu.add(new Option(pane.title, k)));
  menu.value = config.shown[i];
  grid.appendChild(figure);
  return figure;
}

// Entry k of config.panes in this pane, in place of what it showed (same grid: crosshair and outlines stay).
async function show(nv, k) {
  const pane = config.panes[k], old = nv.volumes.slice();
  nv.addVolume(await volume(pane.volume, pane.colormap, pane.window, 1));
  if (pane.overlay) {
    const from = viewer.threshold ?? pane.overlayWindow[0];
    nv.addVolume(await volume(pane.overlay, "warm", [from, pane.overlayWindow[1]], 0.7));
  }
  for (const v of old) nv.removeVolume(v);
  nv.opts.isColorbar = pane.colormap !== "gray";
  nv.shown = k;
  nv.drawScene();
}

async function addPane(figure, k) {
  const nv = new niivue.Niivue({backColor: [0, 0, 0, 1], crosshairColor: [1, 0.8, 0, 0.8], crosshairWidth: 1,
    crosshairWidthUnit: "pixels",  // a voxel-wide line hides a small grid's structures
    multiplanarShowRender: niivue.SHOW_RENDER.NEVER, multiplanarLayout: niivue.MULTIPLANAR_TYPE.ROW,
    dragAndDropEnabled: false, logLevel: "error", loadingText: ""});
  await nv.attachToCanvas(figure.querySelector("canvas"));
  await show(nv, k);
  const menu = figure.querySelector("select");
  menu.addEventListener("change", async () => { await show(nv, Number(menu.value)); menu.blur(); showValues(); });
  if (config.labels) {
    nv.loadDrawing(await volume(config.labels, "gray", [0, 2], 1));
    nv.drawRimOpacity = 1;  // the labels' edges only: the fill is nearly transparent
    nv.drawOpacity = config.outlineOpacity;
  }
  // where the reader already is, if a pane is up (same grid in every pane), else the start
  nv.scene.crosshairPos = viewer.panes.length ? viewer.panes[0].scene.crosshairPos.slice() : nv.mm2frac(config.start);
  nv.setSliceType(SLICE.multi);
  nv.onLocationChange = () => follow(nv);
  return nv;
}

async function main() {
  await loadNiivue();
  const grid = document.getElementById("grid");
  // The whole grid first: a pane added later would resize (and redraw) every pane above it.
  const figures = config.shown.map((k, i) => addFigure(grid, i));
  // one after the other, so that the first panes show while the others load
  for (const [i, k] of config.shown.entries()) {
    viewer.panes.push(await addPane(figures[i], k));
    viewer.firstPaneMs = viewer.firstPaneMs || performance.now();
  }
  showValues();
  const overlay = config.panes.find((pane) => pane.overlay);
  if (overlay) {
    const slider = document.getElementById("threshold");
    slider.max = overlay.overlayWindow[1];
    slider.step = overlay.overlayWindow[1] / 200;
    slider.value = overlay.overlayWindow[0];
    slider.addEventListener("input", () => setThreshold(Number(slider.value)));
    setThreshold(overlay.overlayWindow[0]);
  }
  document.getElementById("outline").addEventListener("change", (e) => setOutline(e.target.checked));
  document.getElementById("view").addEventListener("change", (e) => {
    document.body.className = e.target.value === "multi" ? "multi" : "single";
    for (const nv of viewer.panes) { nv.setSliceType(SLICE[e.target.value]); nv.resizeListener(); }
  });
  document.addEventListener("keydown", (e) => {
    if (["CANVAS", "SELECT"].includes(e.target.tagName)) return;  // NiiVue's own keys; a menu's own arrows
    const step = {ArrowUp: [0, 0, 1], ArrowDown: [0, 0, -1], ArrowRight: [1, 0, 0], ArrowLeft: [-1, 0, 0],
      PageUp: [0, 1, 0], PageDown: [0, -1, 0]}[e.key];
    if (step) { e.preventDefault(); move(...step); }
  });
  viewer.openedMs = performance.now();  // since the page was requested
  viewer.ready = true;
}
main().catch((e) => { viewer.error = String(e && e.stack || e); });
</script></body></html>
"""
