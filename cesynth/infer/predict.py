"""Prediction for new patients who received no contrast: synthetic CE-T1 from their own scans.

The inputs of a new patient are registered to the patient's own T1 (there is no CE-T1 to register
to), skull-stripped on the T1 and preprocessed exactly as in training (:mod:`cesynth.preprocess.preprocessing`).
A trained model then synthesizes the CE-T1 on the model grid, which is resampled back onto the
patient's native T1 grid so that it overlays the acquired scans in any viewer. Every output says,
in its NIfTI header, in a JSON sidecar and in its figure, that it is synthetic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import nibabel as nib
import numpy as np
from scipy import ndimage

from cesynth.evaluate import modelcard
from cesynth.evaluate.plots import prediction_panel
from cesynth.infer import uncertainty
from cesynth.infer.inference import InferenceSettings, Synthesizer
from cesynth.inputs import dicom
from cesynth.inputs.cohort import load_samples as _load_sheet
from cesynth.inputs.validate import InputError, check_files, check_sheet
from cesynth.io import Stack, save_nifti, sha256, write_json
from cesynth.pipeline.plans import record_differences

# The sequence a new patient's other inputs are registered to and skull-stripped on, and whose native grid the
# synthesis is written back onto: the T1 (the training "reference" is the CE-T1, which a new patient lacks).
GRID_SEQUENCE = "t1"
WARNING = ("SYNTHETIC contrast-enhanced T1 computed by a neural network from non-contrast scans; "
           "no contrast agent was given and this image was not acquired. Intensities are equalized "
           "to [0, 1] inside the brain, not scanner units.")

NOT_CONFIGURED = ("snakemake predict: set predict.samplesheet (a TSV/CSV with columns patient, scan and one "
                  "column per input of predict.model, e.g. t1, t2, flair; no CE-T1) and predict.model "
                  "(a model name under models:), e.g. --configfile my_predict.yaml; see docs/predict.md")


def not_configured(_wildcards=None):
    """Input function of the unconfigured predict rule (reached only where the command line is unknown)."""
    raise ValueError(NOT_CONFIGURED)


DICOM_OUTPUT = ("auto", "always", "never")


def wants_dicom(setting: str, t1_is_dicom: bool) -> bool:
    """Whether to write the synthesis as a DICOM series: ``predict.dicom_output`` auto (when the T1 came as
    DICOM), always or never."""
    if setting not in DICOM_OUTPUT:
        raise ValueError(f"predict.dicom_output must be one of {DICOM_OUTPUT}, got {setting!r}")
    return setting == "always" or setting == "auto" and t1_is_dicom


def load_samples(samplesheet, inputs, open_images=True):
    """The prediction sheet as a table (paths made absolute), refused with every problem of every scan listed.

    ``open_images``: open every image too (:func:`~cesynth.inputs.validate.check_files`), so that the whole sheet is
    screened before any job, as a training sheet is by its first job; else only the table and that the files
    exist (a cluster job, whose sheet the submitting process screened).
    """
    table = _load_sheet({"source": "samplesheet", "samplesheet": samplesheet}, None, None)
    problems = check_sheet(table, inputs, check_exists=not open_images)
    if open_images and not any(p.scan == "*" for p in problems):  # "*": the sheet lacks columns
        problems += check_files(table, inputs, GRID_SEQUENCE)
    if problems:
        raise InputError(problems)
    return table


def to_native(volume_xyz: np.ndarray, model_affine: np.ndarray, native_path) -> tuple[np.ndarray, np.ndarray]:
    """Resample a model-space volume onto the grid of ``native_path``; returns (array, native affine).

    Inverts :func:`cesynth.preprocess.preprocessing.canonical` + ``resize`` in one step: every native voxel is
    mapped through world coordinates into the model grid (trilinear; outside the model grid = 0).
    """
    native = nib.load(str(native_path))
    to_model = np.linalg.inv(model_affine) @ native.affine
    out = ndimage.affine_transform(np.asarray(volume_xyz, dtype=np.float32), to_model[:3, :3], offset=to_model[:3, 3],
                                   output_shape=native.shape[:3], order=1, mode="constant", cval=0.0)
    return out.astype(np.float32), native.affine


def check_preprocessing(weights, payload: dict, preprocessing: dict) -> None:
    """Refuse weights trained on stacks preprocessed otherwise than this run's (``preprocessing``:
    :func:`cesynth.pipeline.plans.preprocessing_record` of the config), naming every differing key."""
    if payload.get("preprocessing") is None:
        raise ValueError(f"{weights}: the weights do not record the preprocessing they were trained with "
                         "(written by an older cesynth); retrain them")
    differences = record_differences(payload["preprocessing"], preprocessing)
    if differences:
        raise ValueError(f"{weights}: trained with another preprocessing than this run's config; use the "
                         "training's settings (or retrain):\n" + "\n".join(f"  - {d}" for d in differences))


@dataclass(frozen=True)
class Predictor:
    """The model of ``snakemake predict``, the same for every patient of a run: its name and spec under
    ``models``, its weights, the preprocessing record of this run's config
    (:func:`cesynth.pipeline.plans.preprocessing_record`, checked against the weights') and how it runs."""
    name: str
    spec: dict
    weights: str
    preprocessing: dict
    inference: InferenceSettings


def predict_scan(predictor: Predictor, *, scan: str, stack_path, t1_path, inputs: dict, settings: dict,
                 out: dict) -> dict:
    """Synthesize one patient's CE-T1 and write ``out``: synth (native T1 grid), synth_model, sidecar, panel, and,
    when ``out`` names them, its uncertainty map (uncertainty, uncertainty_model, uncertainty_sidecar;
    :mod:`cesynth.infer.uncertainty`).

    ``settings`` (the configuration sections that shaped the result) goes into the sidecar verbatim;
    ``predictor.preprocessing`` must equal what the weights were trained with (:func:`check_preprocessing`).
    """
    model_name, model_spec, weights = predictor.name, predictor.spec, predictor.weights
    # window tiling whatever inference.tiling says: the uncertainty map's views move the windows of this tiling
    synthesizer = Synthesizer.load(weights, replace(predictor.inference, tiling="window"))
    if synthesizer.payload["model_spec"] != model_spec:
        raise ValueError(f"{weights}: weights are of model {synthesizer.payload['model_spec']}, but predict.model "
                         f"{model_name!r} is configured as {model_spec}")
    check_preprocessing(weights, synthesizer.payload, predictor.preprocessing)
    card = modelcard.read_card(weights)
    pred = synthesizer.write(stack_path, out["synth_model"])
    stack = Stack(stack_path)
    native, native_affine = to_native(stack.to_xyz(pred), stack.affine, t1_path)
    description = f"SYNTHETIC CE-T1 (cesynth {model_name}), not acquired"
    save_nifti(native, native_affine, out["synth"], description=description)
    digest, spread = sha256(weights), None
    if "uncertainty" in out.keys():  # the map beside it, with the synthesis's own tiling (docs/uncertainty.md)
        spread = uncertainty.scan_map(synthesizer, stack, pred, settings["uncertainty"])
        spread_xyz = stack.to_xyz(spread)
        record = {"model": model_name, "weights_sha256": digest, "synthesis": str(out["synth"]),
                  "inference": asdict(synthesizer.settings), "uncertainty": settings["uncertainty"]}
        uncertainty.write_prediction_map(spread_xyz, stack.affine, to_native(spread_xyz, stack.affine, t1_path)[0],
                                         native_affine, out, record)
    sidecar = {
        "synthetic": True,
        "warning": WARNING,
        "scan": scan,
        "model": model_name,
        "model_spec": model_spec,
        "target": synthesizer.payload["target"],
        "weights": str(weights),
        "weights_sha256": digest,
        "inputs": {name: str(p) for name, p in inputs.items()},
        "space": {"synth": f"native grid of the input T1 ({t1_path})", "synth_model": "model grid (RAS, resized)"},
        "config": settings,
        "config_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest(),
        "nifti_descrip": description,
        "model_card": modelcard.summary(card),
        "uncertainty": ({"method": settings["uncertainty"]["method"], "file": str(out["uncertainty"])}
                        if spread is not None else None),
    }
    write_json(sidecar, out["sidecar"])
    prediction_panel(stack, pred, model_spec["inputs"], out["panel"], f"{scan}: SYNTHETIC - not acquired (model {model_name})",
                     uncertainty_zyx=spread)
    return sidecar


UNCERTAINTY_COMMENT = ("UNCERTAINTY of the SYNTHETIC contrast-enhanced T1 of the same study (docs/uncertainty.md; "
                       "the NIfTI sidecar names the method): bright = do not trust the synthesis there. "
                       "Not an acquired image.")


def write_dicom(synth_path, out_dir, *, patient: str, model_name: str, t1_series=None, uncertainty_path=None,
                uncertainty_dir=None) -> dict:
    """The synthetic CE-T1 (native T1 grid) as a DICOM series, and its uncertainty map as a second one when
    ``uncertainty_path`` is given: in the T1 series' study and frame of reference when the T1 came as DICOM
    (``t1_series``), else in a new study of ``patient``."""
    attributes = dicom.source_attributes(t1_series) if t1_series else dicom.new_study_attributes(patient)
    img = nib.load(str(synth_path))
    written = {"synthesis": dicom.write_series(img.get_fdata(), img.affine, out_dir, attributes,
                                               f"SYNTHETIC CE-T1 cesynth {model_name} NOT ACQUIRED", WARNING)}
    if uncertainty_path:
        img = nib.load(str(uncertainty_path))
        numbered = {**attributes, "SeriesNumber": int(attributes.get("SeriesNumber") or 0) + 1}  # its own number
        written["uncertainty"] = dicom.write_series(img.get_fdata(), img.affine, uncertainty_dir, numbered,
                                                    f"UNCERTAINTY of SYNTHETIC CE-T1 cesynth {model_name}",
                                                    UNCERTAINTY_COMMENT)
    return written
