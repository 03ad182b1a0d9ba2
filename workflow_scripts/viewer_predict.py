from cesynth.evaluate.viewer import predict_viewer
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    predict_viewer(snakemake.output[0], scan=snakemake.wildcards.pscan, stack_path=snakemake.input.stack,
                   synthesis=snakemake.input.synth, uncertainty=snakemake.input.get("uncertainty"),
                   inputs=p.inputs, model=p.model, warning=p.warning)
