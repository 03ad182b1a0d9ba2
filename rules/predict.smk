# Prediction for new patients without CE-T1 (snakemake predict): the same preprocessing as training,
# but registered to and skull-stripped on the patient's own T1, and written back onto its native grid.

from cesynth import predict as P

PREDICT = config.get("predict") or {}

if PREDICT.get("samplesheet"):
    PREDICT_MODEL = PREDICT["model"]
    if PREDICT_MODEL not in config["models"]:
        sys.exit(f"config: predict.model {PREDICT_MODEL!r} is not a model "
                 f"({configcheck.did_you_mean(PREDICT_MODEL, config['models'], 'models')})")
    PREDICT_SPEC = S.model_spec(config, PREDICT_MODEL)
    PREDICT_MOVING = [m for m in PREDICT_SPEC["inputs"] if m != P.REFERENCE]
    PREDICT_SAMPLES = P.load_samples(PREDICT["samplesheet"], PREDICT_SPEC["inputs"]).set_index("scan", drop=False)
    # Explicit weights (e.g. copied from a training site) or the ones this workflow trains.
    PREDICT_WEIGHTS = PREDICT.get("weights") or S.path("weights", model=PREDICT_MODEL, stage=2)

    wildcard_constraints:
        pscan="|".join(map(re.escape, PREDICT_SAMPLES.scan)),
        pmod="|".join(PREDICT_MOVING) or "(?!)",

    rule predict:
        """Synthetic CE-T1 of every scan of predict.samplesheet, on its native T1 grid and in model space."""
        input:
            [predict_out(k, s) for s in PREDICT_SAMPLES.scan for k in ("synth", "synth_model", "sidecar", "panel",
                                                                  "uncertainty", "uncertainty_sidecar")],

    # The training cohort's rules (rules/preprocess.smk) on a new patient's files: same scripts,
    # settings and resources, the patient's T1 as reference, outputs in the predict_* paths.
    use rule validate_inputs as predict_validate with:
        input:
            images=lambda w: [PREDICT_SAMPLES.at[w.pscan, m] for m in PREDICT_SPEC["inputs"]],
        output:
            S.path("predict_validated"),
        params:
            samples=lambda w: [PREDICT_SAMPLES.loc[w.pscan].to_dict()],
            modalities=PREDICT_SPEC["inputs"],
            reference=P.REFERENCE,
            mask_labels=None,  # new patients come without tumour masks
        resources:
            scan_slots=1,  # SCAN_SLOTS, rules/common.smk
        group:
            "predict"
        log:
            log("predict_validate", "{pscan}"),

    use rule coregister as predict_coregister with:
        input:
            moving=lambda w: PREDICT_SAMPLES.at[w.pscan, w.pmod],
            reference=lambda w: PREDICT_SAMPLES.at[w.pscan, P.REFERENCE],
            validated=S.path("predict_validated"),
        output:
            image=S.path("predict_coregistered"),
            transform=S.path("predict_transform"),
            qc=S.path("predict_coreg_qc"),
        params:
            settings=config["registration"],
        group:
            "predict"
        log:
            log("predict_coregister", "{pscan}_{pmod}"),
        benchmark:
            benchmark("predict_coregister", "{pscan}_{pmod}")

    use rule skullstrip as predict_skullstrip with:
        input:
            reference=lambda w: PREDICT_SAMPLES.at[w.pscan, P.REFERENCE],
            validated=S.path("predict_validated"),
        output:
            mask=S.path("predict_brain_mask"),
            qc=S.path("predict_skullstrip_qc"),
        params:
            settings=config["skullstrip"],
        group:
            "predict"
        log:
            log("predict_skullstrip", "{pscan}"),
        benchmark:
            benchmark("predict_skullstrip", "{pscan}")

    use rule preprocess as predict_preprocess with:
        input:
            reference=lambda w: PREDICT_SAMPLES.at[w.pscan, P.REFERENCE],
            coregistered=expand(S.path("predict_coregistered"), pmod=PREDICT_MOVING, allow_missing=True),
            mask=S.path("predict_brain_mask"),
        output:
            stack=S.path("predict_stack"),
            meta=S.path("predict_stack_json"),
        params:
            scan="{pscan}",
            modalities=PREDICT_SPEC["inputs"],
            moving=PREDICT_MOVING,
            reference=P.REFERENCE,  # T1: no CE-T1, so no enhancement mask
            tumour_mask_labels=None,
        group:
            "predict"
        log:
            log("predict_preprocess", "{pscan}"),

    rule predict_synthesize:
        """Run the trained model; write the synthetic CE-T1 (native T1 grid and model space), sidecar, panel."""
        input:
            weights=PREDICT_WEIGHTS,
            stack=S.path("predict_stack"),
            meta=S.path("predict_stack_json"),
            t1=lambda w: PREDICT_SAMPLES.at[w.pscan, P.REFERENCE],
        output:
            synth=predict_out("synth"),
            synth_model=predict_out("synth_model"),
            sidecar=predict_out("sidecar"),
            panel=predict_out("panel"),
            uncertainty=predict_out("uncertainty"),
            uncertainty_model=predict_out("uncertainty_model"),
            uncertainty_sidecar=predict_out("uncertainty_sidecar"),
        params:
            model=PREDICT_MODEL,
            spec=PREDICT_SPEC,
            inputs=lambda w: {m: PREDICT_SAMPLES.at[w.pscan, m] for m in PREDICT_SPEC["inputs"]},
            settings={
                "model": config["models"][PREDICT_MODEL],
                **{k: config[k] for k in ("registration", "skullstrip", "preprocess", "inference", "uncertainty")},
            },
            preprocessing=S.preprocessing_record(config),
            device=S.model_settings(config, PREDICT_MODEL)["device"],
            amp=S.model_settings(config, PREDICT_MODEL)["amp"],
            **config["inference"],
        threads: S.model_settings(config, PREDICT_MODEL)["threads"]
        resources:
            mem_mb=8000,
            runtime=30,
            gpu=1,
        conda:
            "../envs/train.yaml"
        log:
            log("predict_synthesize", "{pscan}"),
        benchmark:
            benchmark("predict_synthesize", "{pscan}")
        script:
            "../workflow_scripts/predict_synthesize.py"

else:
    if "predict" in REQUESTED:
        sys.exit(P.NOT_CONFIGURED)

    rule predict:
        """Not configured: fails with what to set (predict.samplesheet, predict.model)."""
        input:
            P.not_configured,
