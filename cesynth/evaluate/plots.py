"""Report figures: qualitative panels (paper Fig. 4), metric distributions, training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # rules run headless

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cesynth.io import Stack, atomic_output  # noqa: E402

METRIC_LABELS = {
    "psnr_brain": "PSNR brain (dB)", "ssim_brain": "SSIM brain", "mae_brain": "MAE brain",
    "psnr_tumour": "PSNR tumour (dB)", "dice_enh_brain": "Enhancement Dice (brain)",
    "dice_enh_tumour": "Enhancement Dice (tumour)",
}


def _save(fig, path):
    """Write the figure as PNG at ``path`` and as SVG (vector, for papers) beside it."""
    for target, fmt in ((path, "png"), (str(path)[: -len(".png")] + ".svg", "svg")):
        with atomic_output(target) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format=fmt)
    plt.close(fig)


def _axial(volume_zyx, z):
    return np.flipud(volume_zyx[z])  # anterior at the top, as radiologists read axial slices


def display_max(volume_zyx, brain_zyx, percentile=99.9) -> float:
    """Top of the grey-scale window: the 99.9th percentile inside the brain (the brightest tissue, not a
    noise spike). Equalizations put brain voxels anywhere in [0, 1] (the median window around 1/3), so a
    fixed [0, 1] window would show a dim image."""
    values = np.asarray(volume_zyx)[np.asarray(brain_zyx) > 0]
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    return top if top > 0 else 1.0


def qualitative_panel(scans, stack_paths, predictions: dict, inputs, out_path, best_model=None, reference="ce_t1",
                      uncertainty=None):
    """Rows = scans; columns = inputs, ground truth, each model's synthesis, |difference| of the best and, given
    ``uncertainty`` (the best model's maps, aligned with ``scans``), its uncertainty map.

    ``predictions`` maps model name -> list of NIfTI paths aligned with ``scans``.
    The shown slice is the one with the most tumour (set B) or the centre of the brain.
    The inputs each have their own grey-scale window; the ground truth and the syntheses share the ground
    truth's, so that brightness compares across them, and |diff| runs from 0 to half of it. The uncertainty runs
    from 0 to its 99th percentile in the brain, so the brightest 1% saturate.
    """
    models = list(predictions)
    best_model = best_model or models[-1]
    columns = [*inputs, "ground truth", *models, f"|diff| {best_model}"]
    columns += [f"uncertainty {best_model}"] if uncertainty else []
    fig, axes = plt.subplots(len(scans), len(columns), figsize=(1.9 * len(columns), 2.1 * len(scans)),
                             squeeze=False)
    for row, (scan, stack_path) in enumerate(zip(scans, stack_paths)):
        stack = Stack(stack_path)
        focus = stack["tumour_mask"] if stack.has("tumour_mask") else stack["brain_mask"]
        z = int(np.argmax(np.asarray(focus).sum(axis=(1, 2))))
        images = [stack[m] for m in inputs] + [stack[reference]]
        synth = {m: _read_zyx(predictions[m][row]) for m in models}
        images += [synth[m] for m in models]
        brain = stack["brain_mask"]
        target_max = display_max(stack[reference], brain)
        tops = [display_max(stack[m], brain) for m in inputs] + [target_max] * (1 + len(models))
        maps = [(np.abs(synth[best_model] - stack[reference]), target_max / 2)]
        if uncertainty:
            spread = _read_zyx(uncertainty[row])
            maps.append((spread, display_max(spread, brain, 99)))
        for col, (image, top) in enumerate([*zip(images, tops), *maps]):
            ax = axes[row, col]
            shown = ax.imshow(_axial(image, z), cmap="magma" if col >= len(images) else "gray", vmin=0, vmax=top)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
            if col >= len(images):
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, format="%.2g").ax.tick_params(labelsize=7)
        axes[row, 0].set_ylabel(f"{scan} z={z}", fontsize=9)
    fig.tight_layout()
    _save(fig, out_path)


def _read_zyx(path) -> np.ndarray:
    """A model-space NIfTI (X, Y, Z) in the stacks' (Z, Y, X) layout."""
    return np.transpose(np.asarray(nib.load(str(path)).dataobj), (2, 1, 0))


def metric_distributions(metrics: pd.DataFrame, out_path, order=None):
    """Box + strip plots of per-scan metrics, one panel per metric, models side by side."""
    present = [m for m in METRIC_LABELS if m in metrics and metrics[m].notna().any()]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], present):
        sns.boxplot(data=metrics, x="model", y=metric, order=order, ax=ax, color="#d9e6f2", fliersize=0)
        sns.stripplot(data=metrics, x="model", y=metric, order=order, ax=ax, hue="set", size=4, dodge=False)
        ax.set_ylabel(METRIC_LABELS[metric]), ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=45)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    fig.tight_layout()
    _save(fig, out_path)


def training_curves(histories: dict, out_path):
    """Loss and validation PSNR per epoch; ``histories`` maps model -> [stage-1 TSV, stage-2 TSV].

    A grey line marks where stage 2 starts: its loss weights differ, so the loss jumps there.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    stage2_starts = set()
    for color, (model, paths) in zip(sns.color_palette("tab10", len(histories)), histories.items()):
        offset = 0
        for stage, path in enumerate(paths, start=1):
            history = pd.read_csv(path, sep="\t")
            epochs = history.epoch + offset
            style = "-" if stage == 1 else "--"
            axes[0].plot(epochs, history.train_total, style, color=color, label=model if stage == 1 else None)
            if "val_total" in history:
                axes[0].plot(epochs, history.val_total, ":", color=color)
            if "val_psnr" in history:
                axes[1].plot(epochs, history.val_psnr, style, color=color, marker=".")
            if stage == 2:
                stage2_starts.add(offset + 0.5)
            offset = int(epochs.max())
    for ax in axes:
        for x in stage2_starts:
            ax.axvline(x, color="0.6", lw=0.8)
    if stage2_starts:
        axes[1].text(min(stage2_starts), 0.02, " stage 2", transform=axes[1].get_xaxis_transform(), color="0.4",
                     fontsize=8)
    axes[0].set(xlabel="epoch", ylabel="loss (train solid/dashed, validation dotted)", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="validation brain PSNR (dB, test set A)")
    fig.legend(loc="lower center", ncol=min(len(histories), 6), fontsize=8, frameon=False,
               title="solid: stage 1, dashed: stage 2", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    _save(fig, out_path)


def psnr_bars(metrics: pd.DataFrame, out_path, order=None, labels=None):
    """Grouped bars (mean ± sd): PSNR in the brain of test set A and in the tumours of set B (paper Fig. 7).

    ``labels`` renames models on the x axis (the local-loss study shows lambda3/lambda1, as the paper does).
    """
    labels = labels or {}
    rows = [("brain, test set A", metrics[metrics.set == "test_A"], "psnr_brain"),
            ("tumour, set B", metrics[metrics.set == "B"], "psnr_tumour")]
    long = pd.concat([part[["model", column]].rename(columns={column: "PSNR (dB)"}).assign(region=label)
                      for label, part, column in rows if not part.empty], ignore_index=True)
    long["model"] = long.model.map(lambda m: labels.get(m, m))
    order = [labels.get(m, m) for m in order] if order else None
    fig, ax = plt.subplots(figsize=(1.3 * max(len(order or long.model.unique()), 3) + 2, 3.8))
    sns.barplot(data=long, x="model", y="PSNR (dB)", hue="region", order=order, errorbar="sd", ax=ax, capsize=0.1)
    ax.set_xlabel("stage-2 loss-weight ratio lambda3/lambda1" if any(l.startswith("r = ") for l in labels.values())
                  else "")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    fig.tight_layout()
    _save(fig, out_path)


def slice_series(stack_path, synth_path, scan, model, out_path, n_slices=5, reference="ce_t1"):
    """Several axial slices of one scan, ground truth above synthesis (paper Fig. 5)."""
    stack = Stack(stack_path)
    synth = _read_zyx(synth_path)
    focus = stack["tumour_mask"] if stack.has("tumour_mask") else stack["brain_mask"]
    slices = np.flatnonzero(np.asarray(stack["brain_mask"]).any(axis=(1, 2)))
    tumour_slices = np.flatnonzero(np.asarray(focus).any(axis=(1, 2)))
    centre = int(np.median(tumour_slices if len(tumour_slices) else slices))
    half = max(1, (slices.max() - slices.min()) // (2 * n_slices))
    chosen = np.clip(centre + half * (np.arange(n_slices) - n_slices // 2), slices.min(), slices.max())
    top = display_max(stack[reference], stack["brain_mask"])  # one window for both rows
    fig, axes = plt.subplots(2, n_slices, figsize=(2 * n_slices, 4.4), squeeze=False)
    for col, z in enumerate(chosen):
        for row, (label, volume) in enumerate([("ground truth", stack[reference]), (f"synthetic ({model})", synth)]):
            ax = axes[row, col]
            ax.imshow(_axial(volume, z), cmap="gray", vmin=0, vmax=top)
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
        axes[0, col].set_title(f"{scan} z={z}", fontsize=9)
    fig.tight_layout()
    _save(fig, out_path)


def runtimes(benchmarks: pd.DataFrame, out_path):
    """Wall time and peak memory per job, by rule, from Snakemake's ``benchmark:`` files."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sns.stripplot(data=benchmarks, x="rule", y="s", ax=axes[0])
    sns.stripplot(data=benchmarks, x="rule", y="max_rss", ax=axes[1])
    axes[0].set(ylabel="wall time per job (s)", xlabel="", yscale="log")
    axes[1].set(ylabel="peak resident memory (MB)", xlabel="")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    _save(fig, out_path)


def prediction_panel(stack: Stack, pred_zyx: np.ndarray, inputs, out_path, title: str, n_slices: int = 4,
                     uncertainty_zyx=None):
    """Clinician-facing panel of a new patient: rows = axial slices spread over the brain; columns = the
    inputs and the synthetic CE-T1, marked as such, and beside it its uncertainty map when given (0 to the
    brain's 99th percentile, brighter = less to be trusted)."""
    brain_z = np.flatnonzero(np.asarray(stack["brain_mask"]).sum(axis=(1, 2)))
    lo, hi = (brain_z[0], brain_z[-1]) if brain_z.size else (0, pred_zyx.shape[0] - 1)
    slices = np.unique(np.linspace(lo, hi, n_slices + 2).round().astype(int)[1:-1])
    columns = [*inputs, "SYNTHETIC CE-T1"] + (["UNCERTAINTY of the synthesis"] if uncertainty_zyx is not None else [])
    fig, axes = plt.subplots(len(slices), len(columns), figsize=(2.2 * len(columns), 2.3 * len(slices)),
                             squeeze=False)
    images = [*(stack[m] for m in inputs), pred_zyx]
    tops = [display_max(image, stack["brain_mask"]) for image in images]
    if uncertainty_zyx is not None:
        images.append(uncertainty_zyx)
        tops.append(display_max(uncertainty_zyx, stack["brain_mask"], 99))
    for row, z in enumerate(slices):
        for col, (image, top) in enumerate(zip(images, tops)):
            ax = axes[row, col]
            shown = ax.imshow(_axial(image, z), cmap="magma" if col > len(inputs) else "gray", vmin=0, vmax=top)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9, color="black" if col < len(inputs) else "red")
            if col > len(inputs):
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, format="%.2g").ax.tick_params(labelsize=7)
        axes[row, 0].set_ylabel(f"z={z}", fontsize=9)
    fig.suptitle(title, color="red", fontsize=11)
    fig.tight_layout()
    _save(fig, out_path)


def uncertainty_calibration(calibration: pd.DataFrame, metrics: pd.DataFrame, out_path, order=None):
    """Left: mean |error| per uncertainty decile (thin: one scan, thick: mean over scans), one colour per model.
    Right: per-scan Spearman correlation of uncertainty and |error|, and AUROC for |error| > the threshold.

    ``calibration``: rows (model, scan, decile, uncertainty, mae); ``metrics``: rows (model, scan, spearman, auroc).
    """
    models = [m for m in (order or calibration.model.unique()) if m in set(calibration.model)]
    colours = dict(zip(models, sns.color_palette("tab10", len(models))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"width_ratios": [1.4, 1]})
    for model in models:
        rows = calibration[calibration.model == model]
        for _, scan in rows.groupby("scan"):
            axes[0].plot(scan.decile, scan.mae, color=colours[model], lw=0.6, alpha=0.35)
        mean = rows.groupby("decile").mae.mean()
        axes[0].plot(mean.index, mean.values, "o-", color=colours[model], lw=2, label=model)
    axes[0].set(xlabel="uncertainty decile of the scan's brain voxels (1 = most certain)",
                ylabel="mean |synthesis - CE-T1| in the decile", xticks=range(1, 11), ylim=(0, None))
    axes[0].legend(fontsize=8, frameon=False)
    long = metrics.melt(id_vars=["model", "scan"], value_vars=["spearman", "auroc"], var_name="measure")
    long["measure"] = long.measure.map({"spearman": "Spearman rho", "auroc": "AUROC, |error| > threshold"})
    sns.stripplot(data=long, x="measure", y="value", hue="model", hue_order=models, palette=colours, dodge=True,
                  ax=axes[1], size=5)
    axes[1].axhline(0.5, color="0.7", lw=0.8, ls=":")  # chance level of the AUROC
    axes[1].set(xlabel="", ylabel="per test scan", ylim=(min(0, long.value.min() - 0.05), 1))
    axes[1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, out_path)


def learning_curve(curve: pd.DataFrame, trends: list[dict], out_path, project_to=(100, 369)):
    """Gain over identity against the number of training patients (log axis): each fold's models, the fitted
    log-linear trend, and its projection beyond the measured sizes (dashed: extrapolation)."""
    fig, axes = plt.subplots(1, len(trends), figsize=(5.2 * len(trends), 3.8))
    for ax, trend in zip(np.atleast_1d(axes), trends):
        column = trend["metric"]
        for fold, points in curve.groupby("fold"):
            ax.plot(points.n_train, points[column], "o-", alpha=0.8, label=f"fold {fold}")
        measured = np.linspace(curve.n_train.min(), curve.n_train.max(), 50)
        beyond = np.linspace(curve.n_train.max(), max(project_to), 50)
        for n, style, label in ((measured, "-", "fit: a + b log n"), (beyond, "--", "extrapolation")):
            ax.plot(n, trend["intercept"] + trend["slope_per_log_n"] * np.log(n), style, color="black", label=label)
        for n in project_to:
            value = trend[f"projected_n{n}"]
            ax.annotate(f"n={n}: {value:.2f}", (n, value), textcoords="offset points", xytext=(-60, 8), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("training patients")
        ax.set_ylabel({"psnr_gain": "brain PSNR gain over the T1 (dB)",
                       "et_contrast_share": "ET contrast / the real CE-T1's"}.get(column, column))
        ax.axhline(0, color="grey", lw=0.5)
        if column == "et_contrast_share":  # the real CE-T1's own contrast: a share above it is not a gain
            ax.axhline(1, color="grey", lw=0.8, ls=":", label="the real CE-T1")
        ax.legend(fontsize=7)
    fig.suptitle("Learning curve (out of fold)")
    _save(fig, out_path)


GALLERY_MIN_ET_ML = 5.0  # the enhancing tumours issue #31 judges rims on
GALLERY_PER_ROW = 3


def enhancing_gallery(scans, stack_paths, synth_paths, model, et_ml: dict, out_path, reference="ce_t1"):
    """Every scan with at least GALLERY_MIN_ET_ML of labelled enhancing tumour (``et_ml``: scan -> ml): the T1 with the
    label's outline, the real CE-T1 and ``model``'s synthesis, on the slice with the most enhancing tumour. The
    truth and the synthesis share the truth's grey-scale window and carry no outline, so that a reader can judge
    whether the synthesis draws the enhancing rim."""
    min_et_ml, per_row = GALLERY_MIN_ET_ML, GALLERY_PER_ROW
    shown = sorted((i for i, s in enumerate(scans) if et_ml.get(s, 0) >= min_et_ml), key=lambda i: -et_ml[scans[i]])
    rows = max(1, -(-len(shown) // per_row))
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(1.7 * 3 * per_row, 1.95 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not shown:
        axes[0, 0].text(0, 0.5, f"no scan with {min_et_ml:g} ml or more of labelled enhancing tumour", fontsize=9)
    for k, i in enumerate(shown):
        stack = Stack(stack_paths[i])
        enhancing = np.asarray(stack["et_mask"]) > 0
        z = int(np.argmax(enhancing.sum(axis=(1, 2))))
        top = display_max(stack[reference], stack["brain_mask"])
        images = [(stack["t1"], display_max(stack["t1"], stack["brain_mask"]), "T1 + ET label"),
                  (stack[reference], top, "real CE-T1"), (_read_zyx(synth_paths[i]), top, model)]
        for j, (image, vmax, title) in enumerate(images):
            ax = axes[k // per_row, 3 * (k % per_row) + j]
            ax.imshow(_axial(image, z), cmap="gray", vmin=0, vmax=vmax)
            if j == 0:
                ax.contour(_axial(enhancing.astype(float), z), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(f"{scans[i]} ({et_ml[scans[i]]:.0f} ml)" if j == 1 else title, fontsize=7)
    fig.tight_layout()
    _save(fig, out_path)
