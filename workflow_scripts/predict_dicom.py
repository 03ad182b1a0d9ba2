from cesynth.infer.predict import write_dicom
from cesynth.io import redirect_output

p, out = snakemake.params, snakemake.output
with redirect_output(snakemake.log[0]):
    print(write_dicom(snakemake.input.synth, out.dicom, patient=p.patient, model_name=p.model,
                      t1_series=snakemake.input.t1_series or None, uncertainty_path=snakemake.input.get("uncertainty"),
                      uncertainty_dir=out.get("uncertainty_dicom")))
