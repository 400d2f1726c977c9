"""dose3d-fl: federated 3D CT segmentation and GAN augmentation for radiotherapy sites."""

__version__ = "0.1.0"
