"""A SLURM request no node can run is refused before submission (it would pend for ever)."""

from cesynth.pipeline.slurmfit import Request, gpu_count, misfits, parse_sinfo

# sinfo -h -N -o "%P %c %m %G" of a small cluster: two 4-CPU CPU nodes, one GPU node
SINFO = """\
cpu* 4 15000 (null)
cpu* 4 15000 (null)
gpu 8 64000 gpu:a100:2(S:0-1)
"""


def test_parse_sinfo():
    nodes, default = parse_sinfo(SINFO)
    assert default == "cpu"
    assert nodes == {"cpu": [(4, 15000, 0), (4, 15000, 0)], "gpu": [(8, 64000, 2)]}
    assert gpu_count("gpu:2,gpu:tesla:1") == 3 and gpu_count("(null)") == 0


def test_misfits_name_the_job_what_it_asks_and_the_flag():
    fits = Request("group job 'scan' (S1)", "--resources mem_mb=N", "", 2, 8000)
    group = Request("group job 'scan' (S2)", "--resources mem_mb=N", "", 4, 16000)
    train = Request("rule train_stage1 (hrfcn3d)", "--set-resources train_stage1:mem_mb=N", "gpu", 8, 64000, 1)
    greedy = Request("rule train_stage1 (unet2d)", "--set-resources train_stage1:mem_mb=N", "gpu", 2, 16000, 4)
    typo = Request("rule infer (unet2d)", "--set-resources infer:mem_mb=N", "gpus", 2, 8000, 1)
    lines = misfits([fits, group, train, greedy, typo], SINFO)
    assert lines == [
        "SLURM: group job 'scan' (S2) asks for 4 CPUs, 16000 MB but no node of partition 'cpu' has that "
        "(largest: 4 CPUs, 15000 MB, 0 GPUs); it would pend for ever: lower it with --resources mem_mb=N "
        "or choose another partition",
        "SLURM: rule train_stage1 (unet2d) asks for 2 CPUs, 16000 MB, 4 GPUs but no node of partition 'gpu' "
        "has that (largest: 8 CPUs, 64000 MB, 2 GPUs); it would pend for ever: lower it with "
        "--set-resources train_stage1:mem_mb=N or choose another partition",
        "SLURM: rule infer (unet2d): partition 'gpus' does not exist (sinfo lists cpu, gpu); set "
        "CESYNTH_SLURM_PARTITION / CESYNTH_SLURM_GPU_PARTITION",
    ]
