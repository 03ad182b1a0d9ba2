from cesynth.io import redirect_output, save_stack
from cesynth.preprocess.preprocessing import preprocess_scan

p = snakemake.params
with redirect_output(snakemake.log[0]):
    coregistered = dict(zip(p.moving, snakemake.input.coregistered))
    inputs = {m: coregistered.get(m, snakemake.input.reference) for m in p.modalities}
    try:
        stack, channels, affine = preprocess_scan(
            snakemake.input.reference, inputs, snakemake.input.mask, p.settings, reference_name=p.reference,
            tumour_mask_path=snakemake.input.get("tumour_mask") or None, labels=p.labels)
    except ValueError as error:  # the scan's name first, as every input problem is reported
        raise SystemExit(f"scan {p.scan}: {error}") from None
    save_stack(stack, channels, affine, snakemake.output.stack, snakemake.output.meta,
               extra={"scan": p.scan, "equalization": p.settings["equalization"]})
