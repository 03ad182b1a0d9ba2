# Per-scan and cohort QC of preprocessing: mask/registration panels and a flagged cohort table.


rule qc_scan:
    """Panel of the brain mask and every registered input over the reference, and its QC numbers."""
    input:
        reference=lambda w: raw(w.scan, REF),
        mask=S.path("brain_mask"),
        mask_qc=S.path("skullstrip_qc"),
        registered=expand(S.path("coregistered"), mod=MOVING, allow_missing=True),
        coreg_qc=expand(S.path("coreg_qc"), mod=MOVING, allow_missing=True),
    output:
        panel=report(
            "results/qc/preproc/{scan}_qc.png",
            caption="../report/qc_panel.rst",
            category="QC",
            subcategory="per-scan panels",
            labels={"scan": "{scan}"},
        ),
        row="results/qc/preproc/{scan}_qc.tsv",
    params:
        moving=MOVING,
    group:
        "scan"
    conda:
        "../envs/preprocess.yaml"
    log:
        log("qc_scan", "{scan}"),
    script:
        "../workflow_scripts/qc_scan.py"


rule qc_cohort:
    """Cohort QC table; flags brain volumes > 25% off the median and registrations that lowered MI."""
    input:
        rows=expand("results/qc/preproc/{scan}_qc.tsv", scan=SAMPLES.scan),
    output:
        tsv="results/qc/preproc_qc.tsv",
        html=report("results/qc/preproc_qc.html", caption="../report/qc.rst", category="QC"),
    params:
        volume_tolerance=0.25,
    conda:
        "../envs/preprocess.yaml"
    log:
        log("qc_cohort", "all"),
    script:
        "../workflow_scripts/qc_cohort.py"


rule preprocess_all:
    """Every scan preprocessed and quality-checked, nothing trained: look at a new cohort first."""
    input:
        stacks(SAMPLES.scan),
        rules.qc_cohort.output,
