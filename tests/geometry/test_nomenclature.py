"""Structure names -> TG-263."""

from __future__ import annotations

import pytest

from dose3d_fl.geometry.nomenclature import tg263_name


@pytest.mark.parametrize(
    ("source", "standard"),
    [
        ("BODY", "External"),
        ("SPLEEN", "Spleen"),
        ("spleen ", "Spleen"),
        ("Kidney Left", "Kidney_L"),
        ("KIDNEY_R", "Kidney_R"),
        ("IVC", "V_Venacava_I"),
        ("aorta", "A_Aorta"),
        ("Lung-Left", "Lung_L"),
        ("External", "External"),
    ],
)
def test_known_names_map_to_tg263(source: str, standard: str) -> None:
    name = tg263_name(source)
    assert (name.name, name.source, name.standard) == (standard, source, True)


def test_an_unknown_name_keeps_its_spelling_and_says_so() -> None:
    name = tg263_name("PTV 50/2 (boost)")
    assert (name.name, name.standard) == ("PTV 50/2 (boost)", False)
    assert name.file_stem == "PTV_50_2_boost"
