"""What the benchmark runs: ``BenchConfig`` and the named configurations of ``dose3d bench``.

``BenchConfig()`` is the default benchmark; ``QUICK`` its smoke run (``--quick``); ``PEERS`` the peer comparison
over three training seeds (``--peers``) and ``PEERS_QUICK`` the smoke run with the peers; ``ORGANS_VARIANTS``
the federated runs of the multi-organ task (``--organs``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS
from dose3d_fl.seg.profiles import DEFAULT_PROFILE


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs.

    Args:
        name: results file name (``OUT/<name>.json``).
        sites: sites of the main comparison.
        rounds: federated rounds (central and local-only: ``rounds x local_epochs`` epochs).
        local_epochs: local epochs per round.
        profile: segmentation profile.
        seed: synthetic data seed (and training seed unless ``train_seed`` is given).
        train_seed: seed of every run's initial model and its random crops and augmentation (central,
            local-only, this project's federated runs and the peers); ``None``: ``seed``.
        fedprox_mu: FedProx's proximal coefficient.
        variants: federated runs of the comparison, each ``(name, SegJobConfig changes)``.
        overhead_sites: site counts of the overhead runs (``overhead_rounds x overhead_local_epochs``).
        overhead_rounds: rounds of each overhead run.
        overhead_local_epochs: local epochs per round of each overhead run.
        target_dice: union Dice for the time-to-Dice comparison.
        overhead_baseline_polling: also run the first overhead setting with NVFlare's default polling
            intervals (2 s task requests, 0.5 s task checks, 0.5 s Client API result checks), for comparison
            (``dose3d bench --nvflare-polling``; about 80 s more).
        patients: synthetic patients per site (one count for all sites, or one per site of the main
            comparison); ``None``: the ``make demo`` data (12 / 8 / 5, cycled).
        peers: peer systems on the same sites, split, network, budget and machine (``bench.peers``:
            ``nvflare`` = stock NVFlare 2.9 ``FedAvgRecipe``, ``flower`` = Flower's FedAvg in its simulation
            engine); ``dose3d bench --peers nvflare,flower``.
        local_only: train the local-only models.
        heldout_patients: held-out patients per scanner on which every final model is also scored
            (``bench.heldout_eval``; the systems table's Dice); 0: none.
        seeds: training seeds; more than one runs the comparison once per seed on the same data and
            combines the results (``bench.seeds``); empty: one run with ``train_seed``.
        one_seed: runs that only the first of ``seeds`` runs (variant names, ``local`` for the local-only
            models), marked as one-seed figures in the combined results.
        organs: the task's organs, TG-263 names in label order (empty: the profile's, the spleen); with more
            than one the Dice figures are the mean over organs of each case, and the peers are skipped (their
            MONAI code takes the one-organ task).
    """

    name: str = "default"
    sites: int = 3
    rounds: int = DEFAULT_ROUNDS
    local_epochs: int = DEFAULT_LOCAL_EPOCHS
    profile: str = DEFAULT_PROFILE
    seed: int = 0
    fedprox_mu: float = 0.01
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()
    overhead_sites: tuple[int, ...] = (3, 8)
    overhead_rounds: int = 6
    overhead_local_epochs: int = 1
    target_dice: float = 0.90
    overhead_baseline_polling: bool = False
    patients: tuple[int, ...] | None = None
    peers: tuple[str, ...] = ()
    local_only: bool = True
    heldout_patients: int = 0
    train_seed: int | None = None
    seeds: tuple[int, ...] = ()
    one_seed: tuple[str, ...] = ()
    organs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants:
            object.__setattr__(
                self,
                "variants",
                (
                    ("fedavg", {}),
                    ("fedprox", {"fedprox_mu": self.fedprox_mu}),
                    ("fedavg-fp16", {"quantization": "float16"}),
                    ("fedavg-diff", {"transfer": "diff"}),
                    ("fedbn", {"fedbn": True}),
                ),
            )

    @property
    def epochs(self) -> int:
        """Passes over each site's data in every run."""
        return self.rounds * self.local_epochs

    @property
    def training_seed(self) -> int:
        """The seed of every run's initial model, crops and augmentation."""
        return self.seed if self.train_seed is None else self.train_seed


# A smoke run of every part: fewer patients, 2 rounds x 1 epoch; its Dice figures mean nothing. Each
# simulator run costs make test about 45 s (most of it start-up and shutdown), so the quick mode keeps the two
# that differ on the wire, full weights and float16, and FedBN, the one scored differently (each site's own
# model). DIFF adds NVFlare's DIFF to the full-weights path; FedProx adds the proximal term, whose pieces
# tests/fl (test_seg_client, test_seg_job) check.
QUICK = BenchConfig(
    name="quick",
    rounds=2,
    local_epochs=1,
    variants=(
        ("fedavg", {}),
        ("fedavg-fp16", {"quantization": "float16"}),
        ("fedbn", {"fedbn": True}),
    ),
    overhead_sites=(3,),
    overhead_rounds=2,
    patients=(4, 3, 3),
)

# The quick peer comparison (``--quick --peers``; make test): the quick run above plus the peers on the same
# sites and one held-out patient per scanner; every system's fields are produced, its Dice mean nothing. One
# run of both, so that make test does not train a second central model and FedAvg federation for the peers.
PEERS_QUICK = replace(QUICK, name="peers_quick", peers=("nvflare", "flower"), heldout_patients=1)

# The multi-organ task's runs (``dose3d bench --organs ...``): FedAvg and the best variant on the spleen task.
ORGANS_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (("fedavg", {}), ("fedbn", {"fedbn": True}))

# The peer comparison (``dose3d bench --peers nvflare,flower``): central, local-only, this project's FedAvg,
# its best variant on validation (FedBN, ``default.json``) and the int8 exchange, stock NVFlare and Flower,
# 3 training seeds (local-only and int8: the first seed only), every final model also on 10 held-out
# patients per scanner. The overhead runs by site count are a separate measurement (``bench.scaling``).
PEERS = BenchConfig(
    name="peers",
    variants=(("fedavg", {}), ("fedbn", {"fedbn": True}), ("fedavg-int8", {"quantization": "int8"})),
    overhead_sites=(),
    peers=("nvflare", "flower"),
    heldout_patients=10,
    seeds=(0, 1, 2),
    one_seed=("fedavg-int8", "local"),
)
