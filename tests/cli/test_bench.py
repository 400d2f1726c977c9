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
