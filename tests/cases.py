"""The bad inputs the command lines are tried with, one table per test module (a new case is one line): CLI_CASES
for train.py, sample.py, toy/evaluate.py, toy/prepare.py, vc2/convert.py and ms/convert.py (test_bad_inputs.py),
DATA_CASES for vc2/data.py (vc2/test_data.py), REAL_EVAL_CASES for vc2/evaluate.py (test_real_evaluate.py). Here, in a
module of their own, so that test_bad_inputs.py::test_the_count can count all three without one test module importing
another."""
from conftest import TOY_FLAGS, TRAIN_CPU

# a train.py that would run: 2 steps of 1 clip, the test's toy models (so a flag it does not refuse costs seconds)
QUICK_TRAIN = ["--toy-models", "{toy_models}", "--out", "{dir}/run", "--turbo-steps", "2", "--turbo-batch", "1",
               *TRAIN_CPU]
QUICK_SAMPLE = ["--out", "{dir}/samples", "--steps", "2"]
MS_OUT = ["--ms", "{ms}", "--out", "{dir}/ms_out"]   # a good tiny ModelScope folder, and a new --out

# (command, argv with {name} = files[name] (test_bad_inputs.py's fixture), exit code, a phrase of the one line).
# vc2/data.py's cases are DATA_CASES below.
CLI_CASES = [
    # sample.py
    ("sample", ["--ckpt", "{missing}", "--prompt", "x"], 2, "no such file or folder (train one first"),
    ("sample", ["--ckpt", "{empty_dir}", "--prompt", "x"], 2, "no turbo.safetensors or teacher.safetensors"),
    ("sample", ["--ckpt", "{text}", "--prompt", "x"], 2, "not a readable safetensors checkpoint"),
    ("sample", ["--ckpt", "{truncated}", "--prompt", "x"], 2, "not a readable safetensors checkpoint"),
    ("sample", ["--ckpt", "{reward}", "--prompt", "x"], 2, "is a reward model"),
    ("sample", ["--ckpt", "{state}", "--prompt", "x"], 2, "is a resumable training state"),
    ("sample", ["--ckpt", "{plain}", "--prompt", "x"], 2, "not a checkpoint written by this project"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{dir}/nope.txt"], 2, "--prompts {dir}/nope.txt: no such file"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{prompts_empty}"], 2, "has no captions"),
    ("sample", ["--ckpt", "{teacher}", "--prompts", "{prompts_binary}"], 2, "cannot read it as a text file"),
    ("sample", ["--ckpt", "{teacher}"], 2, "give --prompt TEXT or --prompts FILE"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--num-per-prompt", "0"], 2, "--num-per-prompt must be"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--steps", "0"], 2, "--steps must be >= 1"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--dtype", "fp8"], 2, "invalid choice: 'fp8'"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--device", "tpu"], 2, "--device tpu"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "a red circle moving left", "--vbench", "--out", "{vbench}"], 1,
     "exists (1 of the VBench names are taken): give a new --out"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "a red circle moving left", "--origin-steps", "2"], 2,
     "--origin-steps 2: need --steps (4) <= it <= 1000"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--guidance", "nan", *QUICK_SAMPLE], 2,
     "--guidance nan: must be a finite number"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--guidance", "-1", *QUICK_SAMPLE], 2,
     "--guidance -1: must be >= 0"),
    # train.py
    ("train", ["--teacher", "{missing}", *TRAIN_CPU], 2, "no teacher checkpoint at"),
    ("train", ["--teacher", "{reward}", *TRAIN_CPU], 2, "is a reward model"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{dir}/nope", "--captions", "{csv}", *TRAIN_CPU], 2,
     "--data/--captions: no video folder at"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{videos}", "--captions", "{videos}", *TRAIN_CPU], 2,
     "--data/--captions:"),
    ("train", ["--toy-models", "{toy_models}", "--data", "{videos}", "--captions", "{csv}", *TRAIN_CPU], 2,
     "real data needs a real image reward model: give --hps PATH"),
    ("train", ["--toy-models", "{toy_models}", "--lr-schedule", "linear", *TRAIN_CPU], 2,
     "--lr-schedule must be one of"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", *TRAIN_CPU], 2, "needs --bert-vocab"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", "--viclip", "{missing}", "--bert-vocab",
               "{vocab}", *TRAIN_CPU], 2, "--internvideo2 takes the place of --viclip"),
    ("train", ["--toy-models", "{toy_models}", "--internvideo2", "{missing}", "--bert-vocab", "{vocab}", *TRAIN_CPU], 2,
     "no video reward model at {missing}"),
    ("train", ["--toy-models", "{toy_models}", "--lora-dropout", "1", *TRAIN_CPU], 2, "--lora-dropout 1: must be in [0, 1)"),
    ("train", ["--toy-models", "{toy_models}", "--turbo-lr", "fast", *TRAIN_CPU], 2, "--turbo-lr: invalid float value"),
    ("train", ["--toy-models", "{toy_models}", "--out", "{state_dir}", "--resume", *TRAIN_CPU], 1,
     "which was trained with other values: --turbo-lr 0.0001 (saved: 0.5). Give the saved values"),
    ("train", ["--toy-models", "{toy_models}", "--out", "{world_dir}", "--resume", *TRAIN_CPU], 1,
     "which was trained with other values: 1 process(es) (saved: 2; torchrun --nproc_per_node=2)"),
    # every float flag finite, every number in its range, at parse time (not a run of non-finite losses)
    ("train", [*QUICK_TRAIN, "--beta-img", "nan"], 2, "--beta-img nan: must be a finite number"),
    ("train", [*QUICK_TRAIN, "--w-max", "nan"], 2, "--w-max nan: must be a finite number"),
    ("train", [*QUICK_TRAIN, "--max-grad-norm", "inf"], 2, "--max-grad-norm inf: must be a finite number"),
    ("train", [*QUICK_TRAIN, "--beta-vid", "-1"], 2, "--beta-vid -1: must be >= 0"),
    ("train", [*QUICK_TRAIN, "--turbo-lr", "0"], 2, "--turbo-lr 0: must be > 0"),
    ("train", [*QUICK_TRAIN, "--target-decay", "1"], 2, "--target-decay 1: must be in [0, 1)"),
    ("train", [*QUICK_TRAIN, "--huber-c", "-0.001"], 2, "--huber-c -0.001: must be > 0"),
    ("train", [*QUICK_TRAIN, "--temporal-dropout", "1"], 2, "--temporal-dropout 1: must be in [0, 1)"),
    # clips the toy world cannot draw (numpy's "low >= high" in the first step), e.g. --preset ms's 16 x 256 x 256
    ("train", [*QUICK_TRAIN, "--frames", "16"], 2, "--frames 16: the toy world's shapes leave a 32 px frame within "
                                                   "16 frames; give --frames 9 or fewer"),
    ("train", ["--preset", "ms", "--teacher", "{teacher}", *QUICK_TRAIN], 2, "leave a 256 px frame within 16 frames; "
                                                                            "give --frames 9"),
    # --resume with nothing of this run's to resume: say what OUT holds, do not start over from step 0
    ("train", [*QUICK_TRAIN, "--rewards", "none", "--out", "{other_state}", "--resume"], 2,
     "--resume: no state of vcm in {other_state}; it holds turbo.state-0000100.safetensors (a run with --rewards "
     "image+video): give that run's flags to resume it, or drop --resume to start from step 0"),
    ("train", [*QUICK_TRAIN, "--out", "{dir}/no_run", "--resume"], 2,
     "--resume: no state of turbo in {dir}/no_run (no such folder): drop --resume to start from step 0"),
    # toy/evaluate.py
    ("evaluate", ["--ckpt", "{missing}"], 2, "no such file or folder"),
    ("evaluate", ["--ckpt", "{reward}"], 2, "is a reward model"),
    ("evaluate", ["--ckpt", "{teacher}", "--per-seen", "-1"], 2, "--per-seen and --per-heldout must be >= 0"),
    ("evaluate", ["--ckpt", "{teacher}", "--per-seen", "0", "--per-heldout", "0"], 2, "and not both 0"),
    ("evaluate", ["--ckpt", "{teacher}", "--steps", "0"], 2, "--steps must be >= 1"),
    ("evaluate", ["--ckpt", "{teacher}", "--shape-px", "20"], 2, "--shape-px must be in [4, 16]"),
    ("evaluate", ["--ckpt", "{teacher}", "--train"], 2, "--train and --tune-guidance go with --table"),
    ("evaluate", ["--table", "{dir}/no_run"], 2, "--table {dir}/no_run: no such folder"),
    ("evaluate", ["--table", "{dir}", "--toy-models", "{empty_dir}"], 2, "no teacher.safetensors there"),
    ("evaluate", ["--ckpt", "{teacher}", "--ckpt", "{teacher}"], 2, "the toy evaluator judges one --ckpt"),
    ("evaluate", ["--ckpt", "{teacher}", "--num-per-prompt", "2"], 2, "unrecognized arguments: --num-per-prompt"),
    ("evaluate", ["--ckpt", "{teacher}", "--guidance", "inf", "--per-seen", "0", "--per-heldout", "1", "--steps", "2",
                  "--out", "{dir}/e"], 2, "--guidance inf: must be a finite number"),
    # toy/prepare.py
    ("prepare", [*TOY_FLAGS, "--teacher-lr", "nan", "--out", "{dir}/p"], 2,
     "--teacher-lr nan: must be a finite number"),
    ("prepare", [*TOY_FLAGS, "--ema-decay", "1", "--out", "{dir}/p"], 2, "--ema-decay 1: must be in [0, 1)"),
    ("prepare", [*TOY_FLAGS, "--frames", "12", "--out", "{dir}/p"], 2, "--frames 12: the toy world's shapes leave a "
                                                                       "32 px frame within 12 frames; give --frames 9"),
    # ms/convert.py: a folder whose config disagrees with its weights, a config value of the wrong type; a bad
    # --lora, checked before anything is written (nothing in --out, so the command runs again with a good one)
    ("ms_convert", ["--ms", "{ms_lpb}", "--out", "{dir}/ms_out"], 1,
     "{ms_lpb}/unet: the weights do not fit config.json (212 unexpected); the first: down_blocks.0.attentions.1."),
    ("ms_convert", ["--ms", "{ms_int}", "--out", "{dir}/ms_out"], 1,
     "{ms_int}/unet/config.json: block_out_channels is 32; UNet3DConditionModel takes a list of int"),
    ("ms_convert", ["--ms", "{ms_pad}", "--out", "{dir}/ms_out"], 1,
     '{ms_pad}/tokenizer/special_tokens_map.json: pad_token is ["!"]; give the pad token as a string'),
    ("ms_convert", [*MS_OUT, "--lora", "{lora_cut}"], 1, "{lora_cut} is not a readable torch checkpoint"),
    ("ms_convert", [*MS_OUT, "--lora", "{random}"], 1, "{random} is not a torch checkpoint"),
    ("ms_convert", [*MS_OUT, "--lora", "{lora_empty}"], 1, "{lora_empty} is not a readable torch checkpoint"),
    ("ms_convert", [*MS_OUT, "--lora", "{lora_short}"], 1, "--lora {lora_short}: the LoRA list does not fit the "
                                                           "student UNet (4 problems: 1 list length, 3 wrong shape; "
                                                           "first: list length: 3 tensors; the student needs 352"),
    ("ms_convert", [*MS_OUT, "--lora", "{lora_dict}"], 1, "holds a list of tensors, not a dict"),
    ("ms_convert", [*MS_OUT, "--lora", "{pickle}"], 1, "refused to load {pickle}"),
    # vc2/convert.py
    ("convert", ["--vc2", "{missing}", "--out", "{dir}/out"], 2, "no such file"),
    ("convert", ["--vc2", "{random}", "--out", "{dir}/out"], 1, "is not a torch checkpoint"),
    ("convert", ["--vc2", "{pickle}", "--out", "{dir}/out"], 1, "refused to load"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out"], 1, "problems: 40 unknown key, "),
    ("convert", ["--vc2", "{teacher}", "--out", "{dir}/out"], 2, "is already a teacher checkpoint of this project"),
    ("convert", ["--vc2", "{v2}", "--out", "{dir}/out"], 1, "a T2V-Turbo-v2 checkpoint (model.diffusion_model.motion"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{converted}"], 2, "teacher.safetensors exists there"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out", "--lora", "{missing}"], 2, "--lora"),
    ("convert", ["--vc2", "{not_vc2}", "--out", "{dir}/out", "--lora", "a", "--merged-unet", "b"], 2,
     "not allowed with argument"),
    ("convert", ["--vc2", "{not_vc2}"], 2, "the following arguments are required: --out"),
    ("convert", ["--out", "{dir}/out"], 2, "give --vc2 model.ckpt (a conversion) or --export-release-lora"),
    ("convert", ["--vc2", "{lora}", "--out", "{dir}/out"], 2,
     "a LoRA trained here: python -m vc2.convert --export-release-lora"),
    ("convert", ["--export-release-lora", "{missing}", "--out", "{dir}/u.pt"], 2, "no such file"),
    ("convert", ["--export-release-lora", "{lora}", "--out", "{text}"], 2, "exists; give a new file name"),
    ("convert", ["--export-release-lora", "{lora}", "--vc2", "{not_vc2}", "--out", "{dir}/u.pt"], 2, "takes only"),
    ("convert", ["--export-release-lora", "{teacher}", "--out", "{dir}/u.pt"], 1, "is a 'teacher' checkpoint, not a "
                                                                               "LoRA file"),
    ("convert", ["--export-release-lora", "{lora}", "--out", "{dir}/u.pt"], 1, "not the LoRA of a student with the "
                                                                            "release's layout ("),
    ("sample", ["--ckpt", "{lora}", "--prompt", "x"], 2, "is a 'lora' checkpoint"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--teacher-sampler", "ddpm"], 2, "invalid choice: 'ddpm'"),
    ("sample", ["--ckpt", "{teacher}", "--prompt", "x", "--teacher-sampler", "vc2", "--steps", "3"], 2,
     "--steps 3 with --teacher-sampler vc2: VC2's DDIM grid for 3 steps (t = 1 + 333 k) reaches t = 1000"),
]


GOOD_CSV = "path,caption\nramp.gif,a ramp\n"

# (id, files to write under tmp_path (text, or bytes), argv with {d} = tmp_path, exit code, a phrase of the
# message, whether the Python API (check_data_args) must give the same message). The folder v/ always exists.
DATA_CASES = [
    ("no arguments", {}, [], 2, "required: VIDEO_DIR, CAPTIONS", False),
    ("unknown flag", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--bogus"], 2, "unrecognized arguments", False),
    ("frames 0", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--frames", "0"], 2,
     "--frames: '0' is not a whole number >= 1", False),
    ("width not a number", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--width", "wide"], 2,
     "--width: 'wide' is not a whole number", False),
    ("missing folder", {"c.csv": GOOD_CSV}, ["{d}/nope", "{d}/c.csv"], 2, "no video folder at", True),
    ("folder is a file", {"c.csv": GOOD_CSV}, ["{d}/c.csv", "{d}/c.csv"], 2, "is a file, not a folder", True),
    ("missing caption file", {}, ["{d}/v", "{d}/nope.csv"], 2, "no caption file at", True),
    ("caption file is a folder", {}, ["{d}/v", "{d}/v"], 2, "is a folder: give the caption file", True),
    ("empty CSV", {"c.csv": ""}, ["{d}/v", "{d}/c.csv"], 2, "is empty: write a header row", True),
    ("header only", {"c.csv": "path,caption\n"}, ["{d}/v", "{d}/c.csv"], 2, "has a header row but no rows", True),
    ("no caption column", {"c.csv": "path,label\na.gif,x\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "has no caption column (one of caption,", True),
    ("no path column", {"c.csv": "clip,caption\na.gif,x\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "has no video column (one of path,", True),
    ("not UTF-8", {"c.csv": b"path,caption\na.gif,caf\xe9 au lait\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "line 2 is not UTF-8 text", True),
    ("CSV field over csv's limit", {"c.csv": "path,caption\na.gif," + "x" * 140000 + "\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "the row after line 1 is not CSV (field larger than field limit", True),
    ("empty JSONL", {"c.jsonl": "\n\n"}, ["{d}/v", "{d}/c.jsonl"], 2, "is empty: write one JSON object", True),
    ("JSONL line not JSON", {"c.jsonl": '{"path": "a.gif", "caption": "x"}\n{"path": "b.gif", caption}\n'},
     ["{d}/v", "{d}/c.jsonl"], 2, "line 2 is not JSON", True),
    ("JSONL line not an object", {"c.jsonl": '["a.gif", "x"]\n'}, ["{d}/v", "{d}/c.jsonl"], 2,
     "line 1 is a JSON list, not an object", True),
    ("no row has a caption", {"c.csv": "path,caption\na.gif,\nb.gif\n"}, ["{d}/v", "{d}/c.csv"], 2,
     "none of its 2 rows has both a video and a caption (no caption: 2)", True),
    ("--skipped-out exists", {"c.csv": GOOD_CSV, "list.txt": "keep me"},
     ["{d}/v", "{d}/c.csv", "--skipped-out", "{d}/list.txt"], 2, "list.txt exists: give a new file name", False),
    ("--skipped-out folder missing", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--skipped-out", "{d}/no/l.txt"],
     2, "no folder", False),
    ("--cache without --ckpt", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--cache", "{d}/cache"], 2,
     "--cache DIR and --ckpt TEACHER go together", False),
    ("--cache exists", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--cache", "{d}/v", "--ckpt", "{d}/c.csv"], 2,
     "v exists: give a new folder (a cache is never written over)", False),
    ("--ckpt not a checkpoint", {"c.csv": GOOD_CSV}, ["{d}/v", "{d}/c.csv", "--cache", "{d}/new", "--ckpt",
                                                      "{d}/c.csv"], 2, "c.csv is not a readable safetensors", False),
]


S = ["--samples", "{a}"]  # a folder of samples to score
# (argv with {name} = bad[name] (test_real_evaluate.py's fixture), exit code, a phrase of the one line)
REAL_EVAL_CASES = [
    (["--samples", "{a}"], 2, "needs the real reward models: --hps"),
    (["--prompts", "{prompts}", "--ckpt", "{teacher}"], 2, "the toy rewards never score real video"),
    (["--hps", "{hps}"], 2, "give --prompts FILE with --ckpt"),
    (["--viclip", "{hps}", "--ckpt", "{teacher}"], 2, "give --prompts FILE with --ckpt"),
    (["--samples", "{empty}", "--hps", "{hps}"], 2, "--samples {empty}: no prompts.jsonl there"),
    (["--samples", "{missing}", "--hps", "{hps}"], 2, "--samples {missing}: no such folder"),
    (["--samples", "{no_video}", "--hps", "{hps}"], 2, "prompts.jsonl: its video {no_video}/gone.gif is missing"),
    ([*S, "--hps", "{missing}"], 2, "--hps {missing}: no such file (nor HPS_v2.1_compressed.pt in it)"),
    ([*S, "--hps", "{empty}"], 2, "--hps {empty}: no such file"),
    ([*S, "--hps", "{hps}", "--prompts", "{prompts}"], 2, "not both"),
    ([*S, "--hps", "{hps}", "--ckpt", "{teacher}"], 2, "--ckpt goes with --prompts"),
    ([*S, "--internvideo2", "{hps}"], 2, "--internvideo2 needs --bert-vocab"),
    ([*S, "--internvideo2", "{hps}", "--bert-vocab", "{empty}"], 2, "none at {empty}"),
    ([*S, "--internvideo2", "{hps}", "--viclip", "{hps}", "--bert-vocab", "{vocab}"], 2, "takes the place of --viclip"),
    ([*S, "--viclip", "{hps}", "--bert-vocab", "{vocab}"], 2, "--bert-vocab goes with --internvideo2"),
    ([*S, "--hps", "{hps}", "--table", "{dir}"], 2, "unrecognized arguments: --table"),     # the toy table's flag
    ([*S, "--hps", "{hps}", "--steps", "2"], 2, "unrecognized arguments: --steps 2"),    # each at its own defaults
    ([*S, "--hps", "{hps}", "--batch-size", "0"], 2, "--batch-size must be >= 1"),
    (["--prompts", "{prompts}", "--hps", "{hps}"], 2, "give --ckpt FILE (repeatable"),
    (["--prompts", "{missing}", "--ckpt", "{teacher}", "--hps", "{hps}"], 2, "--prompts {missing}: no such file"),
    (["--prompts", "{prompts}", "--ckpt", "{missing}", "--hps", "{hps}"], 2, "no such file or folder"),
    (["--prompts", "{prompts}", "--ckpt", "{teacher}", "--hps", "{hps}", "--out", "{used}"], 2,
     "holds samples already: score them with --samples, or give a new --out"),
    ([*S, "--hps", "{garbage}", "--out", "{dir}/out"], 1, "the HPSv2.1 file {garbage} does not load"),
    ([*S, "--hps", "{hps}", "--teacher-sampler", "vc2"], 2, "--teacher-sampler goes with --prompts"),
    (["--prompts", "{prompts}", "--ckpt", "{teacher}", "--hps", "{hps}", "--teacher-sampler", "ddim"], 2,
     "invalid choice: 'ddim'"),
]
