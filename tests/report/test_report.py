"""`dose3d report` on a simulator workspace and on a downloaded job result: sections, numbers from the
run's files, optional sections, errors; and the page rendered by headless Chromium."""

from __future__ import annotations

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
from dose3d_fl.report.html import Section, figure, paragraph, render_page, table
from dose3d_fl.report.overlays import case_dice
from tests.clinical.trained_site import TrainedSite

pytestmark = pytest.mark.slow

# Real files of a `dose3d fl simulate --rounds 3` run (3 sites), copied from its server job folder.
FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")


def _server_files(server: Path, trained_site: TrainedSite) -> Path:
    (server / "metrics").mkdir(parents=True)
    (server / "cross_site_val").mkdir()
    (server / "app_server" / "config").mkdir(parents=True)
    shutil.copy(FIXTURES / "round_metrics.jsonl", server / "metrics")
    shutil.copy(FIXTURES / "cross_val_results.json", server / "cross_site_val")
    shutil.copy(FIXTURES / "config_fed_client.json", server / "app_server" / "config")
    # The global model as NVFlare's persistor writes it: {"model": state_dict}, no profile.
    weights = torch.load(trained_site.model, weights_only=True)["model"]
    torch.save({"model": weights}, server / "app_server" / "FL_global_model.pt")
    return server


@pytest.fixture(scope="module")
def workspace(trained_site: TrainedSite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished simulator workspace with a site cache and a `dose3d train` run beside it."""
    root = tmp_path_factory.mktemp("ws")
    _server_files(root / "sim" / "seg_fedavg" / "server" / "simulate_job", trained_site)
    shutil.copy(FIXTURES / "summary.json", root)
    (root / "data" / "cache").mkdir(parents=True)
    (root / "data" / "cache" / "site-1").symlink_to(trained_site.cache)
    (root / "central").mkdir()
    shutil.copy(trained_site.train_dir / "metrics.json", root / "central")
    assert main(["report", str(root), "--overlays", "1"]) == 0
    return root


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_of_a_simulator_workspace(workspace: Path, trained_site: TrainedSite) -> None:
    html = (workspace / "report" / "report.html").read_text()
    for title in (
        "Global validation Dice per round",
        "Cross-site Dice",
        "Federated vs. local vs. central",
        "Sample segmentations",
    ):
        assert f"<h2>{title}</h2>" in html
    assert "GAN" not in html and "privacy" not in html
    images = _images(html)
    assert {"dice_per_round.png", "cross_site.png", "overlay_site-1.png"} <= set(images)
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


def test_report_renders_in_headless_chromium(workspace: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail("headless Chromium is needed: apt-get install -y chromium (.ci/run installs it)")
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
    assert "global (NVFlare aggregate)" in html and "Sample segmentations" not in html
    first = json.loads((FIXTURES / "round_metrics.jsonl").read_text().splitlines()[1])
    assert f"{first['aggregated_metrics'][0]['value']:.4f}" in html
    assert "<td>central</td>" in html
    assert all((out / src).is_file() for src in _images(html))


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


def test_case_dice_is_zero_without_a_label() -> None:
    empty, cube = np.zeros((6, 6, 6), dtype=bool), np.zeros((6, 6, 6), dtype=bool)
    cube[1:4, 1:4, 1:4] = True
    half = cube.copy()
    half[1:4, 1:4, 1] = False
    assert case_dice(cube, cube) == 1.0 and case_dice(empty, cube) == 0.0
    assert case_dice(empty, empty) == 0.0 and case_dice(cube, empty) == 0.0  # MONAI's NaN, shown as 0
    assert case_dice(half, cube) == pytest.approx(2 * 18 / (18 + 27))


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
    page = render_page("T<", "s&", [Section("S", cells)])
    assert "<title>T&lt;</title>" in page and '<p class="note">s&amp;</p>' in page
    assert f"<section><h2>S</h2>\n{cells}\n</section>\n</body>\n</html>\n" in page
