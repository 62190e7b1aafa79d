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


def test_the_profile_times_every_region_of_a_student_step_and_of_the_comparison(monkeypatch, toy_models):
    """`python -m benchmarks profile` on 2 steps of toy models (1 seen and 1 held-out caption in the comparison, the
    teacher at 2 DDIM steps): every region of Algorithm 1's step is timed (the four UNet passes, the rewards, the
    backward pass, the optimizer step, the data), the shares are fractions that add up to 1 with `other`, and the
    comparison times both models' UNets."""
    import sample
    from benchmarks.profile import bench_profile
    from toy import evaluate

    monkeypatch.setattr(evaluate, "quick_captions", lambda: (["a red circle moving left"],
                                                             evaluate.split_captions("heldout")[:1]))
    real = sample.sampler_settings
    monkeypatch.setattr(sample, "sampler_settings", lambda meta, steps=None, guidance=None: real(
        meta, steps or (None if meta.get("kind") == "turbo" else 2), guidance))
    out = bench_profile(steps=2, warmup=1, toy_models=toy_models)
    step = {k: v for k, v in out.items() if k.startswith("profile_step_")}
    assert set(step) >= {f"profile_step_{r}_share" for r in (
        "unet_student_f_theta", "unet_teacher_cond_uncond", "unet_target_f_theta", "image_reward", "video_reward",
        "backward", "optimizer_step", "data", "text_tower", "first_stage_encode", "first_stage_decode", "other")}
    assert all(0 < v < 1 for v in step.values()), step
    assert abs(sum(step.values()) - 1) < 1e-9 and out["profile_student_step_s"] > 0
    compare = {k: v for k, v in out.items() if k.startswith("profile_compare_") and k.endswith("_share")}
    assert {"profile_compare_unet_teacher_share", "profile_compare_unet_T2V_Turbo_share"} <= set(compare)
    assert all(0 < v < 1 for v in compare.values()) and abs(sum(compare.values()) - 1) < 1e-9, compare
