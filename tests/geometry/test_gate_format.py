"""The GATE 10 material files: written, then read back the way opengate's parsers read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.geometry.calibration import schneider_2000
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.gate_format import (
    GATE_ELEMENTS,
    read_gate_database,
    read_hu_ranges,
    read_index_ranges,
    write_gate_files,
)
from dose3d_fl.geometry.materials import build_material_table


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    table = build_material_table(schneider_2000())
    folder = tmp_path_factory.mktemp("gate")
    return table, write_gate_files(table, folder, "phantom/ct_hu.nii.gz")


def test_material_database_round_trips(written) -> None:
    table, (database, _, _) = written
    read = read_gate_database(database)
    assert list(read) == [m.name for m in table.materials]
    for m in table.materials:
        gate = read[m.name]
        assert gate.density == pytest.approx(m.density, rel=1e-7)
        assert gate.fractions.keys() == m.fractions.keys()
        assert all(gate.fractions[e] == pytest.approx(f, abs=1e-8) for e, f in m.fractions.items())
        assert sum(gate.fractions.values()) == pytest.approx(
            1.0, abs=1e-6
        )  # Geant4 wants fractions summing to 1
    assert read["Air_0"].state == "gas"


def test_database_follows_gate_line_formats(written) -> None:
    _, (database, _, _) = written
    text = database.read_text()
    assert text.index("[Elements]") < text.index("[Materials]")
    assert "Hydrogen:   S= H  ; Z=  1. ; A=     1.01 g/mole" in text
    headers = [line for line in text.splitlines() if ": d=" in line]
    assert all(len(line.split(":", 1)[1].split(";")) in (2, 3) for line in headers)
    assert all(line.strip().startswith("+el: name=") for line in text.splitlines() if "+el" in line)
    symbols = {symbol for _, symbol, _, _ in GATE_ELEMENTS}
    assert {"H", "C", "N", "O", "Ca", "P"} <= symbols


def test_hu_ranges_round_trip_as_read_voxel_materials_reads_them(written) -> None:
    table, (_, ranges, labels) = written
    assert read_hu_ranges(ranges) == [(m.hu_min, m.hu_max, m.name) for m in table.materials]
    assert read_index_ranges(labels) == [(m.index, m.index + 1, m.name) for m in table.materials]
    assert ranges.read_text().startswith("# HU -> material of phantom/ct_hu.nii.gz")


def test_overlapping_ranges_and_broken_databases_are_refused(tmp_path: Path) -> None:
    ranges = tmp_path / "ranges.txt"
    ranges.write_text("-1000 0 Lung_1\n-10 100 Soft_2\n")
    with pytest.raises(GeometryInputError, match="overlaps the next"):
        read_hu_ranges(ranges)
    database = tmp_path / "broken.db"
    database.write_text("[Materials]\nWater: d=1.0 g/cm3 ; n=2\n        +el: name=H ; f=0.111\nOxygen line\n")
    with pytest.raises(GeometryInputError, match="Water expects 2 '\\+el:' lines"):
        read_gate_database(database)
    database.write_text("[Materials]\nWater: d=1.0 kg/l ; n=1\n        +el: name=H ; f=1\n")
    with pytest.raises(GeometryInputError, match="density unit 'kg/l'"):
        read_gate_database(database)
