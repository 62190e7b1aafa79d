"""The toy world, "moving shapes": the embedded default that makes `python train.py` the paper's method in minutes on a
CPU. Like T2V-Turbo, the toy starts from a pre-trained teacher and reward models; they ship in toy/assets/.

    world.py      the generator ("a red circle moving left", 84 captions, 8 held out) and the pixel judge
    diffusion.py  the toy teacher's parameterisation (v-prediction, zero terminal SNR) and its training loss
    prepare.py    the recipe of the shipped models: python -m toy.prepare
    evaluate.py   the toy table: python -m toy.evaluate --table runs/toy
    assets/       the shipped teacher and reward models, the caption split, the README's pictures
"""
