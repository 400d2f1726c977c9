"""The GAN package stays plain MONAI/torch: it runs and tests without a federation."""

from __future__ import annotations

import ast
from pathlib import Path

import dose3d_fl.gan

GAN_DIR = Path(dose3d_fl.gan.__file__).parent


def test_gan_never_imports_nvflare() -> None:
    for source in sorted(GAN_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "nvflare" for name in names), (
                f"{source.name} imports nvflare"
            )


def test_public_api_is_exported() -> None:
    assert all(hasattr(dose3d_fl.gan, name) for name in dose3d_fl.gan.__all__)
