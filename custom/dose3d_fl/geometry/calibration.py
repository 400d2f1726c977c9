"""HU-to-mass-density calibration: a piecewise-linear curve, a documented default, and a site's own CSV.

The default follows Schneider, Bortfeld and Schlegel (2000), "Correlation between CT numbers and tissue
parameters needed for Monte Carlo simulations of clinical dose distributions", Phys. Med. Biol. 45:459-478,
as tabulated by GATE (``Schneider2000DensitiesTable.txt``, shipped in opengate 10's ``opengate/data``), with
two changes so that it is monotonic and covers a 12-bit CT:

* Schneider's soft-tissue fit ends at 1.120 g/cm3 at 100 HU and his bone fit starts at 1.076 g/cm3 at 101 HU.
  A density that falls as HU rise is what the site check refuses, so the default leaves out the 100 HU point
  and joins 23 HU (1.031) to 101 HU (1.076): between 23 and 100 HU it is up to 0.044 g/cm3 lower than
  Schneider's (liver at 60 HU: 1.052 instead of 1.074 g/cm3; ICRU Report 44 gives 1.06).
* The ends are extended to the stored range of a 12-bit CT, -1024 to 3071 HU: air stays at 0.00121 g/cm3 and
  the 1600-3000 HU line goes on to 3071 HU.

A site overrides it with its own measured curve (a CSV of ``hu,density_g_cm3`` rows, e.g. from a CIRS or Gammex
electron-density phantom). The curve must be monotonic (HU strictly increasing, density never decreasing) and
must cover every HU of the CT; :func:`load_calibration_csv` and :meth:`HUDensityCurve.check_covers` say which
row or which HU are wrong. ``numpy.interp`` does the interpolation; the CSV reader is the standard library's.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dose3d_fl.files import write_text_atomic
from dose3d_fl.geometry.errors import GeometryInputError

SCHNEIDER_2000_SOURCE = (
    "Schneider, Bortfeld, Schlegel 2000, Phys. Med. Biol. 45:459-478 (GATE Schneider2000DensitiesTable.txt); "
    "100 HU point left out to make it monotonic, ends extended to -1024 and 3071 HU"
)
# (HU, g/cm3): GATE's Schneider2000DensitiesTable.txt without (100, 1.1199), plus the two end points.
_SCHNEIDER_2000_POINTS = (
    (-1024.0, 0.00121),
    (-1000.0, 0.00121),
    (-98.0, 0.93),
    (-97.0, 0.930486),
    (14.0, 1.03),
    (23.0, 1.031),
    (101.0, 1.0762),
    (1600.0, 1.9642),
    (3000.0, 2.8),
    (3071.0, 2.8 + 71.0 * (2.8 - 1.9642) / 1400.0),
)
_HU_HEADERS = ("hu",)
_DENSITY_HEADERS = ("density_g_cm3", "density", "density_g/cm3", "g/cm3")


@dataclass(frozen=True)
class HUDensityCurve:
    """A piecewise-linear HU -> mass density (g/cm3) curve.

    Args:
        hu: knot positions, strictly increasing.
        density: mass density at each knot (g/cm3), never decreasing.
        source: where the curve comes from (written into the outputs).
    """

    hu: tuple[float, ...]
    density: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        problem = _curve_problem(self.hu, self.density)
        if problem:
            raise GeometryInputError(f"calibration ({self.source}): {problem}")

    @property
    def hu_range(self) -> tuple[float, float]:
        """Lowest and highest HU the curve covers."""
        return self.hu[0], self.hu[-1]

    @property
    def density_range(self) -> tuple[float, float]:
        """Lowest and highest density (g/cm3) the curve gives."""
        return self.density[0], self.density[-1]

    def densities(self, hu: np.ndarray) -> np.ndarray:
        """Mass density (g/cm3, float32) at each HU value; values must lie inside :attr:`hu_range`."""
        return np.interp(np.asarray(hu, dtype=np.float64), self.hu, self.density).astype(np.float32)

    def check_covers(self, hu_min: float, hu_max: float, what: str = "the CT") -> None:
        """Refuse a HU range the curve does not cover.

        Raises:
            GeometryInputError: naming both ranges.
        """
        low, high = self.hu_range
        if hu_min < low or hu_max > high:
            raise GeometryInputError(
                f"calibration ({self.source}) covers {low:g} to {high:g} HU but {what} holds {hu_min:g} to "
                f"{hu_max:g} HU; extend the curve to cover it, or pass --clip-hu to clip the CT to the curve"
            )

    def to_csv(self) -> str:
        """The curve as the CSV that :func:`load_calibration_csv` reads."""
        out = io.StringIO()
        out.write(f"# {self.source}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["hu", "density_g_cm3"])
        writer.writerows([f"{h:g}", f"{d:.6g}"] for h, d in zip(self.hu, self.density, strict=True))
        return out.getvalue()


def schneider_2000() -> HUDensityCurve:
    """The default curve, after Schneider et al. 2000 (see the module docstring for the two changes)."""
    hu, density = zip(*_SCHNEIDER_2000_POINTS, strict=True)
    return HUDensityCurve(hu=hu, density=density, source=SCHNEIDER_2000_SOURCE)


def load_calibration_csv(path: str | Path) -> HUDensityCurve:
    """Read a site's calibration: a header row naming ``hu`` and ``density_g_cm3``, then one knot per row.

    Lines starting with ``#`` are comments. Extra columns are ignored.

    Args:
        path: the CSV file.

    Returns:
        The validated curve.

    Raises:
        GeometryInputError: unreadable file, missing columns, a value that is not a number, fewer than two
            rows, HU not strictly increasing or density decreasing (naming the row).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise GeometryInputError(f"calibration CSV {path}: cannot be read ({err})") from err
    lines = [
        (n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.startswith("#")
    ]
    if not lines:
        raise GeometryInputError(
            f"calibration CSV {path}: empty; expected a header 'hu,density_g_cm3' and rows"
        )
    rows = list(csv.reader(line for _, line in lines))
    header = [cell.strip().casefold() for cell in rows[0]]
    hu_col = _column(header, _HU_HEADERS)
    density_col = _column(header, _DENSITY_HEADERS)
    if hu_col is None or density_col is None:
        raise GeometryInputError(
            f"calibration CSV {path}: header {','.join(rows[0])!r} lacks the columns 'hu' and 'density_g_cm3'"
        )
    hu, density = [], []
    for (line_number, _), row in zip(lines[1:], rows[1:], strict=True):
        try:
            hu.append(float(row[hu_col]))
            density.append(float(row[density_col]))
        except (IndexError, ValueError):
            raise GeometryInputError(
                f"calibration CSV {path}, line {line_number}: {','.join(row)!r} is not two numbers"
            ) from None
    problem = _curve_problem(hu, density, [n for n, _ in lines[1:]])
    if problem:
        raise GeometryInputError(f"calibration CSV {path}: {problem}")
    return HUDensityCurve(hu=tuple(hu), density=tuple(density), source=f"site calibration {path.name}")


def write_calibration_csv(curve: HUDensityCurve, path: str | Path) -> Path:
    """Write the curve used, so an output folder says how its densities were made; returns ``path``."""
    return write_text_atomic(path, curve.to_csv())


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _curve_problem(
    hu: tuple[float, ...] | list[float],
    density: tuple[float, ...] | list[float],
    lines: list[int] | None = None,
) -> str | None:
    """Why the knots do not make a usable curve, or None."""
    where = lines or list(range(1, len(hu) + 1))
    label = "line" if lines else "point"
    if len(hu) != len(density):
        return f"{len(hu)} HU values but {len(density)} densities"
    if len(hu) < 2:
        return f"{len(hu)} point(s); at least two are needed"
    for k, (h, d) in enumerate(zip(hu, density, strict=True)):
        if not (math.isfinite(h) and math.isfinite(d)):
            return f"{label} {where[k]}: {h:g} HU, {d:g} g/cm3 is not finite"
        if d <= 0:
            return f"{label} {where[k]}: density {d:g} g/cm3 at {h:g} HU is not positive"
    for k in range(1, len(hu)):
        if hu[k] <= hu[k - 1]:
            return (
                f"not monotonic: HU must increase strictly, but {label} {where[k]} has {hu[k]:g} HU after "
                f"{hu[k - 1]:g} HU"
            )
        if density[k] < density[k - 1]:
            return (
                f"not monotonic: density falls from {density[k - 1]:g} g/cm3 at {hu[k - 1]:g} HU to "
                f"{density[k]:g} g/cm3 at {hu[k]:g} HU ({label} {where[k]})"
            )
    return None
