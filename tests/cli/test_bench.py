"""``dose3d bench`` options: which benchmark configuration they select."""

from __future__ import annotations

import pytest

from dose3d_fl.cli import build_parser
from dose3d_fl.cli.bench import bench_config


@pytest.mark.parametrize(
    ("argv", "name", "polling_run"),
    [
        ([], "default", False),
        (["--nvflare-polling"], "default", True),
        (["--quick"], "quick", False),
        (["--quick", "--name", "mine"], "mine", False),
    ],
)
def test_bench_options(argv: list[str], name: str, polling_run: bool) -> None:
    config = bench_config(build_parser().parse_args(["bench", *argv]))
    assert (config.name, config.overhead_baseline_polling) == (name, polling_run)


def test_peers_is_the_three_seed_comparison_and_seeds_replace_its_seeds() -> None:
    config = bench_config(build_parser().parse_args(["bench", "--peers", "nvflare,flower"]))
    assert (config.name, config.seeds, config.heldout_patients) == ("peers", (0, 1, 2), 10)
    assert [name for name, _ in config.variants] == ["fedavg", "fedbn", "fedavg-int8"]
    quick = bench_config(
        build_parser().parse_args(["bench", "--quick", "--peers", "nvflare", "--seeds", "3"])
    )
    assert (quick.name, quick.seeds, quick.peers) == ("peers_quick", (3,), ("nvflare",))
    # The quick peer comparison is the quick run with the peers added (one run in make test).
    assert (quick.variants, quick.local_only, quick.heldout_patients) == (
        bench_config(build_parser().parse_args(["bench", "--quick"])).variants,
        True,
        1,
    )


def test_organs_make_the_task_multi_organ_under_its_own_name() -> None:
    config = bench_config(build_parser().parse_args(["bench", "--organs", "Spleen,Liver,Kidney_L"]))
    assert config.organs == ("Spleen", "Liver", "Kidney_L") and config.name == "default-3-organs"
    assert [name for name, _ in config.variants] == ["fedavg", "fedbn"] and config.heldout_patients == 10
    assert config.overhead_sites == ()
    named = bench_config(build_parser().parse_args(["bench", "--organs", "Spleen,Liver", "--name", "mine"]))
    assert named.name == "mine"


def test_bad_seeds_and_organs_are_refused_with_the_option_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--seeds"):
        bench_config(build_parser().parse_args(["bench", "--seeds", "1,1"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--organs", "Spleeen"])
    assert "--organs" in capsys.readouterr().err
