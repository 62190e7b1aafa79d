"""bench.py's GPU script, run where no GPU is: `python bench.py gpu --tiny` is the same code (the vc2_256 step
through train.py with random models, 4- vs 50-step sampling through sample.generate, the toy main job as a
subprocess) with toy-size models on the CPU. Its figures mean nothing; that it runs end to end is the point.
The bench picks bf16 autocast on a GPU or on a CPU with bf16 instructions (bench._bf16_fast), fp32 elsewhere:
both branches run here, whatever this CPU has."""
import pytest

import bench


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_gpu_bench_runs_at_tiny_size_on_a_cpu(capsys, monkeypatch, bf16):
    monkeypatch.setattr(bench, "_bf16_fast", lambda: bf16)
    out = bench.main(["gpu", "--tiny", "--threads", "1"])
    assert set(out) == {"gpu_vc2_256_step_s", "gpu_vc2_256_peak_gb", "gpu_vc2_256_trainable_m",
                        "gpu_sample_teacher_50step_s", "gpu_sample_turbo_4step_s", "gpu_sample_speedup",
                        "gpu_toy_main_job_minutes"}
    assert out["gpu_vc2_256_step_s"] > 0 and out["gpu_toy_main_job_minutes"] > 0
    assert out["gpu_vc2_256_peak_gb"] == 0                        # no GPU: nothing allocated there
    assert out["gpu_vc2_256_trainable_m"] > 0                     # a LoRA student trained
    assert out["gpu_sample_speedup"] > 2                          # 100 UNet passes against 4, whatever the machine
    assert "gpu_sample_speedup: " in capsys.readouterr().out     # the `name: value` lines
