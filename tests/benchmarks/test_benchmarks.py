"""The benchmarks' scripts for a GPU and for the full-size VC2 step, run where no GPU is, at toy size: `python -m
benchmarks gpu --tiny` (the vc2_256 step through train.py with random models, 4- vs 50-step sampling through sample.generate,
the toy main job) and `python -m benchmarks vc2 --tiny` (the same step with its accounting). Their figures mean nothing;
that they run end to end is the point. The step runs in bf16 autocast on a GPU or a CPU with bf16 instructions
(benchmarks/common.py: bf16_fast), in fp32 elsewhere: each branch runs here, whatever this CPU has."""
from benchmarks import common
from benchmarks.__main__ import main


def test_the_gpu_bench_runs_at_tiny_size_on_a_cpu_without_bf16(capsys, monkeypatch):
    monkeypatch.setattr(common, "bf16_fast", lambda: False)
    out = main(["gpu", "--tiny", "--threads", "1"])
    assert set(out) == {"gpu_vc2_256_step_s", "gpu_vc2_256_peak_gb", "gpu_vc2_256_trainable_m",
                        "gpu_sample_teacher_50step_s", "gpu_sample_turbo_4step_s", "gpu_sample_speedup",
                        "gpu_toy_main_job_minutes"}
    assert out["gpu_vc2_256_step_s"] > 0 and out["gpu_toy_main_job_minutes"] > 0
    assert out["gpu_vc2_256_peak_gb"] == 0                        # no GPU: nothing allocated there
    assert out["gpu_vc2_256_trainable_m"] > 0                     # a LoRA student trained
    assert out["gpu_sample_speedup"] > 2                          # 100 UNet passes against 4, whatever the machine
    assert "gpu_sample_speedup: " in capsys.readouterr().out     # the `name: value` lines


def test_the_vc2_step_runs_in_bf16_as_on_a_cpu_with_bf16_instructions(capsys, monkeypatch):
    """`python -m benchmarks vc2` on a CPU with avx512_bf16 or AMX takes the bf16 path: the decoded frames reach the
    rewards in bf16 (the path that once died in the image reward's resize)."""
    monkeypatch.setattr(common, "bf16_fast", lambda: True)
    out = main(["vc2", "--tiny", "--threads", "1"])
    printed = capsys.readouterr().out
    assert ", bf16, " in printed                                   # the accounting names the precision it ran
    assert "vc2_train_step_s: " in printed and "vc2_train_peak_rss_gb: " in printed
    assert out["vc2_train_step_s"] > 0 and out["vc2_train_trainable_m"] > 0


def test_the_ms_step_runs_through_train_py_at_tiny_size(capsys):
    """`python -m benchmarks ms --tiny`: --preset ms through train.py's distill, with ModelScope's classes (diffusers'
    UNet and VAE, transformers' CLIP text tower) at toy size, a LoRA student, HPSv2.1's and ViCLIP's classes."""
    out = main(["ms", "--tiny", "--threads", "1"])
    assert set(out) == {"ms_train_step_s", "ms_train_peak_rss_gb", "ms_train_trainable_m"}
    assert out["ms_train_step_s"] > 0 and out["ms_train_trainable_m"] > 0
    assert "ms_train_step_s: " in capsys.readouterr().out
