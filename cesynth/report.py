"""One study's evidence: merged per-scan metrics, summary table, paired t-tests and figures."""

from __future__ import annotations

import html
import platform
from importlib import metadata

import pandas as pd
import yaml

from . import plots
from .io import atomic_output, write_table
from .stats import paired_tests, summarize

METRICS = ["mae_brain", "psnr_brain", "ssim_brain", "mae_tumour", "psnr_tumour", "ssim_tumour",
           "dice_enh_brain", "dice_enh_tumour"]


def summary_table(metrics: pd.DataFrame, models) -> pd.DataFrame:
    """Mean ± sd per model, for test set A (brain) and set B (brain and tumour), like Tables I-II."""
    parts = []
    for set_name, columns in [("test_A", ["mae_brain", "psnr_brain", "ssim_brain", "dice_enh_brain"]),
                              ("B", ["mae_brain", "psnr_brain", "ssim_brain", "psnr_tumour", "ssim_tumour",
                                     "dice_enh_tumour"])]:
        subset = metrics[metrics.set == set_name]
        if subset.empty:
            continue
        summary = summarize(subset, columns).set_index("model").reindex(models)
        formatted = summary[[f"{c}_fmt" for c in columns]]
        formatted.columns = pd.MultiIndex.from_product([[f"set {set_name}"], columns])
        parts.append(formatted)
    return pd.concat(parts, axis=1)


def write_study(*, models, metric_paths, histories, synth_paths, stack_paths, scans, modalities, reference, outputs):
    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in metric_paths], ignore_index=True)
    write_table(metrics, outputs.metrics)

    summary = summary_table(metrics, models)
    flat = summary.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    write_table(flat.reset_index(), outputs.summary_tsv)
    _write_html(summary, outputs.summary, "Mean ± sd per model (paper Tables I and II)")

    ttests = pd.concat([paired_tests(metrics[metrics.set == s], [m for m in METRICS if m in metrics])
                        .assign(set=s) for s in ("test_A", "B") if (metrics.set == s).any()], ignore_index=True)
    ttests = ttests.dropna(subset=["mean_a", "mean_b"])
    write_table(ttests, outputs.ttests_tsv)
    _write_html(ttests.round(4).set_index(["set", "metric", "model_a", "model_b"]), outputs.ttests,
                "Paired t-tests between models on the same scans (scipy.stats.ttest_rel), "
                "p uncorrected and Holm-corrected over all rows of a set")

    n = len(scans)
    predictions = {m: synth_paths[i * n:(i + 1) * n] for i, m in enumerate(models)}
    shown = _panel_scans(metrics, scans)
    plots.qualitative_panel([scans[i] for i in shown], [stack_paths[i] for i in shown],
                            {m: [p[i] for i in shown] for m, p in predictions.items()}, modalities,
                            outputs.qualitative, best_model=_best(metrics, models), reference=reference)
    plots.metric_distributions(metrics, outputs.distributions, order=models)
    plots.training_curves({m: histories[2 * i:2 * i + 2] for i, m in enumerate(models)}, outputs.curves)
    plots.psnr_bars(metrics, outputs.bars, order=models)
    best = _best(metrics, models)
    i = shown[0]
    plots.slice_series(stack_paths[i], predictions[best][i], scans[i], best, outputs.slices, reference=reference)


def _best(metrics, models):
    means = metrics.groupby("model").psnr_brain.mean().reindex(models)
    return means.idxmax() if means.notna().any() else models[-1]


def _panel_scans(metrics, scans, n=4):
    """Up to ``n`` scans for the qualitative panel: set-B scans first (they show tumours)."""
    sets = metrics.drop_duplicates("scan").set_index("scan").set.reindex(scans)
    order = sorted(range(len(scans)), key=lambda i: (sets.iloc[i] != "B", i))
    return sorted(order[:n])


def _write_html(table: pd.DataFrame, path, title):
    html = (f"<html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif} table{border-collapse:collapse} "
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}</style></head>"
            f"<body><h3>{title}</h3>{table.to_html(na_rep='')}</body></html>")
    with atomic_output(path) as tmp:
        tmp.write_text(html)


def runtime_table(benchmark_paths) -> pd.DataFrame:
    """Snakemake benchmark files -> one row per job with its rule and job name."""
    rows = []
    for path in map(str, benchmark_paths):
        rule, name = path.split("/")[-2], path.split("/")[-1].removesuffix(".tsv")
        rows.append(pd.read_csv(path, sep="\t").iloc[[-1]].assign(rule=rule, job=name))
    return pd.concat(rows, ignore_index=True)


def write_provenance(config: dict, path, packages=("snakemake", "torch", "antspyx", "brainextractor", "fslpy",
                                                     "nibabel", "numpy", "scipy", "scikit-image", "pandas")):
    """The configuration and software versions behind every result, as an HTML page for the report."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in versions.items())
    page = (f"<html><head><meta charset='utf-8'><title>Provenance</title></head><body><h3>Software</h3>"
            f"<table>{rows}</table><h3>Configuration</h3><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}"
            "</pre></body></html>")
    with atomic_output(path) as tmp:
        tmp.write_text(page)
