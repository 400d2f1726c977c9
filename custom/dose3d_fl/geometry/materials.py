"""HU ranges -> materials: elemental compositions after Schneider et al. 2000, split into density bins.

Schneider, Bortfeld and Schlegel (2000, Phys. Med. Biol. 45:459-478) give the elemental mass fractions of
human tissues in HU intervals: air, lung, five adipose/soft-tissue mixtures, soft tissue (muscle and
organs), connective tissue, fifteen marrow/bone mixtures, dental amalgam and metal implants. The table below
is GATE's ``Schneider2000MaterialsTable.txt`` (shipped in opengate 10's ``opengate/data``). As GATE's
``HounsfieldUnit_to_material`` does, each interval is split into sub-intervals whose density varies by less
than a tolerance, and each sub-interval becomes one material whose density is the calibration's at its centre.
The first interval reaches down to the calibration's lowest HU and the last ends 1 HU above its highest, so
every interval is half-open, ``[hu_min, hu_max)`` as GATE reads them, and the table covers every HU the
calibration covers.

Each material also has a class (``air``, ``lung``, ``adipose``, ``soft tissue``, ``connective tissue``,
``bone``, ``dental amalgam``, ``metal``) for pictures and summaries. Tables are written and read as CSV and
JSON here; the Monte Carlo engine's own format is in :mod:`dose3d_fl.geometry.gate_format`. The binning is a
few lines of numpy rather than GATE's function, because opengate cannot be imported without downloading the
Geant4 data sets (docs/geometry.md).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose3d_fl.files import write_json_atomic, write_text_atomic
from dose3d_fl.geometry.calibration import HUDensityCurve
from dose3d_fl.geometry.errors import GeometryInputError

SCHNEIDER_ELEMENTS = (
    "H",
    "C",
    "N",
    "O",
    "Na",
    "Mg",
    "P",
    "S",
    "Cl",
    "Ar",
    "K",
    "Ca",
    "Ti",
    "Cu",
    "Zn",
    "Ag",
    "Sn",
)
SCHNEIDER_2000_SOURCE = "Schneider, Bortfeld, Schlegel 2000 (GATE Schneider2000MaterialsTable.txt)"

# (lowest HU, name, class, mass fractions in % of SCHNEIDER_ELEMENTS). GATE's table ends with a second
# MetallImplants row at 3000 HU that only closes the last interval; the calibration's top does that here.
_SCHNEIDER_2000 = (
    (-1050, "Air", "air", (0, 0, 75.5, 23.2, 0, 0, 0, 0, 0, 1.3, 0, 0, 0, 0, 0, 0, 0)),
    (-950, "Lung", "lung", (10.3, 10.5, 3.1, 74.9, 0.2, 0, 0.2, 0.3, 0.3, 0, 0.2, 0, 0, 0, 0, 0, 0)),
    (-120, "AT_AG_SI1", "adipose", (11.6, 68.1, 0.2, 19.8, 0.1, 0, 0, 0.1, 0.1, 0, 0, 0, 0, 0, 0, 0, 0)),
    (-82, "AT_AG_SI2", "adipose", (11.3, 56.7, 0.9, 30.8, 0.1, 0, 0, 0.1, 0.1, 0, 0, 0, 0, 0, 0, 0, 0)),
    (-52, "AT_AG_SI3", "adipose", (11.0, 45.8, 1.5, 41.1, 0.1, 0, 0.1, 0.2, 0.2, 0, 0, 0, 0, 0, 0, 0, 0)),
    (-22, "AT_AG_SI4", "adipose", (10.8, 35.6, 2.2, 50.9, 0, 0, 0.1, 0.2, 0.2, 0, 0, 0, 0, 0, 0, 0, 0)),
    (8, "AT_AG_SI5", "adipose", (10.6, 28.4, 2.6, 57.8, 0, 0, 0.1, 0.2, 0.2, 0, 0.1, 0, 0, 0, 0, 0, 0)),
    (
        19,
        "SoftTissus",
        "soft tissue",
        (10.3, 13.4, 3.0, 72.3, 0.2, 0, 0.2, 0.2, 0.2, 0, 0.2, 0, 0, 0, 0, 0, 0),
    ),
    (
        80,
        "ConnectiveTissue",
        "connective tissue",
        (9.4, 20.7, 6.2, 62.2, 0.6, 0, 0, 0.6, 0.3, 0, 0, 0, 0, 0, 0, 0, 0),
    ),
    (120, "Marrow_Bone01", "bone", (9.5, 45.5, 2.5, 35.5, 0.1, 0, 2.1, 0.1, 0.1, 0, 0.1, 4.5, 0, 0, 0, 0, 0)),
    (200, "Marrow_Bone02", "bone", (8.9, 42.3, 2.7, 36.3, 0.1, 0, 3.0, 0.1, 0.1, 0, 0.1, 6.4, 0, 0, 0, 0, 0)),
    (300, "Marrow_Bone03", "bone", (8.2, 39.1, 2.9, 37.2, 0.1, 0, 3.9, 0.1, 0.1, 0, 0.1, 8.3, 0, 0, 0, 0, 0)),
    (
        400,
        "Marrow_Bone04",
        "bone",
        (7.6, 36.1, 3.0, 38.0, 0.1, 0.1, 4.7, 0.2, 0.1, 0, 0, 10.1, 0, 0, 0, 0, 0),
    ),
    (500, "Marrow_Bone05", "bone", (7.1, 33.5, 3.2, 38.7, 0.1, 0.1, 5.4, 0.2, 0, 0, 0, 11.7, 0, 0, 0, 0, 0)),
    (600, "Marrow_Bone06", "bone", (6.6, 31.0, 3.3, 39.4, 0.1, 0.1, 6.1, 0.2, 0, 0, 0, 13.2, 0, 0, 0, 0, 0)),
    (700, "Marrow_Bone07", "bone", (6.1, 28.7, 3.5, 40.0, 0.1, 0.1, 6.7, 0.2, 0, 0, 0, 14.6, 0, 0, 0, 0, 0)),
    (800, "Marrow_Bone08", "bone", (5.6, 26.5, 3.6, 40.5, 0.1, 0.2, 7.3, 0.3, 0, 0, 0, 15.9, 0, 0, 0, 0, 0)),
    (900, "Marrow_Bone09", "bone", (5.2, 24.6, 3.7, 41.1, 0.1, 0.2, 7.8, 0.3, 0, 0, 0, 17.0, 0, 0, 0, 0, 0)),
    (1000, "Marrow_Bone10", "bone", (4.9, 22.7, 3.8, 41.6, 0.1, 0.2, 8.3, 0.3, 0, 0, 0, 18.1, 0, 0, 0, 0, 0)),
    (1100, "Marrow_Bone11", "bone", (4.5, 21.0, 3.9, 42.0, 0.1, 0.2, 8.8, 0.3, 0, 0, 0, 19.2, 0, 0, 0, 0, 0)),
    (1200, "Marrow_Bone12", "bone", (4.2, 19.4, 4.0, 42.5, 0.1, 0.2, 9.2, 0.3, 0, 0, 0, 20.1, 0, 0, 0, 0, 0)),
    (1300, "Marrow_Bone13", "bone", (3.9, 17.9, 4.1, 42.9, 0.1, 0.2, 9.6, 0.3, 0, 0, 0, 21.0, 0, 0, 0, 0, 0)),
    (
        1400,
        "Marrow_Bone14",
        "bone",
        (3.6, 16.5, 4.2, 43.2, 0.1, 0.2, 10.0, 0.3, 0, 0, 0, 21.9, 0, 0, 0, 0, 0),
    ),
    (
        1500,
        "Marrow_Bone15",
        "bone",
        (3.4, 15.5, 4.2, 43.5, 0.1, 0.2, 10.3, 0.3, 0, 0, 0, 22.5, 0, 0, 0, 0, 0),
    ),
    (1640, "AmalgamTooth", "dental amalgam", (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 2, 65, 29)),
    (2300, "MetallImplants", "metal", (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0)),
)
MATERIAL_CLASSES = (
    "air",
    "lung",
    "adipose",
    "soft tissue",
    "connective tissue",
    "bone",
    "dental amalgam",
    "metal",
)
_CSV_FIXED = ("index", "name", "parent", "class", "hu_min", "hu_max", "density_g_cm3")


@dataclass(frozen=True)
class Composition:
    """A tissue of the composition table: the HU interval it starts at and its elemental mass fractions.

    Args:
        hu_min: lowest HU of its interval (it ends where the next composition starts).
        name: material name (GATE's Schneider names).
        material_class: one of :data:`MATERIAL_CLASSES`.
        fractions: element symbol -> mass fraction; normalised to sum to 1, zeros left out.
    """

    hu_min: float
    name: str
    material_class: str
    fractions: dict[str, float]


@dataclass(frozen=True)
class Material:
    """One material of a phantom: a HU interval ``[hu_min, hu_max)``, a composition and a nominal density.

    Args:
        index: its value in the material map (1, 2, ...).
        name: unique name, ``<parent>_<n>`` as GATE names its density bins.
        parent: the composition it comes from.
        material_class: one of :data:`MATERIAL_CLASSES`.
        hu_min: lowest HU of the interval (inclusive).
        hu_max: end of the interval (exclusive).
        density: nominal mass density (g/cm3): the calibration's at the interval's centre.
        fractions: element symbol -> mass fraction, summing to 1.
    """

    index: int
    name: str
    parent: str
    material_class: str
    hu_min: float
    hu_max: float
    density: float
    fractions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MaterialTable:
    """The materials of a phantom, ordered by HU, contiguous from the first ``hu_min`` to the last ``hu_max``."""

    materials: tuple[Material, ...]
    source: str

    @property
    def hu_range(self) -> tuple[float, float]:
        """Lowest and highest HU the table covers."""
        return self.materials[0].hu_min, self.materials[-1].hu_max

    def assign(self, hu: np.ndarray) -> np.ndarray:
        """The material index (uint16, 1-based) of each HU value; values must lie inside :attr:`hu_range`."""
        lower = np.array([m.hu_min for m in self.materials[1:]])
        position = np.searchsorted(lower, np.asarray(hu), side="right")
        return np.array([m.index for m in self.materials], dtype=np.uint16)[position]

    def by_index(self) -> dict[int, Material]:
        """Materials by their index in the material map."""
        return {m.index: m for m in self.materials}


def schneider_compositions() -> list[Composition]:
    """The 26 compositions of Schneider et al. 2000, fractions normalised to sum to 1."""
    compositions = []
    for hu_min, name, material_class, percent in _SCHNEIDER_2000:
        total = float(sum(percent))
        fractions = {
            symbol: value / total
            for symbol, value in zip(SCHNEIDER_ELEMENTS, percent, strict=True)
            if value > 0
        }
        compositions.append(Composition(float(hu_min), name, material_class, fractions))
    return compositions


def build_material_table(
    curve: HUDensityCurve, density_tolerance: float = 0.05, compositions: list[Composition] | None = None
) -> MaterialTable:
    """Split each composition's HU interval into density bins of at most ``density_tolerance`` g/cm3.

    As GATE's ``HounsfieldUnit_to_material``: an interval whose density spans ``d`` gets ``ceil(d / tolerance)``
    equal HU sub-intervals (one for air; edges rounded to 0.01 HU), each a material with the calibration's
    density at its centre (a single bin: at the centre of the composition's own interval).
    Compositions starting above the calibration's top are left out.

    Args:
        curve: the HU -> density calibration.
        density_tolerance: largest density range (g/cm3) inside one material.
        compositions: default :func:`schneider_compositions`.

    Returns:
        The table, covering the calibration's HU range.

    Raises:
        GeometryInputError: a tolerance that is not positive.
    """
    if not density_tolerance > 0:
        raise GeometryInputError(f"density tolerance must be positive, got {density_tolerance:g} g/cm3")
    compositions = compositions or schneider_compositions()
    low, high = curve.hu_range
    inside = [c for c in compositions if c.hu_min < high]
    starts = [low if k == 0 else min(max(c.hu_min, low), high) for k, c in enumerate(inside)]
    ends = [*starts[1:], high + 1.0]
    nominal_ends = [*(c.hu_min for c in inside[1:]), high + 1.0]
    materials: list[Material] = []
    for composition, start, end, nominal_end in zip(inside, starts, ends, nominal_ends, strict=True):
        if end <= start:
            continue
        knots = [start, *(h for h in curve.hu if start < h < end), end]
        densities = curve.densities(np.array(knots))
        spread = float(densities.max() - densities.min())
        bins = (
            1 if composition.material_class == "air" else max(1, math.ceil(spread / density_tolerance - 1e-9))
        )
        edges = np.round(np.linspace(start, end, bins + 1), 2)
        # One bin takes the density at the centre of the composition's own interval, as GATE does: air is
        # Schneider's -1050..-950 HU, so 0.00121 g/cm3 (at -1000 HU) even where the calibration starts at -1024.
        if bins == 1:
            centres = [min(max((composition.hu_min + nominal_end) / 2, start), end)]
        else:
            centres = list((edges[:-1] + edges[1:]) / 2)
        for (lower, upper), centre in zip(itertools.pairwise(edges), centres, strict=True):
            materials.append(
                Material(
                    index=len(materials) + 1,
                    name=f"{composition.name}_{len(materials)}",
                    parent=composition.name,
                    material_class=composition.material_class,
                    hu_min=float(lower),
                    hu_max=float(upper),
                    density=float(curve.densities(np.array([centre]))[0]),
                    fractions=dict(composition.fractions),
                )
            )
    source = f"{SCHNEIDER_2000_SOURCE}; densities from {curve.source}; bins of {density_tolerance:g} g/cm3"
    return MaterialTable(materials=tuple(materials), source=source)


def materials_to_csv(table: MaterialTable) -> str:
    """The table as CSV: one row per material, one column per element (mass fraction)."""
    elements = _elements(table)
    out = io.StringIO()
    out.write(f"# {table.source}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_CSV_FIXED, *elements])
    for m in table.materials:
        writer.writerow(
            [
                m.index,
                m.name,
                m.parent,
                m.material_class,
                f"{m.hu_min:.10g}",
                f"{m.hu_max:.10g}",
                f"{m.density:.8g}",
            ]
            + [f"{m.fractions.get(e, 0.0):.8g}" for e in elements]
        )
    return out.getvalue()


def materials_to_json(table: MaterialTable) -> dict:
    """The table as a JSON-ready dictionary."""
    return {
        "source": table.source,
        "units": {"hu": "HU, interval [hu_min, hu_max)", "density": "g/cm3", "fractions": "mass fraction"},
        "materials": [
            {
                "index": m.index,
                "name": m.name,
                "parent": m.parent,
                "class": m.material_class,
                "hu_min": m.hu_min,
                "hu_max": m.hu_max,
                "density_g_cm3": m.density,
                "mass_fractions": m.fractions,
            }
            for m in table.materials
        ],
    }


def write_material_tables(table: MaterialTable, folder: str | Path) -> list[Path]:
    """Write ``materials.csv`` and ``materials.json`` into ``folder``; returns their paths."""
    folder = Path(folder)
    return [
        write_text_atomic(folder / "materials.csv", materials_to_csv(table)),
        write_json_atomic(folder / "materials.json", materials_to_json(table)),
    ]


def read_materials_csv(path: str | Path) -> MaterialTable:
    """Read a table written by :func:`materials_to_csv` (a site may edit compositions in it).

    Raises:
        GeometryInputError: missing columns, non-numeric values, or a table that is not contiguous.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    source = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), str(path))
    rows = list(
        csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    )
    if not rows or any(column not in rows[0] for column in _CSV_FIXED):
        raise GeometryInputError(f"materials CSV {path}: expected the columns {', '.join(_CSV_FIXED)}")
    elements = [column for column in rows[0] if column not in _CSV_FIXED]
    try:
        materials = [
            Material(
                index=int(row["index"]),
                name=row["name"],
                parent=row["parent"],
                material_class=row["class"],
                hu_min=float(row["hu_min"]),
                hu_max=float(row["hu_max"]),
                density=float(row["density_g_cm3"]),
                fractions={e: float(row[e]) for e in elements if float(row[e]) > 0},
            )
            for row in rows
        ]
    except (TypeError, ValueError) as err:
        raise GeometryInputError(f"materials CSV {path}: a value is not a number ({err})") from err
    return validated_table(materials, source, str(path))


def read_materials_json(path: str | Path) -> MaterialTable:
    """Read a table written by :func:`materials_to_json`."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    materials = [
        Material(
            index=int(m["index"]),
            name=str(m["name"]),
            parent=str(m["parent"]),
            material_class=str(m["class"]),
            hu_min=float(m["hu_min"]),
            hu_max=float(m["hu_max"]),
            density=float(m["density_g_cm3"]),
            fractions={str(k): float(v) for k, v in m["mass_fractions"].items()},
        )
        for m in data["materials"]
    ]
    return validated_table(materials, str(data.get("source", path)), str(path))


def validated_table(materials: list[Material], source: str, where: str) -> MaterialTable:
    """Check that materials are contiguous in HU, with positive densities and fractions summing to 1.

    Raises:
        GeometryInputError: naming the first material that breaks a rule.
    """
    if not materials:
        raise GeometryInputError(f"materials {where}: no material")
    materials = sorted(materials, key=lambda m: m.hu_min)
    for k, m in enumerate(materials):
        if m.hu_max <= m.hu_min:
            raise GeometryInputError(
                f"materials {where}: {m.name} has an empty HU interval {m.hu_min:g}..{m.hu_max:g}"
            )
        if k and not math.isclose(m.hu_min, materials[k - 1].hu_max, abs_tol=1e-6):
            raise GeometryInputError(
                f"materials {where}: {materials[k - 1].name} ends at {materials[k - 1].hu_max:g} HU but {m.name} "
                f"starts at {m.hu_min:g} HU; intervals must be contiguous"
            )
        if not m.density > 0:
            raise GeometryInputError(f"materials {where}: {m.name} has density {m.density:g} g/cm3")
        total = sum(m.fractions.values())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise GeometryInputError(
                f"materials {where}: mass fractions of {m.name} sum to {total:.4f}, not 1"
            )
    names = [m.name for m in materials]
    if len(set(names)) != len(names):
        raise GeometryInputError(f"materials {where}: material names are not unique")
    return MaterialTable(materials=tuple(materials), source=source)


def _elements(table: MaterialTable) -> list[str]:
    used = {e for m in table.materials for e in m.fractions}
    known = [e for e in SCHNEIDER_ELEMENTS if e in used]
    return known + sorted(used - set(known))
