from cesynth.io import redirect_output, save_stack
from cesynth.preprocessing import preprocess_scan

p = snakemake.params
with redirect_output(snakemake.log[0]):
    coregistered = dict(zip(p.moving, snakemake.input.coregistered))
    inputs = {m: coregistered.get(m, snakemake.input.reference) for m in p.modalities}
    stack, channels, affine = preprocess_scan(
        snakemake.input.reference, inputs, snakemake.input.mask, p.shape, p.equalization, p.enhancement_delta,
        reference_name=p.reference, tumour_mask_path=snakemake.input.get("tumour_mask") or None,
        tumour_mask_labels=p.tumour_mask_labels)
    save_stack(stack, channels, affine, snakemake.output.stack, snakemake.output.meta,
               extra={"scan": p.scan, "equalization": p.equalization})
