"""Sites that share one machine (the simulator, a POC): their torch threads and, when they outnumber the cores,
a core each.

With at least one core per site, each site gets an equal share of the cores as torch threads. With more sites
than cores, each site trains on one thread pinned to one core, the cores loaded about equally by the sites'
cases (:func:`balance_sites`). Left to the operating system, three sites on two cores share both, the smaller
sites finish their local epochs first and the largest then trains alone on one core while the other idles
(docs/performance.md, "Orchestration overhead"). The thread count, and so every number a site computes, is
the same either way; the site applies the pinning itself (``SiteConfig.pin_cpu_cores``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dose3d_fl.data.manifest import Manifest
from dose3d_fl.fl.site.config import SiteConfig

__all__ = ["available_cores", "balance_sites", "case_count", "shared_machine_configs"]


def available_cores() -> list[int]:
    """The cores this process may run on (all of ``os.cpu_count()`` where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def case_count(cache: Path) -> int:
    """Cases in a site's ingest cache (its training work, up to the fixed split), 1 when unreadable."""
    try:
        return max(1, len(Manifest.load(cache).cases))
    except (OSError, ValueError):
        return 1


def balance_sites(loads: Mapping[str, int], cores: list[int]) -> dict[str, list[int]]:
    """Assign each site one core so that the cores' loads are about equal (longest processing time first).

    Args:
        loads: site name -> its work (cases).
        cores: the cores to use.

    Returns:
        site name -> a one-core list; sites in order of decreasing load (then name) each go to the core with
        the least load so far (then the lowest number).

    Raises:
        ValueError: no cores.
    """
    if not cores:
        raise ValueError("no cores to assign the sites to")
    total = dict.fromkeys(cores, 0)
    assigned: dict[str, list[int]] = {}
    for site in sorted(loads, key=lambda name: (-loads[name], name)):
        core = min(cores, key=lambda c: (total[c], c))
        total[core] += loads[site]
        assigned[site] = [core]
    return assigned


def shared_machine_configs(
    caches: Mapping[str, Path], pin_cores: bool = True, training: Mapping[str, Any] | None = None
) -> dict[str, SiteConfig]:
    """The configuration of each site of this machine (see the module docstring).

    Args:
        caches: site name -> its ingest cache.
        pin_cores: pin the sites to cores when they outnumber them; False leaves them to the operating system.
        training: ``SiteConfig`` training options every site gets, e.g. ``{"channels_last": True}``.
    """
    cores = available_cores()
    pinned = (
        balance_sites({site: case_count(cache) for site, cache in caches.items()}, cores)
        if pin_cores and len(caches) > len(cores)
        else {}
    )
    threads = max(1, len(cores) // max(1, len(caches)))
    return {
        site: SiteConfig(
            cache_dir=str(Path(cache).resolve()),
            num_threads=threads,
            cpu_cores=pinned.get(site),
            **(training or {}),
        )
        for site, cache in caches.items()
    }
