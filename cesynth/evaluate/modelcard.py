"""Model cards: what a trained model is, what it learned from, how it scored and what it is for.

A card lies beside the final weights (``model_card.json`` and a short ``model_card.md``), as nnU-Net
keeps its plans beside its checkpoints, and travels with them to another site: prediction refuses
weights without their card, and copies the card's :func:`summary` into every output sidecar. Its test
metrics are the study's summary table (:func:`cesynth.evaluate.report.summary_table`) for this model and the
no-model ``identity`` baseline, so the two can be compared number for number.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from cesynth.evaluate.report import SUMMARY_COLUMNS
from cesynth.evaluate.stats import summarize
from cesynth.io import atomic_output, read_json, sha256, write_json
from cesynth.nets.weights import read_payload
from cesynth.pipeline.plans import IDENTITY

INTENDED_USE = ("Research only: synthetic contrast-enhanced T1 brain MRI from non-contrast scans, to study "
                "gadolinium-free imaging. Not for diagnosis, treatment decisions or any clinical use; a synthetic "
                "image was not acquired and may miss or invent enhancement.")


def card_path(weights) -> Path:
    """Where the card of a weights file lies: beside it."""
    return Path(weights).with_name("model_card.json")


def cohort_record(table: pd.DataFrame, split: pd.DataFrame, input_cfg: dict) -> dict:
    """The training cohort: the sample sheet's sha256 (or that of the cohort table, for the demo, BIDS and
    BraTS sources) and patient/scan counts per set."""
    sheet = input_cfg.get("samplesheet") if input_cfg["source"] == "samplesheet" else None
    if sheet:
        digest = sha256(sheet)
    else:
        rows = table.reset_index(drop=True).sort_values("scan")
        digest = hashlib.sha256(rows.to_csv(sep="\t", index=False).encode()).hexdigest()
    sets = {s: {"patients": int(split.patient[split.set == s].nunique()), "scans": int((split.set == s).sum())}
            for s in sorted(split.set.unique())}
    return {"source": input_cfg["source"], "sample_sheet": str(sheet) if sheet else None,
            "sample_sheet_sha256": digest, "patients": int(table.patient.nunique()), "scans": len(table),
            "sets": sets}


def test_metrics(model: str, metrics_paths) -> dict:
    """Per test set: the model's and identity's mean, sd and the study table's "mean ± sd" per metric."""
    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in metrics_paths], ignore_index=True)
    result = {}
    for set_name, columns in SUMMARY_COLUMNS.items():
        subset = metrics[metrics.set == set_name]
        columns = [c for c in columns if c in subset and subset[c].notna().any()]  # as the study table
        if subset.empty:
            continue
        table = summarize(subset, columns).set_index("model")
        result[set_name] = {"scans": int(table.at[model, "n"]), **{
            m: {c: {"mean": _number(table.at[m, f"{c}_mean"]), "sd": _number(table.at[m, f"{c}_sd"]),
                    "table": table.at[m, f"{c}_fmt"]} for c in columns} for m in (model, IDENTITY)}}
    return result


def build_card(*, model: str, weights, metrics_paths, training: dict, inference: dict, cohort: dict,
               evaluated: str | None = None, limitations=()) -> dict:
    """The card of ``model``'s final ``weights``: ``training`` is its settings (cesynth.pipeline.plans.model_settings),
    ``inference`` how its test syntheses were made (cesynth.pipeline.plans.inference_settings; predict with the same
    config makes them so too).

    ``evaluated``: the model whose metrics describe this one, when it is not scored itself: under cross-validation
    the out-of-fold pool of its fold models (the model trained on every patient has no patient left to test on).
    ``limitations``: what the model cannot do, in words (config ``model_card.limitations``)."""
    payload = read_payload(weights)
    history = payload.get("history") or []
    metrics = test_metrics(evaluated or model, metrics_paths)
    if evaluated:
        metrics = {s: {model if k == evaluated else k: v for k, v in values.items()} for s, values in metrics.items()}
    return {
        "model": model,
        "architecture": payload["model_spec"]["architecture"],
        "model_spec": payload["model_spec"],
        "inputs": payload["model_spec"]["inputs"],
        "target": payload["target"],
        "weights": {"file": Path(weights).name, "sha256": sha256(weights),
                    "format": "torch.save of tensors and plain values; read with torch.load(weights_only=True)"},
        "preprocessing": payload.get("preprocessing"),
        "training": {"cohort": cohort, "patch": payload["patch"],
                     "schedule": {k: training[k] for k in ("stage1", "stage2", "steps_per_epoch", "batch_size")},
                     "final_epoch": history[-1] if history else None},
        "inference": {k: inference[k] for k in ("tiling", "stride", "views")},
        "test_metrics": metrics,
        "evaluation": (f"out of fold: each patient scored by {evaluated}'s fold models, which did not train on it; "
                       "this model trained on every patient") if evaluated else "held-out test sets of the split",
        "limitations": list(limitations),
        "intended_use": INTENDED_USE,
    }


def summary(card: dict) -> dict:
    """What a prediction's sidecar carries of the card: model, training cohort, brain PSNR against identity, use."""
    psnr = {s: {"psnr_brain": v[card["model"]]["psnr_brain"]["table"],
                "identity_psnr_brain": v[IDENTITY]["psnr_brain"]["table"], "scans": v["scans"]}
            for s, v in card["test_metrics"].items()}
    cohort = card["training"]["cohort"]
    return {"model": card["model"], "architecture": card["architecture"], "inputs": card["inputs"],
            "weights_sha256": card["weights"]["sha256"],
            "trained_on": f"{cohort['sets']['train']['patients']} patients ({cohort['sets']['train']['scans']} scans) "
                          f"of a cohort with sample-sheet sha256 {cohort['sample_sheet_sha256'][:12]}",
            "test": psnr, "intended_use": card["intended_use"]}


def write_card(card: dict, json_path, text_path) -> None:
    write_json(card, json_path)
    with atomic_output(text_path) as tmp:
        tmp.write_text(card_text(card))


def card_text(card: dict) -> str:
    """The short human-readable card."""
    spec, cohort = card["model_spec"], card["training"]["cohort"]
    lines = [f"# Model card: {card['model']}", "", f"**Intended use.** {card['intended_use']}", "",
             f"- Architecture: {spec['architecture']} (width {spec.get('width')}, "
             f"output {spec.get('output', 'direct')})",
             f"- Inputs: {', '.join(card['inputs'])}; target: {card['target']}",
             f"- Preprocessing: model grid {card['preprocessing']['preprocess']['shape']} (X, Y, Z), equalization "
             f"{card['preprocessing']['preprocess']['equalization']}, skull strip "
             f"{card['preprocessing']['skullstrip']['backend']}, registration "
             f"{card['preprocessing']['registration']['transform']}",
             f"- Training cohort: {cohort['sets']['train']['patients']} patients, {cohort['sets']['train']['scans']} "
             f"scans (source {cohort['source']}, sample-sheet sha256 {cohort['sample_sheet_sha256']})",
             f"- Weights: {card['weights']['file']}, sha256 {card['weights']['sha256']}",
             *[f"- Cannot: {limitation}" for limitation in card.get("limitations", [])],
             f"- Evaluation: {card.get('evaluation', 'held-out test sets of the split')}",
             *([f"- Inference: {_inference_text(card['inference'])}"] if card.get("inference") else []), "",
             "| test set | scans | metric | this model | identity (the T1 itself) |", "|---|---:|---|---|---|"]
    for set_name, values in card["test_metrics"].items():
        for metric in values[card["model"]]:
            lines.append(f"| {set_name} | {values['scans']} | {metric} | {values[card['model']][metric]['table']} | "
                         f"{values[IDENTITY][metric]['table']} |")
    return "\n".join(lines) + "\n"


def _inference_text(inference: dict) -> str:
    views = ", ".join(inference["views"]) or "none"
    return (f"{inference['tiling']} tiling, slice stride {inference['stride']}, test-time views averaged: {views} "
            "(predict with the same config does the same)")


def read_card(weights) -> dict:
    """The card beside ``weights``, refused if it describes other weights (its sha256 differs)."""
    card = read_json(card_path(weights))
    if card["weights"]["sha256"] != sha256(weights):
        raise ValueError(f"{card_path(weights)}: the model card describes other weights (sha256 "
                         f"{card['weights']['sha256'][:12]}, {weights} has {sha256(weights)[:12]})")
    return card


def _number(value):
    return None if pd.isna(value) else float(value)
