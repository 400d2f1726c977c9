"""Paired 3D GAN (CT crop + organ mask): profiles, networks, crops, WGAN-GP trainer, quality metrics and
sampling.

Plain MONAI/torch: nothing here imports NVFlare (``dose3d_fl.fl.gan_client`` wraps the trainer).
"""
