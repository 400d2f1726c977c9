"""Each job declares the metrics its client script sends; the declaration travels in the exported job."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from dose3d_fl.fl import gan_job, seg_job
from dose3d_fl.fl.policy.metrics import METRICS_KEY, metric_names
from dose3d_fl.gan import metrics as gan_metrics

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / "custom" / "dose3d_fl" / "fl" / "site"


def _string_keys(tree: ast.AST) -> set[str]:
    """The string keys of every dict literal passed as ``metrics=`` (or returned) under ``tree``."""
    keys: set[str] = set()
    for node in ast.walk(tree):
        dicts = []
        if isinstance(node, ast.keyword) and node.arg == "metrics" and isinstance(node.value, ast.Dict):
            dicts.append(node.value)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            dicts.append(node.value)
        for literal in dicts:
            keys |= {
                k.value for k in literal.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
    return keys


def test_the_seg_job_declares_exactly_what_seg_client_sends() -> None:
    sent = _string_keys(ast.parse((SITE / "seg_client.py").read_text()))
    assert sent == set(seg_job.SITE_METRICS)


def test_the_gan_job_declares_exactly_what_gan_client_sends() -> None:
    quality = next(
        node
        for node in ast.walk(ast.parse(Path(gan_metrics.__file__).read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "quality_metrics"
    )
    # gan_client.round_metrics: "gan_" + every quality metric; the rest are literal keys.
    quality_names = {
        f"gan_{k.value}"
        for node in ast.walk(quality)
        if isinstance(node, ast.Dict)
        for k in node.keys
        if isinstance(k, ast.Constant) and isinstance(k.value, str)
    }
    literal = _string_keys(ast.parse((SITE / "gan_client.py").read_text()))
    assert quality_names | literal == set(gan_job.SITE_METRICS)


@pytest.mark.parametrize(
    ("job", "declared"),
    [("seg_fedavg", seg_job.site_metrics(("Spleen",))), ("gan_fedavg", gan_job.SITE_METRICS)],
)
def test_the_committed_jobs_carry_the_declaration(job: str, declared: tuple[str, ...]) -> None:
    config = json.loads((REPO / "jobs" / job / "app" / "config" / "config_fed_client.json").read_text())
    assert config[METRICS_KEY] == list(declared)


@pytest.mark.parametrize(
    ("names", "message"),
    [(["a", "a"], "repeat"), (["a", ""], "1 to 64"), ([f"m{i}" for i in range(65)], "at most 64")],
)
def test_a_malformed_declaration_is_refused_when_the_job_is_built(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metric_names(names)
