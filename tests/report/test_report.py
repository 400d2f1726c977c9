"""`dose3d report` on a simulator workspace and on a downloaded job result: sections, numbers from the
run's files, every validation case on the CT grid, the model's provenance, optional sections, errors; and the
page rendered by headless Chromium (skipped without it, unless DOSE3D_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dose3d_fl.cli import main
from dose3d_fl.clinical.inference import load_predictor, predict_organ_nifti
from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.report.case_metrics import evaluate_site
from dose3d_fl.report.html import Section, details, figure, paragraph, render_page, table
from dose3d_fl.seg.profiles import get_profile
from tests.clinical.trained_site import TrainedSite, dice, load_mask

pytestmark = pytest.mark.slow

# Real files of a `dose3d fl simulate --rounds 3` run (3 sites), copied from its server job folder.
FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("DOSE3D_REQUIRE_BROWSER") == "1"
# site-2 of the workspace: a view of the trained site's cache with 3 validation cases, so that its worst and
# median case differ (site-1 keeps the cache's own split: 1 validation case).
SITE_2_VAL = 3


def _server_files(server: Path, trained_site: TrainedSite, **extra: object) -> Path:
    """The server job folder; ``extra`` keys go into the global model file beside ``model``."""
    (server / "metrics").mkdir(parents=True)
    (server / "cross_site_val").mkdir()
    (server / "app_server" / "config").mkdir(parents=True)
    shutil.copy(FIXTURES / "round_metrics.jsonl", server / "metrics")
    shutil.copy(FIXTURES / "cross_val_results.json", server / "cross_site_val")
    shutil.copy(FIXTURES / "config_fed_client.json", server / "app_server" / "config")
    # The global model as NVFlare's persistor writes it: {"model": state_dict}, no profile (older servers).
    weights = torch.load(trained_site.model, weights_only=True)["model"]
    torch.save({"model": weights, **extra}, server / "app_server" / "FL_global_model.pt")
    return server


def _site_view(cache: Path, site: Path, val: int) -> Path:
    """Another site made of ``cache``'s files, with its first ``val`` cases as validation cases."""
    site.mkdir(parents=True)
    for folder in ("images", "labels"):
        (site / folder).symlink_to(cache / folder)
    shutil.copy(cache / "manifest.json", site)
    ids = [case["id"] for case in json.loads((cache / "manifest.json").read_text())["cases"]]
    split = json.loads((cache / "split.json").read_text())
    (site / "split.json").write_text(json.dumps({**split, "train": ids[val:], "val": ids[:val]}))
    return site


@pytest.fixture(scope="module")
def workspace(trained_site: TrainedSite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulator workspace with a site cache and a `dose3d train` run beside it."""
    root = tmp_path_factory.mktemp("ws")
    _server_files(root / "sim" / "seg_fedavg" / "server" / "simulate_job", trained_site)
    shutil.copy(FIXTURES / "summary.json", root)
    (root / "data" / "cache").mkdir(parents=True)
    (root / "data" / "cache" / "site-1").symlink_to(trained_site.cache)
    _site_view(trained_site.cache, root / "data" / "cache" / "site-2", SITE_2_VAL)
    (root / "central").mkdir()
    shutil.copy(trained_site.train_dir / "metrics.json", root / "central")
    assert main(["report", str(root)]) == 0
    return root


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _section(html: str, title: str) -> str:
    """The HTML of one section, by its title."""
    match = re.search(rf"<section><h2>{re.escape(title)}</h2>(.*?)</section>", html, re.DOTALL)
    assert match, f"no section {title!r}"
    return match.group(1)


def _tables(html: str) -> list[list[list[str]]]:
    """Every table's body rows as cell texts (unescaped)."""
    return [
        [
            [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)
        ]
        for body in re.findall(r"<tbody>(.*?)</tbody>", html, re.DOTALL)
    ]


def _val_ids(cache: Path) -> list[str]:
    return json.loads((cache / "split.json").read_text())["val"]


def test_report_of_a_simulator_workspace(workspace: Path, trained_site: TrainedSite) -> None:
    html = (workspace / "report" / "report.html").read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", html)
    assert titles == [
        "Model",
        "Global validation Dice per round",
        "Cross-site Dice",
        "Federated vs. local vs. central",
        "Every validation case on the CT grid",
        "Worst and median case per site",
    ]
    assert "GAN" not in html and "privacy" not in html
    images = _images(html)
    assert set(images) == {
        "dice_per_round.png",
        "cross_site.png",
        "case_site-1_only_case.png",
        "case_site-2_worst.png",
        "case_site-2_median.png",
    }
    assert all((workspace / "report" / src).is_file() for src in images)

    # Every figure comes from the run's files: the simulator summary, cross-site results, train metrics.
    summary = json.loads((FIXTURES / "summary.json").read_text())
    cross = json.loads((FIXTURES / "cross_val_results.json").read_text())
    central = json.loads((trained_site.train_dir / "metrics.json").read_text())
    for value in (
        summary["round_val_dice"][-1],
        cross["site-2"]["SRV_best_FL_global_model.pt"]["val_dice"],
        cross["site-3"]["site-1"]["val_dice"],
        central["val_dice"],
        central["site_val_dice"]["site-1"],
    ):
        assert f"{value:.4f}" in html
    assert "central (1 sites pooled)" not in html and "local (site-1)" in html
    # Text is escaped (an apostrophe becomes an entity) and reads as written once unescaped.
    assert "'cpu-small'" not in html
    assert "profile 'cpu-small' (named by the job's client configuration)" in unescape(html)

    # The heatmap's colours span the cross-site values, not 0..1.
    values = [v["val_dice"] for row in cross.values() for v in row.values()]
    assert f"span the values&#39; own range, {min(values):.3f} to {max(values):.3f}, not 0 to 1" in html

    # The model file of an older server records no provenance, and the page says so.
    model = _section(html, "Model")
    assert "provenance</td><td>not recorded (none of: profile, organs," in model
    assert "profile stored in the file</td><td>not recorded" in model


def test_every_validation_case_is_in_the_table_on_the_ct_grid(
    workspace: Path, trained_site: TrainedSite
) -> None:
    section = _section(
        (workspace / "report" / "report.html").read_text(), "Every validation case on the CT grid"
    )
    sites, cases = _tables(section)
    caches = {"site-1": trained_site.cache, "site-2": workspace / "data" / "cache" / "site-2"}
    assert [row[:2] for row in sites] == [["site-1", "1"], ["site-2", str(SITE_2_VAL)]]
    assert sorted((row[0], row[1], row[2]) for row in cases) == sorted(
        (site, case, "Spleen") for site, cache in caches.items() for case in _val_ids(cache)
    )  # the organ's TG-263 name (the task's), whatever the site called its ROI
    manifest = {c["id"]: c for c in json.loads((trained_site.cache / "manifest.json").read_text())["cases"]}
    for _, case, _, voxel, label_ml, predicted_ml, diff_ml, _, dice_, hd95, surface, _ in cases:
        entry = manifest[case]
        # The label volume is the one ingestion measured on the CT grid; the metrics are in range.
        assert voxel == " x ".join(f"{s:g}" for s in entry["spacing"])
        assert float(label_ml) == pytest.approx(entry["roi_volume_ml"], abs=0.05)
        assert float(diff_ml) == pytest.approx(float(predicted_ml) - float(label_ml), abs=0.11)
        assert 0.0 <= float(dice_) <= 1.0 and float(hd95) >= 0.0 and 0.0 <= float(surface) <= 1.0
    roles = [(row[0], row[11]) for row in cases if row[11]]
    assert roles == [("site-1", "only case"), ("site-2", "worst"), ("site-2", "median")]
    site_2 = [row for row in cases if row[0] == "site-2"]
    assert site_2[0][11] == "worst" and float(site_2[0][8]) == min(float(r[8]) for r in site_2)

    # The worst case's Dice is the CT-grid Dice of `dose3d segment`'s own prediction against the label.
    worst = site_2[0][1]
    predictor = load_predictor(load_segmentation_model(trained_site.model))
    predicted = predict_organ_nifti(predictor, trained_site.cache / manifest[worst]["image"]).mask
    expected = dice(predicted, load_mask(trained_site.cache / manifest[worst]["label"]))
    assert float(site_2[0][8]) == pytest.approx(expected, abs=5e-4)

    # Which grid each Dice is on, and why they differ, is said on the page.
    text = unescape(section)
    assert "on the training grid: the CT resampled to the profile's 4 x 4 x 4 mm voxels" in text
    assert (
        "This table is computed by the report on each CT's own grid" in text and "They differ because" in text
    )
    with (workspace / "report" / "cases.csv").open() as stream:
        assert len(stream.read().splitlines()) == 1 + len(cases)


def test_report_renders_in_headless_chromium(workspace: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        if REQUIRE_BROWSER:
            pytest.fail("DOSE3D_REQUIRE_BROWSER=1 but Chromium is missing: apt-get install -y chromium")
        pytest.skip("headless Chromium not installed (apt-get install -y chromium; .ci/run installs it)")
    screenshot = tmp_path / "page.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
        f"--screenshot={screenshot}",
        (workspace / "report" / "report.html").resolve().as_uri(),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:  # stop exactly the browser started here, with its own child processes
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert screenshot.is_file(), output
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    assert pixels.std() > 10, "blank page"
    # Text and tables are grey; coloured pixels come only from the plots, so the images were loaded.
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 80
    assert colourful.mean() > 0.005, f"{colourful.mean():.4f} of the page is coloured: images missing?"


@pytest.fixture()
def downloaded_result(trained_site: TrainedSite, tmp_path: Path) -> Path:
    """`nvflare job download` layout: <job id>/workspace/ is the server's job folder; no data, no summary."""
    root = tmp_path / "download"
    _server_files(root / "4f1c2d3e-job" / "workspace", trained_site)
    return root


def test_report_of_a_downloaded_job_result(
    downloaded_result: Path, trained_site: TrainedSite, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = [
        "report",
        str(downloaded_result),
        "--out",
        str(out),
        "--compare",
        f"central={trained_site.train_dir}",
    ]
    assert main(args) == 0
    html = (out / "report.html").read_text()
    assert "global (NVFlare aggregate)" in html and "Worst and median case" not in html
    assert "holds no site data" in _section(html, "Every validation case on the CT grid")
    first = json.loads((FIXTURES / "round_metrics.jsonl").read_text().splitlines()[1])
    assert f"{first['aggregated_metrics'][0]['value']:.4f}" in html
    assert "<td>central</td>" in html
    assert all((out / src).is_file() for src in _images(html))


PROVENANCE = {
    "profile": "cpu-small",
    "task": {"organs": ["SPLEEN"], "spacing_mm": [4.0, 4.0, 4.0], "crop": [48, 48, 48]},
    "job_id": "4f1c2d3e",
    "job_name": "seg_fedavg",
    "round": 25,
    "sha256": "ab" * 32,
    "created": "2026-01-05T10:00:00+00:00",
    "software": {"dose3d_fl": "0.1.0", "monai": "1.6.1", "nvflare": "2.9.0"},
}


def test_the_model_provenance_heads_the_page(trained_site: TrainedSite, tmp_path: Path) -> None:
    run = tmp_path / "download"
    profile = get_profile("cpu-small").to_dict()
    _server_files(run / "4f1c2d3e-job" / "workspace", trained_site, provenance=PROVENANCE, profile=profile)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html)[0] == "Model"
    rows = dict(row for row in _tables(_section(html, "Model"))[0])
    assert rows["organs"] == "SPLEEN" and rows["training voxel size (mm)"] == "4.0 x 4.0 x 4.0"
    assert rows["training crop (voxels)"] == "48 x 48 x 48" and rows["round"] == "25"
    assert (
        rows["job name"] == "seg_fedavg"
        and rows["job id"] == "4f1c2d3e"
        and rows["SHA-256 (recorded)"] == "ab" * 32
    )
    assert rows["software"] == "dose3d_fl 0.1.0; monai 1.6.1; nvflare 2.9.0"
    assert rows["profile stored in the file"] == "cpu-small"
    assert rows["profile the report segments with"] == "profile 'cpu-small' stored in the model file"
    model = run / "4f1c2d3e-job" / "workspace" / "app_server" / "FL_global_model.pt"
    assert (
        rows["SHA-256 of this file (computed by the report)"]
        == hashlib.sha256(model.read_bytes()).hexdigest()
    )
    assert "<details><summary>every field of the stored profile</summary>" in html


def test_a_model_that_cannot_be_used_costs_only_the_case_sections(
    trained_site: TrainedSite, tmp_path: Path
) -> None:
    run = tmp_path / "ws"
    server = _server_files(run / "sim" / "seg_fedavg" / "server" / "simulate_job", trained_site)
    (run / "data" / "cache").mkdir(parents=True)
    (run / "data" / "cache" / "site-1").symlink_to(trained_site.cache)
    (server / "app_server" / "FL_global_model.pt").write_bytes(b"truncated")
    assert main(["report", str(run)]) == 0
    html = unescape((run / "report" / "report.html").read_text())
    model = str(server / "app_server" / "FL_global_model.pt")
    assert f"{model} cannot be read (" in html
    assert f"Not evaluated: {model} is not a torch model file (" in html
    assert "Cross-site Dice" in html and "Worst and median case" not in html

    assert main(["report", str(run), "--no-cases", "--out", str(tmp_path / "r2")]) == 0
    html = (tmp_path / "r2" / "report.html").read_text()
    assert "Not computed: the report was asked not to (--no-cases)." in html


def test_a_summary_of_another_run_is_not_used(downloaded_result: Path, tmp_path: Path) -> None:
    summary = json.loads((FIXTURES / "summary.json").read_text())
    summary["cross_site"]["site-1"]["SRV_FL_global_model.pt"] = 0.5  # written by an earlier run
    (downloaded_result / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "report"
    assert main(["report", str(downloaded_result), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "global (NVFlare aggregate)" in html and "all sites' validation cases" not in unescape(html)


def test_gan_and_privacy_sections_appear_with_their_files(downloaded_result: Path, tmp_path: Path) -> None:
    server = downloaded_result / "4f1c2d3e-job" / "workspace"
    (server / "gan").mkdir()
    (server / "gan" / "metrics.json").write_text(json.dumps({"ms_ssim": 0.8123, "mmd": 0.0456}))
    Image.new("RGB", (64, 32), (200, 40, 40)).save(server / "gan" / "samples.png")
    (downloaded_result / "privacy").mkdir()
    (downloaded_result / "privacy" / "dp_accounting.json").write_text(
        json.dumps(
            {"sites": {"site-1": {"epsilon": 2.5, "delta": 1e-5}, "site-2": {"epsilon": 3.75, "delta": 1e-5}}}
        )
    )
    out = tmp_path / "report"
    assert main(["report", str(downloaded_result), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "<h2>GAN samples and metrics</h2>" in html and "0.8123" in html
    assert (out / "gan_samples.png").is_file()
    assert "<h2>Differential privacy: budget spent per site</h2>" in html and "3.7500" in html


def test_report_errors_are_one_line(
    downloaded_result: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "two" / "b"
    shutil.copytree(downloaded_result, tmp_path / "two" / "a")
    shutil.copytree(downloaded_result, second)
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nowhere"): "does not exist",
        str(tmp_path / "empty"): "no metrics/round_metrics.jsonl",
        str(tmp_path / "two"): "holds 2 runs",
    }
    for run, expected in cases.items():
        assert main(["report", run]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and expected in error, error
    assert main(["report", str(downloaded_result), "--compare", f"local={tmp_path / 'empty'}"]) == 2
    assert "metrics.json not found" in capsys.readouterr().err


def test_page_elements_are_escaped_and_numbers_formatted() -> None:
    cells = table(["a<b", "n"], [["x & 'y'", 0.123456], [3, None], [True, "plain"]])
    assert cells == (
        "<table><thead><tr><th>a&lt;b</th><th>n</th></tr></thead><tbody>"
        '<tr><td>x &amp; &#39;y&#39;</td><td class="num">0.1235</td></tr>'
        '<tr><td class="num">3</td><td class="num">&ndash;</td></tr>'
        '<tr><td class="num">True</td><td>plain</td></tr></tbody></table>'
    )
    assert paragraph("<b>", "note") == '<p class="note">&lt;b&gt;</p>' and paragraph("t") == "<p>t</p>"
    assert figure("a.png", "c<", 'q"') == (
        '<figure><img src="a.png" alt="q&#34;"><figcaption>c&lt;</figcaption></figure>'
    )
    assert table(["v"], [[1.25], [None]], ["%+.1f"], "compact") == (
        '<table class="compact"><thead><tr><th>v</th></tr></thead><tbody>'
        '<tr><td class="num">+1.2</td></tr><tr><td class="num">&ndash;</td></tr></tbody></table>'
    )
    assert details("a<", "<p>b</p>") == "<details><summary>a&lt;</summary><p>b</p></details>"
    page = render_page("T<", "s&", [Section("S", cells)])
    assert "<title>T&lt;</title>" in page and '<p class="note">s&amp;</p>' in page
    assert f"<section><h2>S</h2>\n{cells}\n</section>\n</body>\n</html>\n" in page


def test_a_case_that_cannot_be_read_is_named_and_the_others_scored(
    trained_site: TrainedSite, tmp_path: Path
) -> None:
    cache = tmp_path / "site-5"
    _site_view(trained_site.cache, cache, 2)
    (cache / "images").unlink()
    (cache / "images").mkdir()
    manifest = json.loads((cache / "manifest.json").read_text())["cases"]
    for case in manifest:
        (cache / case["image"]).symlink_to(trained_site.cache / case["image"])
    broken = manifest[0]
    (cache / broken["image"]).unlink()
    (cache / broken["image"]).write_bytes(b"\x1f\x8b truncated")
    site = evaluate_site(load_predictor(load_segmentation_model(trained_site.model)), cache)
    assert [row.case_id for row in site.rows] == [manifest[1]["id"]]
    (reason,) = site.skipped
    assert reason.startswith(f"site-5 {broken['id']}: ") and "\n" not in reason


def test_each_site_is_segmented_by_its_own_model_after_fedbn_or_silobn(
    trained_site: TrainedSite, tmp_path: Path
) -> None:
    """``WS/site_models/<site>.pt`` (``dose3d fl simulate`` after FedBN or SiloBN) segments that site's cases; a
    site model that cannot be read is named, and that site's cases use the global model."""
    run = tmp_path / "ws"
    _server_files(run / "sim" / "seg_fedavg" / "server" / "simulate_job", trained_site)
    (run / "data" / "cache").mkdir(parents=True)
    (run / "data" / "cache" / "site-1").symlink_to(trained_site.cache)
    _site_view(trained_site.cache, run / "data" / "cache" / "site-2", SITE_2_VAL)
    # site-1's own model says "background" everywhere (its last layer's background bias raised): Dice 0.
    checkpoint = torch.load(trained_site.model, weights_only=False)
    last_bias = [k for k in checkpoint["model"] if k.endswith(".bias")][-1]
    checkpoint["model"][last_bias][0] += 1000.0
    (run / "site_models").mkdir()
    torch.save(checkpoint, run / "site_models" / "site-1.pt")
    (run / "site_models" / "site-2.pt").write_bytes(b"truncated")
    assert main(["report", str(run), "--no-overlays"]) == 0
    html = unescape((run / "report" / "report.html").read_text())
    assert "each site's own model (FedBN or SiloBN)." in html
    assert "Not evaluated: site-2's own model: " in html and "; its cases used the global model" in html
    rows = list(csv.DictReader((run / "report" / "cases.csv").open()))
    dice_by_site = {
        site: [float(r["dice"]) for r in rows if r["site"] == site] for site in ("site-1", "site-2")
    }
    assert dice_by_site["site-1"] and all(d == 0.0 for d in dice_by_site["site-1"])
    assert dice_by_site["site-2"] and all(d > 0.5 for d in dice_by_site["site-2"])  # the global model
