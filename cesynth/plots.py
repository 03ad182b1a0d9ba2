"""Report figures: qualitative panels (paper Fig. 4), metric distributions, training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # rules run headless

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import Stack, atomic_output  # noqa: E402

METRIC_LABELS = {
    "psnr_brain": "PSNR brain (dB)", "ssim_brain": "SSIM brain", "mae_brain": "MAE brain",
    "psnr_tumour": "PSNR tumour (dB)", "dice_enh_brain": "Enhancement Dice (brain)",
    "dice_enh_tumour": "Enhancement Dice (tumour)",
}


def _save(fig, path):
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=str(path).rsplit(".", 1)[-1])
    plt.close(fig)


def _axial(volume_zyx, z):
    return np.flipud(volume_zyx[z])  # anterior at the top, as radiologists read axial slices


def qualitative_panel(scans, stack_paths, predictions: dict, inputs, out_path, best_model=None, reference="ce_t1"):
    """Rows = scans; columns = inputs, ground truth, each model's synthesis, |difference| of the best.

    ``predictions`` maps model name -> list of NIfTI paths aligned with ``scans``.
    The shown slice is the one with the most tumour (set B) or the centre of the brain.
    """
    models = list(predictions)
    best_model = best_model or models[-1]
    columns = [*inputs, "ground truth", *models, f"|diff| {best_model}"]
    fig, axes = plt.subplots(len(scans), len(columns), figsize=(1.9 * len(columns), 2.1 * len(scans)),
                             squeeze=False)
    for row, (scan, stack_path) in enumerate(zip(scans, stack_paths)):
        stack = Stack(stack_path)
        focus = stack["tumour_mask"] if stack.has("tumour_mask") else stack["brain_mask"]
        z = int(np.argmax(np.asarray(focus).sum(axis=(1, 2))))
        images = [stack[m] for m in inputs] + [stack[reference]]
        synth = {m: np.transpose(np.asarray(nib.load(str(predictions[m][row])).dataobj), (2, 1, 0)) for m in models}
        images += [synth[m] for m in models]
        diff = np.abs(synth[best_model] - stack[reference])
        for col, image in enumerate(images + [diff]):
            ax = axes[row, col]
            ax.imshow(_axial(image, z), cmap="magma" if col == len(images) else "gray", vmin=0,
                      vmax=0.5 if col == len(images) else 1)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(f"{scan} z={z}", fontsize=9)
    fig.tight_layout()
    _save(fig, out_path)


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
    """Training and validation loss per epoch; ``histories`` maps model -> [stage-1 TSV, stage-2 TSV]."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for color, (model, paths) in zip(sns.color_palette("tab10", len(histories)), histories.items()):
        offset = 0
        for stage, path in enumerate(paths, start=1):
            history = pd.read_csv(path, sep="\t")
            epochs = history.epoch + offset
            style = "-" if stage == 1 else "--"
            axes[0].plot(epochs, history.train_total, style, color=color, label=f"{model} stage {stage}")
            if "val_total" in history:
                axes[0].plot(epochs, history.val_total, ":", color=color)
            if "val_psnr" in history:
                axes[1].plot(epochs, history.val_psnr, style, color=color, label=f"{model} stage {stage}")
            offset = int(epochs.max())
    axes[0].set(xlabel="epoch", ylabel="loss (solid/dashed: train, dotted: validation)", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="validation PSNR (dB, MAX_I=1)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, out_path)
