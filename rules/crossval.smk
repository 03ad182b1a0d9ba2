# Cross-validation by patient (crossval:, cesynth.pipeline.crossval): the fold models' out-of-fold syntheses pooled
# into one model per architecture, the learning curve, and the models that ship (trained on every patient).

if CROSSVAL:

    rule pool_oof:
        """<model>_oof: each scan's synthesis and uncertainty map from the fold model that did not train on it."""
        localrule: True
        input:
            synth=lambda w: [p for m in CV.pooled[w.model] for p in syntheses(m, CV.models[m].test)],
            maps=lambda w: [p for m in CV.pooled[w.model] for p in uncertainty_maps(m, CV.models[m].test)],
        output:
            synth=syntheses("{model}", TEST),
            maps=uncertainty_maps("{model}", TEST),
        wildcard_constraints:
            model=model_pattern(CV.pooled),
        conda:
            "../envs/evaluate.yaml"
        log:
            log_path("pool_oof", "{model}"),
        script:
            "../workflow_scripts/pool_oof.py"

    rule learning_curve:
        """Out-of-fold gain over identity against the number of training patients, with a log-linear trend and
        its projection to larger cohorts (extrapolation)."""
        input:
            metrics=[layout.path("metrics", model=m) for m in CURVE_MODELS],
            identity=layout.path("metrics", model=plans.IDENTITY),
        output:
            table=report(study_file("learning_curve", "learning_curve.tsv"), caption="../report/learning_curve.rst",
                         category="Learning curve", labels={"figure": "table"}),
            trend=study_file("learning_curve", "trend.tsv"),
            figure=report(study_file("learning_curve", "learning_curve.png"), caption="../report/learning_curve.rst",
                          category="Learning curve", labels={"figure": "learning curve"}),
        params:
            models=CURVE_MODELS,
        conda:
            "../envs/evaluate.yaml"
        log:
            log_path("learning_curve", "all"),
        script:
            "../workflow_scripts/learning_curve.py"

    rule crossval:
        """The cross-validated study: every cross-validation study's tables and figures (the learning curve, which
        trains models of its own, is the target learning_curve)."""
        input:
            [study_file(s, "summary.html") for s in STUDIES],

    rule ship:
        """The models that ship: crossval.ship trained on every patient, with cards that give out-of-fold numbers."""
        input:
            [layout.path(k, model=m, stage=2) for m in CROSSVAL.get("ship") or CROSSVAL["models"]
             for k in ("weights", "model_card", "model_card_text")],
