"""The geometry sub-package: it says what it is, re-exports its public names, and stays out of NVFlare."""

from __future__ import annotations

import subprocess
import sys

import dose3d_fl.geometry


def test_package_documents_and_re_exports_its_api() -> None:
    assert dose3d_fl.geometry.__doc__ and "NVFlare" in dose3d_fl.geometry.__doc__
    assert dose3d_fl.geometry.__all__ == sorted(dose3d_fl.geometry.__all__)
    assert all(hasattr(dose3d_fl.geometry, name) for name in dose3d_fl.geometry.__all__)


def test_importing_it_loads_neither_nvflare_nor_torch() -> None:
    code = "import sys, dose3d_fl.geometry; print(sorted({'nvflare', 'torch', 'monai'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
