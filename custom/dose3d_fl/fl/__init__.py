"""The only NVFlare-facing code: client scripts, job recipes, site configuration, simulation."""

# Defaults of the seg_fedavg job, the committed jobs/seg_fedavg and `make demo` (kept here, free of NVFlare
# imports, so the command line can show them without loading NVFlare).
DEFAULT_ROUNDS = 25
DEFAULT_LOCAL_EPOCHS = 4
# The sites' learning rate over the profile's (``SegJobConfig.local_lr_scale``; README, Performance).
LOCAL_LR_SCALE = 2.0
