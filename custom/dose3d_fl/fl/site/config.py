"""Site-owned configuration: where a site's data lives, resolved at the site, never carried by a job.

A job names no path. Each site client finds its configuration, in this order:

1. the file named by the environment variable ``DOSE3D_SITE_CONFIG``;
2. ``local/dose3d_site.json`` in the site's NVFlare workspace (the client's working directory in POC and
   provisioned deployments; ``local/`` is the folder NVFlare reserves for site-owned settings);
3. ``$DOSE3D_SITE_CONFIG_DIR/<site name>.json``: used by the simulator, where several simulated sites share
   one machine and NVFlare recreates their workspaces for every run.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SITE_CONFIG_ENV = "DOSE3D_SITE_CONFIG"
SITE_CONFIG_DIR_ENV = "DOSE3D_SITE_CONFIG_DIR"
SITE_CONFIG_NAME = "dose3d_site.json"
STATE_DIR_NAME = "fl_state"


@dataclass(frozen=True)
class SiteConfig:
    """What a site decides for itself.

    Args:
        cache_dir: the site's ingest cache (``manifest.json`` + NIfTI), written by ``dose3d ingest``.
        num_threads: torch CPU threads this site's trainer may use (sites sharing a machine split its cores).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        synthetic_dir: synthetic image/label pairs (``dose3d gan sample``) added to the site's segmentation
            training cases; ``None``: real cases only.
        synthetic_ratio: synthetic cases per real training case when ``synthetic_dir`` is set.
        cpu_cores: CPU cores (Linux numbering) the site's training runs on; ``None``: wherever the operating
            system schedules it. The simulator and a POC set it when their sites outnumber the machine's cores
            (``dose3d_fl.fl.shared_machine``); a site may set it to keep training off cores that other
            services of its machine need.
        channels_last: train in torch's ``channels_last_3d`` memory format (``SegTrainer``): an epoch in
            about 0.83x the time for one trainer on one CPU thread (docs/performance.md), the same
            computation up to floating-point rounding. ``dose3d fl simulate --channels-last`` sets it for the
            simulated sites.
        cpu_bfloat16: train under bfloat16 autocast on the CPU (``SegTrainer``): faster where the cores have
            bfloat16 units; on held-out patients six organs score as in float32 and the pancreas lower
            (docs/performance.md).
            ``dose3d fl simulate --cpu-bfloat16`` sets it for the simulated sites.
    """

    cache_dir: str
    num_threads: int = 1
    device: str = "auto"
    synthetic_dir: str | None = None
    synthetic_ratio: float = 1.0
    cpu_cores: list[int] | None = None
    channels_last: bool = False
    cpu_bfloat16: bool = False

    def cpu_cores_problem(self) -> str | None:
        """Why ``cpu_cores`` cannot pin training on this machine, as the rest of a sentence that begins
        "cpu_cores <value>"; None when unset or when it can. Where the system keeps no CPU affinity, only the
        value's form is checked.
        """
        cores = self.cpu_cores
        if cores is None:
            return None
        if not isinstance(cores, list) or not all(isinstance(c, int) for c in cores):
            return "is not a list of core numbers"
        if cores and hasattr(os, "sched_getaffinity"):
            usable = os.sched_getaffinity(0)
            if not set(cores) <= usable:  # the kernel would pin to the valid ones without a word
                return f"are not all cores this process may use ({', '.join(map(str, sorted(usable)))})"
        return None

    def pin_cpu_cores(self) -> None:
        """Run the calling thread (the client script's, which trains) on ``cpu_cores``, when set.

        Linux keeps a CPU affinity per thread; threads the caller starts afterwards inherit it. Pinning only
        speeds training up, so where it cannot be done (no ``os.sched_setaffinity``, or a value
        :meth:`cpu_cores_problem` refuses) a one-line warning says why and training runs unpinned.
        """
        if not self.cpu_cores:
            return
        if not hasattr(os, "sched_setaffinity"):
            logger.warning("cpu_cores %s ignored: this system cannot pin a thread to cores", self.cpu_cores)
            return
        reason = self.cpu_cores_problem()
        if reason is None:
            try:
                os.sched_setaffinity(0, self.cpu_cores)
                return
            except OSError as err:
                reason = f"is refused by the system: {err}"
        logger.warning(
            "cpu_cores %s ignored, training runs unpinned: cpu_cores %s %s; correct dose3d_site.json",
            self.cpu_cores,
            self.cpu_cores,
            reason,
        )

    @property
    def state_dir(self) -> Path:
        """Where the site keeps its local training state between rounds: ``<cache_dir>/fl_state``."""
        return Path(self.cache_dir) / STATE_DIR_NAME

    @property
    def torch_device(self) -> str | None:
        """The trainer's ``device`` argument: ``None`` chooses CUDA when available."""
        return None if self.device == "auto" else self.device

    def save(self, path: Path) -> Path:
        """Write the configuration as JSON (creating the folder)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read a configuration file.

        Raises:
            ValueError: the file is not valid JSON, lacks ``cache_dir`` or has a key this version does not know
                (a misspelt ``num_thread`` would otherwise pass unnoticed).
        """
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"site configuration {path} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or "cache_dir" not in data:
            raise ValueError(f"site configuration {path} must be a JSON object with a 'cache_dir' entry")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            near = difflib.get_close_matches(unknown[0], cls.__dataclass_fields__, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"site configuration {path}: unknown key {unknown[0]!r}{hint}; "
                f"the keys are {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**data)


def find_site_config(site_name: str, workspace: Path | None = None) -> Path:
    """Locate the configuration file of ``site_name`` (see the module docstring for the order).

    Args:
        site_name: the NVFlare client name.
        workspace: the site's workspace; defaults to the working directory.

    Raises:
        FileNotFoundError: naming every place that was searched and how to create the file.
    """
    candidates: list[Path] = []
    if os.environ.get(SITE_CONFIG_ENV):
        candidates.append(Path(os.environ[SITE_CONFIG_ENV]))
    candidates.append((workspace or Path.cwd()) / "local" / SITE_CONFIG_NAME)
    if os.environ.get(SITE_CONFIG_DIR_ENV):
        candidates.append(Path(os.environ[SITE_CONFIG_DIR_ENV]) / f"{site_name}.json")
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"site {site_name}: no {SITE_CONFIG_NAME} found (searched {searched}); create "
        f'<site workspace>/local/{SITE_CONFIG_NAME} with {{"cache_dir": "<output of dose3d ingest>"}}'
    )


def load_site_config(site_name: str, workspace: Path | None = None) -> SiteConfig:
    """Find and read the configuration of ``site_name``: what a client script reads once, at its start.

    Raises:
        FileNotFoundError: no configuration file (the message names every place searched).
        ValueError: the file is not a valid configuration.
    """
    return SiteConfig.load(find_site_config(site_name, workspace))
