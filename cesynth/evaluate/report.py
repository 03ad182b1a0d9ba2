"""One study's evidence: merged per-scan metrics, summary table, paired t-tests and figures."""

from __future__ import annotations

import html
import platform
from dataclasses import dataclass
from pathlib import Path
from importlib import metadata

import pandas as pd
import yaml

from cesynth.evaluate import plots
from cesynth.evaluate.stats import endpoint_tests, paired_tests, summarize
from cesynth.io import atomic_output, write_html_page, write_table
from cesynth.pipeline.plans import IDENTITY

BRASYN = ["brasyn_psnr_brain", "brasyn_ssim_brain", "brasyn_ssim_tumour", "brasyn_ssim_healthy"]
ENHANCING = ["et_contrast", "et_dice"]
METRICS = ["mae_brain", "psnr_brain", "ssim_brain", "mae_tumour", "psnr_tumour", "ssim_tumour",
           "dice_enh_brain", "dice_enh_tumour", *BRASYN, *ENHANCING]
SUMMARY_COLUMNS = {"test_A": ["mae_brain", "psnr_brain", "ssim_brain", "dice_enh_brain", *BRASYN[:2]],
                   "B": ["mae_brain", "psnr_brain", "ssim_brain", "psnr_tumour", "ssim_tumour", "dice_enh_tumour",
                         *BRASYN, *ENHANCING]}


def summary_table(metrics: pd.DataFrame, models, baseline=None) -> pd.DataFrame:
    """Mean ± sd per model, for test set A (brain) and set B (brain and tumour), like Tables I-II.

    With ``baseline`` (the no-model ``identity``), a first column per set gives each model's brain-PSNR
    difference from it and marks every model that is NOT above it. Columns that are empty for every
    model (no ET labels, say) are left out.
    """
    parts = []
    for set_name, columns in SUMMARY_COLUMNS.items():
        subset = metrics[metrics.set == set_name]
        columns = [c for c in columns if c in subset and subset[c].notna().any()]
        if subset.empty:
            continue
        summary = summarize(subset, columns).set_index("model").reindex(models)
        formatted = summary[[f"{c}_fmt" for c in columns]]
        formatted.columns = columns
        if baseline in summary.index:
            gain = summary.psnr_brain_mean - summary.psnr_brain_mean[baseline]
            formatted.insert(0, "psnr_brain vs identity", [
                "" if m == baseline else f"{g:+.2f} dB" + ("" if g > 0 else " NOT above identity")
                for m, g in gain.items()])
        formatted.columns = pd.MultiIndex.from_product([[f"set {set_name}"], formatted.columns])
        parts.append(formatted)
    return pd.concat(parts, axis=1)


@dataclass(frozen=True)
class StudyInputs:
    """What one study compares: its models (the no-model ``identity`` baseline first, if any) and scans.

    ``predictions`` maps each model to its synthetic CE-T1 per scan of ``scans``; ``histories`` maps each trained
    model to its [stage-1, stage-2] TSVs; ``labels`` names models on the bar plot's axis; ``uncertainty`` maps each
    trained model to its uncertainty maps per scan (the qualitative panel shows the best model's).
    """
    models: list
    scans: list
    stack_paths: list
    modalities: list
    reference: str
    predictions: dict
    histories: dict
    labels: dict | None = None
    uncertainty: dict | None = None


def write_study(study: StudyInputs, metric_paths, outputs):
    """Tables and figures of one study from its models' per-scan metric tables."""
    models, scans, stack_paths, predictions = study.models, study.scans, study.stack_paths, study.predictions
    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in metric_paths], ignore_index=True)
    write_table(metrics, outputs.metrics)

    baseline = models[0] if models and models[0] == IDENTITY else None
    summary = summary_table(metrics, models, baseline=baseline)
    flat = summary.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    write_table(flat.reset_index(), outputs.summary_tsv)
    endpoints = endpoint_tests(metrics, models[1], baseline)  # every study: identity first, then its models
    write_table(endpoints, outputs.endpoints_tsv)
    write_html_page(outputs.summary, "Mean ± sd per model (paper Tables I and II)",
                    summary.to_html(na_rep="") + "<p>Every test patient in a slice viewer: <a href='viewers.html'>"
                    "viewers.html</a> beside this page.</p>", intro=primary_line(endpoints))

    ttests = pd.concat([paired_tests(metrics[metrics.set == s], [m for m in METRICS if m in metrics])
                        .assign(set=s) for s in ("test_A", "B") if (metrics.set == s).any()], ignore_index=True)
    ttests = ttests.dropna(subset=["mean_a", "mean_b"])
    write_table(ttests, outputs.ttests_tsv)
    write_html_page(outputs.ttests, "Paired t-tests between models on the same scans",
                    ttests.round(4).set_index(["set", "metric", "model_a", "model_b"]).to_html(na_rep=""),
                    intro="scipy.stats.ttest_rel; p uncorrected and Holm-corrected over all rows of a set")

    trained = [m for m in models if m in study.histories]
    shown = _panel_scans(metrics, scans)
    best = best_model(metrics, trained)
    plots.qualitative_panel([scans[i] for i in shown], [stack_paths[i] for i in shown],
                            {m: [predictions[m][i] for i in shown] for m in trained}, study.modalities,
                            outputs.qualitative, best_model=best, reference=study.reference,
                            uncertainty=[study.uncertainty[best][i] for i in shown] if study.uncertainty else None)
    plots.metric_distributions(metrics, outputs.distributions, order=models)
    plots.training_curves({m: study.histories[m] for m in trained}, outputs.curves)
    plots.psnr_bars(metrics, outputs.bars, order=models, labels=study.labels)
    et_ml = metrics.dropna(subset=["et_ml"]).drop_duplicates("scan").set_index("scan").et_ml.to_dict() \
        if "et_ml" in metrics else {}
    plots.enhancing_gallery(scans, stack_paths, predictions[best], best, et_ml, outputs.enhancing,
                            reference=study.reference)
    i = shown[0]
    plots.slice_series(stack_paths[i], predictions[best][i], scans[i], best, outputs.slices, reference=study.reference)


UNCERTAINTY_COLUMNS = ["spearman", "auroc", "error_fraction", "missed_flagged", "missed_auroc"]


def write_uncertainty(*, models, metric_paths, calibration_paths, outputs):
    """The study's uncertainty evidence: per-scan table (TSV and report page) and the calibration figure."""
    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in metric_paths], ignore_index=True)
    calibration = pd.concat([pd.read_csv(p, sep="\t") for p in calibration_paths], ignore_index=True)
    write_table(metrics, outputs.uncertainty_tsv)
    means = summarize(metrics, UNCERTAINTY_COLUMNS).set_index("model").reindex(models)
    means = means[[f"{c}_fmt" for c in UNCERTAINTY_COLUMNS]].rename(columns=lambda c: c.removesuffix("_fmt"))
    per_scan = metrics.round(3).set_index(["model", "set", "scan"]).to_html(na_rep="")
    write_html_page(outputs.uncertainty, "Uncertainty maps against the real error (mean ± sd over test scans)",
                    means.to_html(na_rep="") + "<h3>Per test scan</h3>" + per_scan,
                    intro="Spearman rank correlation of uncertainty and |error| in the brain; AUROC of the uncertainty "
                          "for the voxels whose |error| exceeds the threshold; missed enhancement (enhancing-tumour "
                          "voxels that enhance in the CE-T1 but not in the synthesis): fraction above the brain's "
                          "90th uncertainty percentile (0.1 by chance) and AUROC against the other brain voxels")
    plots.uncertainty_calibration(calibration, metrics, outputs.calibration, order=models)


def primary_line(endpoints: pd.DataFrame) -> str:
    """The primary endpoint in one sentence, then each secondary family's results that survive Holm."""
    row = endpoints[endpoints.family == "primary"].iloc[0]
    text = (f"Primary endpoint (pre-registered): {row.model_a} against {row.model_b} in brain PSNR over all "
            f"{row.n} test scans: {row.mean_diff:+.2f} dB (95% CI {row.ci_low:+.2f} to {row.ci_high:+.2f}), paired "
            f"two-sided t-test p = {row.p:.2g}.")
    for family, rows in endpoints[endpoints.family != "primary"].groupby("family", sort=False):
        kept = rows[rows.p_holm < 0.05]
        found = "; ".join(f"{r.model_a} {r.metric} {r.mean_diff:+.3g} (p_holm {r.p_holm:.2g})"
                          for r in kept.itertuples()) or "none"
        text += f" {family.capitalize()}, Holm p < 0.05 within the family: {found}."
    return text


def best_model(metrics, models):
    """The model of ``models`` with the highest mean brain PSNR (the last one when none has a PSNR)."""
    means = metrics.groupby("model").psnr_brain.mean().reindex(models)
    return means.idxmax() if means.notna().any() else models[-1]


def _panel_scans(metrics, scans, n=4):
    """Up to ``n`` scans for the qualitative panel: set-B scans first (they show tumours)."""
    sets = metrics.drop_duplicates("scan").set_index("scan").set.reindex(scans)
    order = sorted(range(len(scans)), key=lambda i: (sets.iloc[i] != "B", i))
    return sorted(order[:n])


def headline(study: str, metrics: pd.DataFrame, ttests: pd.DataFrame, baseline: str) -> str:
    """One RST bullet: the study's best model on test set A (set B when there is no A; brain PSNR) against
    the no-model baseline."""
    test_set = "test_A" if (metrics.set == "test_A").any() else "B"
    a = metrics[metrics.set == test_set]
    means = a.groupby("model").psnr_brain.mean().drop(baseline, errors="ignore")
    if a.empty or means.isna().all():
        return f"- **{study}**: no test scans."
    best = means.idxmax()
    mean_sd = a.groupby("model")[["psnr_brain", "ssim_brain"]].agg(["mean", "std"])
    pair = {baseline, best}
    test = ttests[(ttests.set == test_set) & (ttests.metric == "psnr_brain")
                  & ttests.model_a.isin(pair) & ttests.model_b.isin(pair)]
    p = f", paired t-test Holm-corrected p = {test.p_holm.iloc[0]:.2g}" if len(test) else ""

    def describe(model):
        row = mean_sd.loc[model]
        return (f"{row[('psnr_brain', 'mean')]:.2f} ± {row[('psnr_brain', 'std')]:.2f} dB brain PSNR, SSIM "
                f"{row[('ssim_brain', 'mean')]:.3f}")

    gain = means[best] - mean_sd.loc[baseline, ("psnr_brain", "mean")]
    return (f"- **{study}**: best model **{best}** {describe(best)} on {_SET_NAMES[test_set]} "
            f"(n = {a.scan.nunique()} scans) "
            f"against {describe(baseline)} for ``{baseline}`` (the T1 itself): {gain:+.2f} dB{p}.")


_SET_NAMES = {"test_A": "test set A", "B": "set B"}


def write_overview(template_path, studies: dict, out_path, baseline: str):
    """The report's front page: the workflow description followed by each study's headline numbers.

    ``studies`` maps a study name to its (metrics.tsv, ttests.tsv).
    """
    lines = [headline(name, pd.read_csv(m, sep="\t"), pd.read_csv(t, sep="\t"), baseline)
             for name, (m, t) in studies.items()]
    text = Path(template_path).read_text().rstrip() + "\n\nHeadline results\n----------------\n\n" + "\n".join(lines)
    with atomic_output(out_path) as tmp:
        tmp.write_text(text + "\n")


def runtime_table(benchmark_paths) -> pd.DataFrame:
    """Snakemake benchmark files -> one row per job with its rule and job name."""
    rows = []
    for path in map(str, benchmark_paths):
        rule, name = path.split("/")[-2], path.split("/")[-1].removesuffix(".tsv")
        rows.append(pd.read_csv(path, sep="\t").iloc[[-1]].assign(rule=rule, job=name))
    return pd.concat(rows, ignore_index=True)


def write_provenance(config: dict, path, packages=("snakemake", "torch", "antspyx", "brainextractor", "nipype",
                                                     "fslpy", "pydicom", "dcm2niix", "nibabel", "numpy", "scipy",
                                                     "scikit-image", "pandas")):
    """The configuration and software versions behind every result, as an HTML page for the report."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in versions.items())
    write_html_page(path, "Provenance: software and configuration",
                    f"<table>{rows}</table><h3>Configuration</h3>"
                    f"<pre style='text-align:left'>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
