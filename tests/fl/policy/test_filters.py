"""The weights-only guard and the payload audit on real NVFlare messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import ReturnCode

from dose3d_fl.fl.policy.filters import PayloadAudit, WeightsOnlyGuard
from dose3d_fl.fl.policy.metrics import METRICS_KEY, job_config_path
from dose3d_fl.fl.policy.payload import check_weights_only, describe_result, model_signature
from dose3d_fl.fl.seg_job import SITE_METRICS
from tests.fl.site_messages import IN, OUT, context, task_data, tiny_model, train_result


@pytest.fixture
def job_app(tmp_path: Path) -> Path:
    """The job's app folder at the site, with the seg job's declared metrics in its client configuration."""
    app = tmp_path / "app_site-1"
    job_config_path(app).parent.mkdir(parents=True)
    job_config_path(app).write_text(json.dumps({"format_version": 2, METRICS_KEY: list(SITE_METRICS)}))
    return app


def _guarded(
    result,
    app_root: Path | None,
    received=None,
    task: str = "train",
    job_id: str = "job-guard",
    guard: WeightsOnlyGuard | None = None,
):
    guard_in, guard_out = WeightsOnlyGuard(), guard or WeightsOnlyGuard()
    guard_in.process(task_data(received if received is not None else tiny_model()), context(IN, task, job_id))
    return guard_out.process(result, context(OUT, task, job_id, app_root=app_root))


def test_guard_passes_the_trained_model_with_scalar_metrics(job_app: Path) -> None:
    trained = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_model().items()}
    out = _guarded(train_result(trained), job_app)
    assert out.get_return_code(ReturnCode.OK) == ReturnCode.OK
    dxo = from_shareable(out)
    assert set(dxo.data) == set(trained)
    assert "WeightsOnlyGuard" in dxo.get_meta_prop("filter_history")


def test_guard_allows_a_subset_of_the_model(job_app: Path) -> None:
    model = tiny_model()
    subset = dict(list(model.items())[:3])
    assert _guarded(train_result(subset), job_app).get_return_code(ReturnCode.OK) == ReturnCode.OK


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p, m, meta: p.__setitem__("ct_volume", torch.zeros(64, 64, 64)), "not in the received model"),
        (lambda p, m, meta: p.__setitem__(next(iter(p)), torch.zeros(3, 3)), "has shape"),
        (lambda p, m, meta: m.__setitem__("val_dice", "SYNTHPHI^DOE"), "not a number"),
        (lambda p, m, meta: m.__setitem__("val_cases", [1, 2, 3]), "not a number"),
        (lambda p, m, meta: m.__setitem__("patient_age_mean", 61.0), "not on the job's metric allow-list"),
        (lambda p, m, meta: meta.__setitem__("case_ids", ["case-1"]), "not allowed"),
        (lambda p, m, meta: meta.__setitem__("NUM_STEPS_CURRENT_ROUND", b"\x00" * 2048), "not a scalar"),
        (lambda p, m, meta: p.__setitem__("note", "free text"), "not a tensor"),
        (
            lambda p, m, meta: p.__setitem__("label_mask", np.ones((32, 32, 32), dtype=np.uint8)),
            "not in the received",
        ),
    ],
    ids=[
        "image-sized extra tensor",
        "reshaped tensor",
        "string metric",
        "list metric",
        "undeclared metric",
        "extra meta key",
        "bytes in meta",
        "string among tensors",
        "label mask",
    ],
)
def test_guard_refuses_anything_beyond_weights_and_scalars(
    change, reason: str, job_app: Path, caplog
) -> None:
    params, metrics, meta = tiny_model(), {"val_dice": 0.5}, {}
    change(params, metrics, meta)
    result = train_result(params, metrics, **meta)
    assert check_weights_only(result, model_signature(tiny_model()), SITE_METRICS) is not None

    out = _guarded(result, job_app)

    assert out.get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR
    assert "DXO" not in out  # nothing of the refused result leaves
    assert reason in caplog.text and "weights-only guard refused" in caplog.text


def test_guard_refuses_entries_outside_the_dxo_and_tensors_without_a_received_model(job_app: Path) -> None:
    result = train_result(tiny_model())
    result["side_channel"] = "SYNTHPHI-T-001"
    assert _guarded(result, job_app).get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR
    # A site that received no model (another job id) may not send tensors.
    guard = WeightsOnlyGuard()
    out = guard.process(
        train_result(tiny_model()), context(OUT, "train", job_id="never-received", app_root=job_app)
    )
    assert out.get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR


def test_guard_passes_validation_metrics(job_app: Path) -> None:
    metrics = DXO(DataKind.METRICS, data={"val_dice": 0.8, "val_cases": 3}).to_shareable()
    assert _guarded(metrics, job_app, task="validate").get_return_code(ReturnCode.OK) == ReturnCode.OK


@pytest.mark.parametrize("task", ["train", "validate"])
def test_an_undeclared_metric_is_refused_with_a_one_line_reason(task: str, job_app: Path, caplog) -> None:
    metrics = {"val_dice": 0.8, "val_cases": 3, "patient_age_mean": 61.0}
    if task == "train":
        result = train_result(tiny_model(), metrics)
    else:
        result = DXO(DataKind.METRICS, data=metrics).to_shareable()

    out = _guarded(result, job_app, task=task)

    assert out.get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR and "DXO" not in out
    (refusal,) = [r.getMessage() for r in caplog.records if "weights-only guard refused" in r.getMessage()]
    assert "\n" not in refusal
    assert refusal.endswith(
        "metric 'patient_age_mean' is not on the job's metric allow-list (cache_seconds, data_seconds, "
        "train_loss, train_seconds, val_cases, val_dice, val_seconds)"
    ), refusal


def test_a_job_that_declares_no_metrics_sends_weights_only(tmp_path: Path, caplog) -> None:
    undeclared = tmp_path / "app_site-1"
    job_config_path(undeclared).parent.mkdir(parents=True)
    job_config_path(undeclared).write_text(json.dumps({"format_version": 2}))
    weights_only = train_result(tiny_model(), metrics={})
    assert _guarded(weights_only, undeclared).get_return_code(ReturnCode.OK) == ReturnCode.OK
    for app_root in (undeclared, None):  # no declaration, or no job configuration to read
        out = _guarded(train_result(tiny_model(), metrics={"val_dice": 0.5}), app_root)
        assert out.get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR
    assert "is not on the job's metric allow-list (none)" in caplog.text


def test_a_site_may_narrow_the_jobs_declaration(job_app: Path, caplog) -> None:
    guard = WeightsOnlyGuard(metrics=["val_dice", "val_cases", "never_declared"])
    ok = train_result(tiny_model(), metrics={"val_dice": 0.5, "val_cases": 3})
    assert _guarded(ok, job_app, guard=guard).get_return_code(ReturnCode.OK) == ReturnCode.OK
    declared_by_the_job = train_result(tiny_model(), metrics={"val_dice": 0.5, "train_loss": 0.2})
    assert _guarded(declared_by_the_job, job_app, guard=guard).get_return_code() != ReturnCode.OK
    listed_by_the_site_only = train_result(tiny_model(), metrics={"never_declared": 1.0})
    assert _guarded(listed_by_the_site_only, job_app, guard=guard).get_return_code() != ReturnCode.OK
    assert "metric 'train_loss' is not on the job's metric allow-list (val_cases, val_dice)" in caplog.text


def test_audit_records_what_leaves(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = PayloadAudit(path=str(log), keep_payloads=True)
    model = tiny_model()
    audit.process(train_result(model), context(OUT))

    record = json.loads(log.read_text())
    described = describe_result(train_result(model))
    assert record["tensors"] == described["tensors"]
    assert record["tensor_bytes"] == sum(v.numel() * v.element_size() for v in model.values())
    assert record["serialized_bytes"] > 0
    assert record["sha256"] == described["sha256"] and len(record["sha256"]) == 64
    assert record["metrics"] == {"val_dice": 0.5, "val_cases": 3, "train_loss": 0.2}
    kept = (log.with_name("audit_payloads") / record["payload_file"]).stat().st_size
    assert kept == record["serialized_bytes"] + record["tensor_bytes"]
