"""The machinery every script shares. Nothing here is T2V-Turbo.

    cli.py         a dataclass config as flags, one line per bad input, the device
    loop.py        processes (torchrun), per-step seeding, the lr, accumulation and clipping, resumable states, logs
    batches.py     the batches of the coming steps, decoded ahead in worker processes
    checkpoint.py  the checkpoint format (safetensors + configs), the toy reward files, safe torch.load
    videoio.py     videos, GIF grids and prompt files on disk; the mean ± SE the evaluators report
"""
