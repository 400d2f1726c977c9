"""What runs at a site during a job: the Client API scripts' building blocks.

The site's own configuration (where its data lives), the trainer built from it, the training state a
restarted site resumes from, FedBN's site-kept BatchNorm, a site's own model file and the Client API poll
wait. The client scripts themselves (``seg_client.py``, ``gan_client.py``) are run by NVFlare and are not
re-exported.

The names below are imported on first use (``dose3d_fl._lazy``).
"""

from __future__ import annotations

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "config": ["SiteConfig", "load_site_config"],
        "trainers": ["build_site_trainer", "build_site_gan_trainer", "site_profile"],
        "state": ["SiteState"],
        "fedbn": ["batch_norm_keys", "with_site_norm"],
        "model": ["write_site_model"],
        "polling": ["shorten_client_polls"],
    },
)
