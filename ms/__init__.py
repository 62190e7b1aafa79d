"""ModelScopeT2V at full size: the paper's second student, T2V-Turbo (MS), distilled from ali-vilab's
text-to-video-ms-1.7b through diffusers' own classes. Only this folder imports diffusers; the toy and the VC2 paths
never need it.

    models.py    the UNet, the KL autoencoder and the CLIP text tower behind this project's interfaces, loaded
                 from a local diffusers folder; the release's LoRA layout (rank 32), its loader and exporter
    convert.py   the folder (+ the released unet_lora.pt) -> this project's checkpoints: python -m ms.convert
"""
