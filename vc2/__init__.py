"""VideoCrafter2 at full size: the real world, run with the same classes and the same train.py.

    release.py       the released files: finding them, opening them safely, loading HPSv2.1 and ViCLIP
    convert.py       model.ckpt (and the release's unet_lora.pt) -> the project's checkpoints; the key maps
    data.py          video folders with captions, WebVid's CSV, the latent cache: python -m vc2.data
    internvideo2.py  InternVideo2-Stage2 1B, T2V-Turbo (VC2)'s video reward
    evaluate.py      real models scored by the reward models, mean +- SE; VBench folders: python -m vc2.evaluate
"""
