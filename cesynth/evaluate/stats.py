"""Paired statistics across models (paper IV-A: "paired t-tests").

Input is a long table with one row per (model, scan) and one column per metric.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

TEST_COLUMNS = [
    "metric", "model_a", "model_b", "n", "mean_a", "sd_a", "mean_b", "sd_b",
    "mean_diff", "ci_low", "ci_high", "t", "p", "p_holm",
]


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs are kept and not counted in the family."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    # Step-down: an adjusted p can never be below the one ranked before it.
    out[order] = np.maximum.accumulate(adjusted)
    return out


def _paired(df, metric, a, b, model_col, scan_col):
    xa = df.loc[df[model_col] == a, [scan_col, metric]]
    xb = df.loc[df[model_col] == b, [scan_col, metric]]
    pairs = xa.merge(xb, on=scan_col, suffixes=("_a", "_b")).dropna()
    va = pairs[f"{metric}_a"].to_numpy(float)
    vb = pairs[f"{metric}_b"].to_numpy(float)
    n = len(va)
    row = {
        "metric": metric, "model_a": a, "model_b": b, "n": n,
        "mean_a": va.mean() if n else np.nan, "mean_b": vb.mean() if n else np.nan,
        "sd_a": np.nan, "sd_b": np.nan, "mean_diff": (va - vb).mean() if n else np.nan,
        "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "p": np.nan,
    }
    if n < 2:
        return row
    diff = va - vb
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    with warnings.catch_warnings():
        # Constant differences give t = nan/inf with a RuntimeWarning; keep the value.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(va, vb)
    row.update(
        sd_a=va.std(ddof=1), sd_b=vb.std(ddof=1),
        ci_low=diff.mean() - half, ci_high=diff.mean() + half,
        t=float(res.statistic), p=float(res.pvalue),
    )
    return row


def paired_tests(df, metrics, model_col="model", scan_col="scan", correction="holm"):
    """Paired t-tests for every unordered model pair and metric, paired by scan.

    Models are paired in order of first appearance in ``df`` (``model_a`` is the
    earlier one); the difference is a - b. Scans missing for either model, or
    with NaN in either, are dropped from that test. Fewer than 2 pairs gives
    NaN sd/CI/t/p. The Holm family is every test whose p is not NaN in the
    returned table (all metrics x all model pairs).
    """
    if correction != "holm":
        raise ValueError(f"only correction='holm' is supported, got {correction!r}")
    if df.duplicated([model_col, scan_col]).any():
        raise ValueError(f"duplicate ({model_col}, {scan_col}) rows")
    models = pd.unique(df[model_col])
    rows = [
        _paired(df, metric, a, b, model_col, scan_col)
        for metric in metrics
        for a, b in itertools.combinations(models, 2)
    ]
    out = pd.DataFrame(rows, columns=TEST_COLUMNS[:-1])
    out["p_holm"] = holm(out["p"].to_numpy(float))
    return out[TEST_COLUMNS]


def _precision(metric: str) -> int:
    return 2 if metric.lower().startswith("psnr") else 3


def summarize(df, metrics, model_col="model") -> pd.DataFrame:
    """Per model: ``n`` rows, and per metric ``<m>_n``, ``<m>_mean``, ``<m>_sd``
    (NaN skipped, ddof=1) and ``<m>_fmt`` = "mean ± sd" (2 decimals for psnr*,
    3 otherwise). Models keep their order of first appearance."""
    rows = []
    for model in pd.unique(df[model_col]):
        sub = df[df[model_col] == model]
        row = {model_col: model, "n": len(sub)}
        for m in metrics:
            mean, sd, k = sub[m].mean(), sub[m].std(ddof=1), _precision(m)
            row.update({
                f"{m}_n": int(sub[m].notna().sum()),
                f"{m}_mean": mean,
                f"{m}_sd": sd,
                f"{m}_fmt": f"{mean:.{k}f} ± {sd:.{k}f}",
            })
        rows.append(row)
    return pd.DataFrame(rows)


# The pre-registered analysis of a study (docs/real.md): the primary endpoint is the study's first model against
# the no-model baseline in brain PSNR over every test scan (both sets); the secondary endpoints are two families,
# each Holm-corrected on its own: that model's other metrics, and every other model against the baseline.
PRIMARY_METRIC = "psnr_brain"
SECONDARY_METRICS = ["ssim_brain", "brasyn_psnr_brain", "brasyn_ssim_brain", "brasyn_ssim_tumour",
                     "brasyn_ssim_healthy", "psnr_tumour", "et_contrast", "et_dice"]
OTHER_MODEL_METRICS = ["psnr_brain", "ssim_brain"]


def endpoint_tests(metrics: pd.DataFrame, primary_model: str, baseline: str, model_col="model", scan_col="scan"
                   ) -> pd.DataFrame:
    """Paired two-sided t-tests of the pre-registered endpoints; p_holm within each family (the primary alone)."""
    others = [m for m in pd.unique(metrics[model_col]) if m not in (primary_model, baseline)]
    families = [("primary", primary_model, [PRIMARY_METRIC]),
                ("secondary: " + primary_model, primary_model, SECONDARY_METRICS),
                *[("secondary: other models", m, OTHER_MODEL_METRICS) for m in others]]
    rows = [{"family": family, **_paired(metrics, metric, model, baseline, model_col, scan_col)}
            for family, model, names in families for metric in names if metric in metrics]
    out = pd.DataFrame(rows)
    out["p_holm"] = out.groupby("family").p.transform(lambda p: holm(p.to_numpy(float)))
    return out.dropna(subset=["mean_a", "mean_b"]).reset_index(drop=True)
