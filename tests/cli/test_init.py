"""The assembled ``dose3d`` parser: every group's commands in their order, light to import, runnable with -m."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import dose3d_fl.cli
from dose3d_fl import __version__
from dose3d_fl.cli import bench, build_parser, fl

CLI_DIR = Path(dose3d_fl.cli.__file__).parent


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each command with its sub-commands (``[]`` when it has none), in the order of the help."""
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for name, child in sub.choices.items():
        nested = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
        found[name] = list(nested[0].choices) if nested else []
    return found


def test_every_group_registers_its_commands_in_the_help_order() -> None:
    assert _commands(build_parser()) == {
        "synth": [],
        "ingest": [],
        "summary": [],
        "train": [],
        "fl": ["export", "simulate", "resume", "site-model"],
        "bench": [],
        "audit": ["verify"],
        "segment": [],
        "models": [],
        "pull": [],
        "send": [],
        "geometry": [],
        "report": [],
        "gan": ["train", "sample", "export"],
        "poc": ["up", "submit", "status", "down"],
        "provision": [],
        "site": ["check"],
    }


def test_the_names_other_code_imports_from_the_package_remain() -> None:
    assert dose3d_fl.cli.seg_job_config is fl.seg_job_config
    assert dose3d_fl.cli.bench_config is bench.bench_config


def test_help_loads_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from dose3d_fl.cli import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = {'torch', 'monai', 'nvflare', 'numpy', 'pydicom', 'nibabel', 'matplotlib'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_command_modules_leave_nvflare_to_fl_and_deploy() -> None:
    for module in sorted(CLI_DIR.glob("*.py")):
        text = module.read_text()
        assert "import nvflare" not in text and "from nvflare" not in text, module.name


def test_python_m_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dose3d_fl.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"dose3d-fl {__version__}"
