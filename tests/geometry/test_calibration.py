"""The HU -> density calibration: the documented default, a site's CSV, and each way a CSV can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.geometry.calibration import HUDensityCurve, load_calibration_csv, schneider_2000
from dose3d_fl.geometry.errors import GeometryInputError

# GATE's Schneider2000DensitiesTable.txt (opengate 10.1.1, opengate/data/).
GATE_SCHNEIDER = [(-1000, 0.00121), (-98, 0.93), (-97, 0.930486), (14, 1.03), (23, 1.031), (101, 1.0762),
                  (1600, 1.9642), (3000, 2.8)]  # fmt: skip


def test_default_is_schneider_2000_made_monotonic_over_a_12_bit_ct() -> None:
    curve = schneider_2000()
    assert curve.hu_range == (-1024.0, 3071.0)
    assert np.all(np.diff(curve.hu) > 0) and np.all(np.diff(curve.density) >= 0)
    for hu, density in GATE_SCHNEIDER:
        assert curve.densities(np.array([hu]))[0] == pytest.approx(density, rel=1e-6)
    # The one point left out: Schneider's soft-tissue fit reaches 1.1199 g/cm3 at 100 HU.
    assert curve.densities(np.array([100.0]))[0] < 1.0762
    assert "Schneider" in curve.source


def test_site_csv_overrides_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text(
        "# measured 2024 with a CIRS 062M\nHU,Density_g_cm3,insert\n-1024,0.001,air\n0,1.0,water\n3071,2.5,bone\n"
    )
    curve = load_calibration_csv(path)
    assert curve.hu == (-1024.0, 0.0, 3071.0) and curve.density == (0.001, 1.0, 2.5)
    assert curve.densities(np.array([-512.0]))[0] == pytest.approx(0.5005)
    assert "site.csv" in curve.source
    again = tmp_path / "again.csv"
    again.write_text(curve.to_csv())
    assert load_calibration_csv(again).density == curve.density


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (
            "hu,density_g_cm3\n-1000,0.001\n200,1.1\n100,1.2\n",
            "not monotonic: HU must increase strictly, but line 4",
        ),
        (
            "hu,density_g_cm3\n-1000,0.001\n100,1.12\n101,1.07\n",
            "not monotonic: density falls from 1.12 g/cm3 at 100 HU",
        ),
        ("hu,density_g_cm3\n-1000,0.001\n", "1 point(s); at least two are needed"),
        ("hu,rho\n-1000,0.001\n0,1\n", "lacks the columns 'hu' and 'density_g_cm3'"),
        ("hu,density_g_cm3\n-1000,air\n0,1\n", "line 2: '-1000,air' is not two numbers"),
        ("hu,density_g_cm3\n-1000,0\n0,1\n", "density 0 g/cm3 at -1000 HU is not positive"),
        ("", "empty"),
    ],
)
def test_bad_calibration_csv_is_refused_in_one_line(tmp_path: Path, rows: str, reason: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(GeometryInputError) as raised:
        load_calibration_csv(path)
    message = str(raised.value)
    assert reason in message and str(path) in message and "\n" not in message


def test_a_curve_that_does_not_cover_the_ct_is_refused() -> None:
    curve = HUDensityCurve(hu=(-1000.0, 2000.0), density=(0.001, 2.0), source="site calibration short.csv")
    curve.check_covers(-1000, 2000)
    with pytest.raises(
        GeometryInputError, match=r"covers -1000 to 2000 HU but the CT holds -1024 to 3071 HU.*--clip-hu"
    ):
        curve.check_covers(-1024, 3071)
