"""HU ranges -> materials: Schneider's compositions in density bins, the CSV/JSON tables and their readers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.geometry.calibration import HUDensityCurve, schneider_2000
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.materials import (
    MATERIAL_CLASSES,
    build_material_table,
    read_materials_csv,
    read_materials_json,
    schneider_compositions,
    write_material_tables,
)


def test_schneider_compositions_are_normalised_mass_fractions() -> None:
    compositions = schneider_compositions()
    assert (
        len(compositions) == 26
        and compositions[0].name == "Air"
        and compositions[-1].name == "MetallImplants"
    )
    assert all(c.material_class in MATERIAL_CLASSES for c in compositions)
    assert all(sum(c.fractions.values()) == pytest.approx(1.0) for c in compositions)
    assert compositions[1].fractions["H"] == pytest.approx(0.103)  # lung, Schneider's table


def test_table_is_contiguous_covers_the_calibration_and_keeps_each_bin_within_tolerance() -> None:
    curve = schneider_2000()
    table = build_material_table(curve, density_tolerance=0.05)
    materials = table.materials
    assert [m.index for m in materials] == list(range(1, len(materials) + 1))
    assert materials[0].hu_min == curve.hu_range[0] and materials[-1].hu_max > curve.hu_range[1]
    assert all(a.hu_max == b.hu_min for a, b in itertools.pairwise(materials))
    for m in materials:
        if m.material_class == "air":
            continue
        inside = curve.densities(np.linspace(m.hu_min, min(m.hu_max, curve.hu_range[1]), 50))
        assert inside.max() - inside.min() <= 0.05 + 1e-6, m.name
        assert inside.min() - 1e-6 <= m.density <= inside.max() + 1e-6
    assert materials[0].name == "Air_0" and materials[0].density == pytest.approx(0.00121)  # as GATE does


def test_every_hu_of_the_calibration_gets_a_material() -> None:
    table = build_material_table(schneider_2000())
    hu = np.arange(-1024, 3072, dtype=np.float32)
    index = table.assign(hu)
    by_index = table.by_index()
    assert index.min() >= 1
    for value, i in zip(hu[::37], index[::37], strict=True):
        assert by_index[int(i)].hu_min <= value < by_index[int(i)].hu_max
    assert by_index[int(table.assign(np.array([45.0]))[0])].material_class == "soft tissue"
    assert by_index[int(table.assign(np.array([-100.0]))[0])].material_class == "adipose"


def test_a_narrow_site_calibration_drops_compositions_beyond_its_top() -> None:
    curve = HUDensityCurve(hu=(-1000.0, 0.0, 1500.0), density=(0.001, 1.0, 1.9), source="site")
    table = build_material_table(curve)
    assert table.hu_range == (-1000.0, 1501.0)
    assert {m.parent for m in table.materials}.isdisjoint({"AmalgamTooth", "MetallImplants"})


def test_csv_and_json_tables_round_trip(tmp_path: Path) -> None:
    table = build_material_table(schneider_2000())
    csv_path, json_path = write_material_tables(table, tmp_path)
    for read in (read_materials_csv(csv_path), read_materials_json(json_path)):
        assert len(read.materials) == len(table.materials)
        for a, b in zip(read.materials, table.materials, strict=True):
            assert (a.index, a.name, a.parent, a.material_class) == (
                b.index,
                b.name,
                b.parent,
                b.material_class,
            )
            assert (a.hu_min, a.hu_max) == (b.hu_min, b.hu_max)
            assert a.density == pytest.approx(b.density, rel=1e-7)
            assert a.fractions.keys() == b.fractions.keys()
            assert all(a.fractions[e] == pytest.approx(b.fractions[e], abs=1e-8) for e in b.fractions)


def test_a_table_with_a_gap_is_refused(tmp_path: Path) -> None:
    table = build_material_table(schneider_2000())
    csv_path, _ = write_material_tables(table, tmp_path)
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(",-903.89,", ",-900,", 1)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GeometryInputError, match=r"ends at -900 HU but Lung_2 starts at -903\.89 HU"):
        read_materials_csv(csv_path)


def test_tolerance_must_be_positive() -> None:
    with pytest.raises(GeometryInputError, match="density tolerance must be positive"):
        build_material_table(schneider_2000(), density_tolerance=0)
