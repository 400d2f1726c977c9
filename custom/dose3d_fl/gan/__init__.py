"""Label-conditioned 3D GAN (a CT crop generated for a label map of organs and body): profiles, networks,
crops and label maps, trainer, quality, tissue, realism and memorisation checks, sampling and export.

Plain MONAI/torch: nothing here imports NVFlare (``dose3d_fl.fl.site.gan_client`` wraps the trainer). The
names below are imported on first use (``dose3d_fl._lazy``), so importing the package loads no torch.
"""

from __future__ import annotations

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "checkpoint": ["GanCheckpoint", "load_gan_checkpoint", "load_generator", "save_gan_checkpoint"],
        "crops": ["CropSampler", "cut_crop", "load_organ_volumes", "memorization_regions", "reference_crops"],
        "export": ["export_samples"],
        "figures": ["write_comparison_grid", "write_sample_grid"],
        "label_maps": ["OrganVolumeRange", "build_label_map", "label_map_problem", "one_hot", "organ_labels"],
        "label_sampler": ["LabelMapSampler"],
        "memorization": ["MemorizationCheck", "best_ncc"],
        "metrics": ["quality_metrics"],
        "network": [
            "GanPair",
            "SeededGenerator",
            "SpadeGenerator",
            "build_gan",
            "build_generator",
            "network_args",
        ],
        "profiles": ["DEFAULT_GAN_PROFILE", "GAN_PROFILES", "GanProfile", "get_gan_profile"],
        "realism": ["realism_dice"],
        "sampling": ["sample_from_model", "write_samples"],
        "tissue": ["tissue_agreement", "tissue_statistics"],
        "trainer": ["GanTrainer"],
        "training_run": ["train_gan_on_caches"],
    },
)
