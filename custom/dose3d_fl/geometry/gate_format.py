"""The material table in the format of the Monte Carlo engine GATE 10 (opengate), written and read back.

Three text files, all read by opengate 10 functions (source: ``opengate/geometry/materials.py`` and
``opengate/geometry/volumes.py`` of opengate 10.1.1):

* ``materials.db``, a GATE material database (the format of GATE's ``GateMaterials.db``): an
  ``[Elements]`` section (``Hydrogen: S= H ; Z= 1. ; A= 1.01 g/mole``) and a ``[Materials]`` section, one
  material per block (``Lung_1: d=0.076434784 g/cm3 ; n=9``, then one ``+el: name=Hydrogen ; f=0.10300000``
  line per element, mass fractions). Load it with ``sim.volume_manager.add_material_database(path)``.
* ``hu_to_materials.txt``, one ``hu_min hu_max name`` line per material, the HU -> material table of an
  ``ImageVolume`` given the HU image: ``patient.voxel_materials =
  opengate.geometry.materials.read_voxel_materials(path)``. Intervals are half-open, ``[hu_min, hu_max)``.
* ``voxel_materials.json``, ``[[index, index + 1, name], ...]`` for the material-index image instead
  (``patient.read_label_to_material(path)``).

opengate itself is not a dependency: importing it downloads the Geant4 data sets (over a gigabyte, from
CERN) on first use.
These writers follow the parsers named above, and :func:`read_gate_database` and :func:`read_hu_ranges`
read the files back the way those parsers do, so tests can check the round trip without opengate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dose3d_fl.files import write_json_atomic, write_text_atomic
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.materials import MaterialTable

# Element name, symbol, Z, A (g/mole), as GATE's GateMaterials.db defines them.
GATE_ELEMENTS = (
    ("Hydrogen", "H", 1, 1.01),
    ("Carbon", "C", 6, 12.01),
    ("Nitrogen", "N", 7, 14.01),
    ("Oxygen", "O", 8, 16.00),
    ("Sodium", "Na", 11, 22.99),
    ("Magnesium", "Mg", 12, 24.305),
    ("Phosphor", "P", 15, 30.97),
    ("Sulfur", "S", 16, 32.066),
    ("Chlorine", "Cl", 17, 35.45),
    ("Argon", "Ar", 18, 39.95),
    ("Potassium", "K", 19, 39.098),
    ("Calcium", "Ca", 20, 40.08),
    ("Titanium", "Ti", 22, 47.867),
    ("Copper", "Cu", 29, 63.39),
    ("Zinc", "Zn", 30, 65.39),
    ("Silver", "Ag", 47, 107.868),
    ("Tin", "Sn", 50, 118.71),
)
DATABASE_NAME = "materials.db"
HU_RANGES_NAME = "hu_to_materials.txt"
LABELS_NAME = "voxel_materials.json"
_DENSITY_UNITS = {"g/cm3": 1.0, "mg/cm3": 1e-3, "kg/m3": 1e-3}


@dataclass(frozen=True)
class GateMaterial:
    """A material as read from a GATE database: density (g/cm3), element symbol -> mass fraction, state."""

    name: str
    density: float
    fractions: dict[str, float]
    state: str | None = None


def write_gate_files(table: MaterialTable, folder: str | Path, image_name: str) -> list[Path]:
    """Write the database, the HU ranges and the index ranges into ``folder``; returns their paths.

    Args:
        table: the phantom's materials.
        folder: destination (created).
        image_name: the HU image the ranges apply to, named in the files' comments.
    """
    folder = Path(folder)
    return [
        write_text_atomic(folder / DATABASE_NAME, gate_database_text(table)),
        write_text_atomic(folder / HU_RANGES_NAME, hu_ranges_text(table, image_name)),
        write_json_atomic(folder / LABELS_NAME, [[m.index, m.index + 1, m.name] for m in table.materials]),
    ]


def gate_database_text(table: MaterialTable) -> str:
    """The materials as a GATE material database."""
    symbol_to_name = {symbol: name for name, symbol, _, _ in GATE_ELEMENTS}
    used = {symbol for m in table.materials for symbol in m.fractions}
    unknown = sorted(used - set(symbol_to_name))
    if unknown:
        raise GeometryInputError(f"materials: element(s) {', '.join(unknown)} have no GATE definition here")
    lines = [f"# dose3d geometry: {table.source}", "[Elements]"]
    for name, symbol, z, a in GATE_ELEMENTS:
        if symbol in used:
            lines.append(f"{name + ':':<11} S= {symbol:<3}; Z= {z:>2}. ; A= {a:>8g} g/mole")
    lines += ["", "[Materials]"]
    for m in table.materials:
        state = " ; state=gas" if m.material_class == "air" else ""
        lines.append(f"{m.name}: d={m.density:.8g} g/cm3 ; n={len(m.fractions)}{state}")
        lines += [f"        +el: name={symbol_to_name[s]} ; f={f:.8f}" for s, f in m.fractions.items()]
        lines.append("")
    return "\n".join(lines)


def hu_ranges_text(table: MaterialTable, image_name: str) -> str:
    """The ``hu_min hu_max name`` lines that opengate's ``read_voxel_materials`` reads."""
    lines = [f"# HU -> material of {image_name}, intervals [hu_min, hu_max); materials in {DATABASE_NAME}"]
    lines += [f"{m.hu_min:.10g} {m.hu_max:.10g} {m.name}" for m in table.materials]
    return "\n".join(lines) + "\n"


def read_gate_database(path: str | Path) -> dict[str, GateMaterial]:
    """Read the ``[Materials]`` of a GATE database, resolving element names through its ``[Elements]``.

    Follows opengate's ``MaterialDatabase.read_from_file``: ``#`` comments, sections, ``Name: d=VALUE UNIT ;
    n=N [; state=S]`` followed by ``n`` ``+el: name=E ; f=F`` lines. Elements not defined in the file keep
    their name (opengate would look them up in Geant4's NIST table).

    Raises:
        GeometryInputError: a line that does not follow the format, naming it.
    """
    path = Path(path)
    lines = [line.strip().replace("\t", " ") for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    symbols: dict[str, str] = {}
    materials: dict[str, GateMaterial] = {}
    section = None
    k = 0
    while k < len(lines):
        line = lines[k]
        k += 1
        if line.split()[0] in ("[Elements]", "[Materials]", "[Isotopes]"):
            section = line.split()[0]
            continue
        if section == "[Elements]" and "Z=" in line:
            name, rest = line.split(":", 1)
            symbols[name.strip()] = _tag(rest.split(";")[0], "S", path, line)
        elif section == "[Materials]":
            name, density, count, state = _material_header(line, path)
            fractions = {}
            for element_line in lines[k : k + count]:
                if not element_line.startswith("+el:"):
                    raise GeometryInputError(
                        f"{path}: {name} expects {count} '+el:' lines, found {element_line!r}"
                    )
                element, fraction = re.split("[;,]", element_line.split("+el:", 1)[1])
                element_name = _tag(element, "name", path, element_line)
                fractions[symbols.get(element_name, element_name)] = float(
                    _tag(fraction, "f", path, element_line)
                )
            k += count
            materials[name] = GateMaterial(name, density, fractions, state)
        else:
            raise GeometryInputError(f"{path}: line {line!r} is outside [Elements] or [Materials]")
    return materials


def read_hu_ranges(path: str | Path) -> list[tuple[float, float, str]]:
    """Read ``hu_min hu_max name`` triplets as opengate's ``read_voxel_materials`` does, sorted by ``hu_min``.

    Raises:
        GeometryInputError: overlapping or inverted intervals.
    """
    words = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        for word in line.split():
            if word.startswith("#"):
                break
            words.append(word)
    if len(words) % 3:
        raise GeometryInputError(f"{path}: {len(words)} words, not a list of 'hu_min hu_max name' triplets")
    ranges = sorted((float(words[i]), float(words[i + 1]), words[i + 2]) for i in range(0, len(words), 3))
    for (low, high, name), following in zip(ranges, [*ranges[1:], None], strict=True):
        if high < low or (following is not None and following[0] < high):
            raise GeometryInputError(
                f"{path}: interval {low:g} {high:g} {name} is inverted or overlaps the next"
            )
    return ranges


def read_index_ranges(path: str | Path) -> list[tuple[int, int, str]]:
    """Read ``voxel_materials.json``: ``(index, index + 1, name)`` per material."""
    return [(int(low), int(high), str(name)) for low, high, name in json.loads(Path(path).read_text())]


def _material_header(line: str, path: Path) -> tuple[str, float, int, str | None]:
    if ":" not in line:
        raise GeometryInputError(f"{path}: line {line!r} should start a material with 'Name: d=... ; n=...'")
    name, rest = line.split(":", 1)
    fields = rest.split(";")
    if len(fields) not in (2, 3):
        raise GeometryInputError(
            f"{path}: material line {line!r} should hold 'd=...' ; 'n=...' [; 'state=...']"
        )
    value, unit = _tag(fields[0], "d", path, line).split()
    if unit not in _DENSITY_UNITS:
        raise GeometryInputError(
            f"{path}: density unit {unit!r} in {line!r} is not one of {', '.join(_DENSITY_UNITS)}"
        )
    state = _tag(fields[2], "state", path, line).lower() if len(fields) == 3 else None
    return name.strip(), float(value) * _DENSITY_UNITS[unit], int(_tag(fields[1], "n", path, line)), state


def _tag(text: str, tag: str, path: Path, line: str) -> str:
    key, _, value = text.partition("=")
    if key.strip() != tag or not value.strip():
        raise GeometryInputError(f"{path}: expected '{tag}=...' in {line!r}")
    return value.strip()
