import torch

from cesynth.infer.inference import InferenceSettings
from cesynth.infer.predict import Predictor, predict_scan
from cesynth.io import redirect_output

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    predictor = Predictor(name=p.model, spec=p.spec, weights=snakemake.input.weights, preprocessing=p.preprocessing,
                          inference=InferenceSettings(**p.inference))
    predict_scan(predictor, scan=snakemake.wildcards.pscan, stack_path=snakemake.input.stack,
                 t1_path=snakemake.input.t1, inputs=p.inputs, settings=p.settings, out=snakemake.output)
