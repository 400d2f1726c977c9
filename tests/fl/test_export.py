"""A job exported from an installed wheel is the job exported from the source tree (fl/export.py).

From a wheel, ``dose3d_fl`` lives in a folder beside third-party modules, and NVFlare's export follows the
package's imports through that folder: it copied ``dataclasses.py`` (shadowing the standard library in the
job) and ``cryptography/exceptions.py`` into the job when the package was installed without ``-e``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh interpreter imports NVFlare and torch per export (about 15 s)

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("job", ["seg", "gan"])
def test_export_from_an_installed_layout_carries_only_dose3d_fl(job: str, tmp_path: Path) -> None:
    # A site-packages-like folder: the package, the stdlib's own dataclasses.py (as rt-utils' backport lies
    # there) and a module file of cryptography, which the package imports from.
    site = tmp_path / "site-packages"
    shutil.copytree(
        REPO / "custom" / "dose3d_fl", site / "dose3d_fl", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(dataclasses.__file__, site / "dataclasses.py")
    (site / "cryptography").mkdir()
    import cryptography.exceptions

    shutil.copy(cryptography.exceptions.__file__, site / "cryptography" / "exceptions.py")
    out = tmp_path / "jobs"
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import dose3d_fl, sys; assert dose3d_fl.__file__.startswith(sys.argv[2]), dose3d_fl.__file__\n"
        "from dose3d_fl.cli import main; sys.exit(main(['fl', 'export', '--out', sys.argv[1], '--job', sys.argv[3]]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(out), str(site), job],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    name = f"{job}_fedavg"
    exported = _tree(out / name)
    assert not [path for path in exported if "dataclasses" in path or "cryptography" in path]
    from dose3d_fl.cli import main

    assert main(["fl", "export", "--out", str(tmp_path / "source"), "--job", job]) == 0  # from custom/
    assert exported == _tree(tmp_path / "source" / name)
