from cesynth.io import redirect_output
from cesynth.predict import write_dicom

p = snakemake.params
with redirect_output(snakemake.log[0]):
    print(write_dicom(snakemake.input.synth, snakemake.output[0], patient=p.patient, model_name=p.model,
                      t1_series=snakemake.input.t1_series or None))
