"""ModelScopeT2V at full size: the paper's second student, T2V-Turbo (MS), distilled from ali-vilab's
text-to-video-ms-1.7b through diffusers' own classes. Only this folder imports diffusers; the toy and the VC2 paths
never need it.

    models.py    the teacher's UNet behind turbo.py's interface, the release's LoRA layout (rank 32) and loader
"""
