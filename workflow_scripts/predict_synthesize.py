import torch

from cesynth.io import redirect_output
from cesynth.predict import predict_scan

p = snakemake.params
with redirect_output(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    predict_scan(scan=snakemake.wildcards.pscan, model_name=p.model, model_spec=p.spec,
                 weights=snakemake.input.weights, stack_path=snakemake.input.stack, t1_path=snakemake.input.t1,
                 inputs=p.inputs, settings=p.settings, preprocessing=p.preprocessing, out=snakemake.output,
                 stride=p.stride, batch_size=p.batch_size, device=p.device, amp=p.amp, cpu_bf16=p.cpu_bf16)
