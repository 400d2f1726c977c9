"""Local ROI names -> TG-263: exact alias hits and the site's file map; nothing else does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.data.tg263 import (
    ROI_NAMES_FILE,
    TG263_ALIASES,
    RoiMappingError,
    SiteRoiMapping,
    check_organs,
    find_site_mapping,
    load_site_mapping,
    normalise_roi_name,
    resolve_roi_names,
    standard_name,
    suggest_tg263,
)

ORGANS = ("Spleen", "Liver", "Kidney_L", "Kidney_R", "Stomach", "Pancreas")


@pytest.mark.parametrize(
    ("local", "tg263"),
    [
        ("Spleen", "Spleen"),
        ("SPLEEN", "Spleen"),
        ("SPLEEN_P", "Spleen"),
        ("Milz", "Spleen"),
        ("Śledziona", "Spleen"),
        ("Sledziona", "Spleen"),
        ("SLEDZIONA", "Spleen"),
        ("Kidney_L", "Kidney_L"),
        ("L Kidney", "Kidney_L"),
        ("L KIDNEY", "Kidney_L"),
        ("Left kidney", "Kidney_L"),
        ("Kidney Lt", "Kidney_L"),
        ("Kidney (R)", "Kidney_R"),
        ("kidney-right", "Kidney_R"),
        ("Niere links", "Kidney_L"),
        ("Nerka lewa", "Kidney_L"),
        ("Nerka prawa", "Kidney_R"),
        ("Wątroba", "Liver"),
        ("Watroba", "Liver"),
        ("Żołądek", "Stomach"),
        ("Zoladek", "Stomach"),
        ("Trzustka", "Pancreas"),
        ("Aorta", "A_Aorta"),
        ("BODY", "External"),
        ("Obrys ciała", "External"),
        ("IVC", "V_Venacava_I"),
        ("  liver  ", "Liver"),
    ],
)
def test_an_exact_alias_maps_ignoring_case_accents_and_separators(local: str, tg263: str) -> None:
    assert standard_name(local) == tg263


@pytest.mark.parametrize("local", ["Sledz", "PANC", "Livr", "Kidney", "Lung", "Spleen2", "GTV", "Nerka"])
def test_a_near_miss_is_never_mapped(local: str) -> None:
    assert standard_name(local) is None


def test_normalisation_folds_polish_german_and_separators() -> None:
    assert normalise_roi_name("Żołądek") == "zoladek"
    assert normalise_roi_name("Łąka ŁÓDŹ") == "laka_lodz"
    assert normalise_roi_name("Außenkontur") == "aussenkontur"
    assert normalise_roi_name(" L. Kidney ") == "l_kidney"
    assert normalise_roi_name("Kidney__L--(x)") == "kidney_l_x"


def test_the_table_is_consistent() -> None:
    # Every TG-263 name fits the 16 characters TG-263 allows, and no alias points at two names (checked when
    # the module builds its index; here by rebuilding it).
    assert all(len(name) <= 16 for name in TG263_ALIASES)
    seen: dict[str, str] = {}
    for name, aliases in TG263_ALIASES.items():
        assert name in aliases
        for alias in aliases:
            assert seen.setdefault(normalise_roi_name(alias), name) == name, alias
    assert {"Spleen", "Liver", "Kidney_L", "Kidney_R", "Stomach", "Pancreas", "A_Aorta"} <= set(TG263_ALIASES)


def test_suggestions_point_at_the_right_organ() -> None:
    assert suggest_tg263("Sledz")[0] == "Spleen"
    assert suggest_tg263("PANC")[0] == "Pancreas"
    assert suggest_tg263("Stomch")[0] == "Stomach"
    assert suggest_tg263("Kidny L")[0] == "Kidney_L"
    assert suggest_tg263("PTV_50") == ()
    assert suggest_tg263("") == ()


def test_resolve_maps_exactly_and_reports_the_rest() -> None:
    names = ["BODY", "Śledziona", "L KIDNEY", "Kidney_R", "Sledz_old", "PANC", "PTV 50", "zRing", "_helper"]
    resolution = resolve_roi_names(names, ORGANS)
    assert {o: m.local for o, m in resolution.rois.items()} == {
        "Spleen": "Śledziona",
        "Kidney_L": "L KIDNEY",
        "Kidney_R": "Kidney_R",
    }
    assert all(m.via == "alias table" for m in resolution.rois.values())
    assert resolution.missing == ("Liver", "Stomach", "Pancreas")
    assert resolution.labelled == (True, False, True, True, False, False)
    assert [m.local for m in resolution.other] == ["BODY"]
    assert resolution.not_organs == ("PTV 50", "zRing", "_helper")
    unmapped = {u.local: u for u in resolution.unmapped}
    assert set(unmapped) == {"Sledz_old", "PANC"}
    assert unmapped["PANC"].suggestions[0] == "Pancreas"
    message = unmapped["PANC"].message()
    assert message.startswith("unmapped ROI 'PANC': did you mean Pancreas?") and ROI_NAMES_FILE in message
    assert "\n" not in message
    assert resolution.error is None


def test_the_site_file_maps_what_the_table_does_not_and_wins_over_it() -> None:
    site = {"PANC": "Pancreas", "Sledz_old": None, "LIVER": "Liver", "Magen alt": "Stomach"}
    resolution = resolve_roi_names(["PANC", "Sledz_old", "liver", "MAGEN-ALT", "Milz"], ORGANS, site)
    assert resolution.rois["Pancreas"].via == "site file"
    assert resolution.rois["Liver"].via == "site file"  # matched like an alias: case and separators ignored
    assert resolution.rois["Stomach"].local == "MAGEN-ALT"
    assert resolution.rois["Spleen"].via == "alias table"
    assert resolution.ignored == ("Sledz_old",)
    assert resolution.unmapped == ()
    # The site decides what its names mean, even against the table.
    overridden = resolve_roi_names(["Milz"], ORGANS, {"Milz": "Liver"})
    assert overridden.rois == {"Liver": overridden.rois["Liver"]} and overridden.missing[0] == "Spleen"


def test_two_rois_for_one_organ_are_a_conflict_with_a_reason() -> None:
    resolution = resolve_roi_names(["Spleen", "SPLEEN_P", "Liver"], ORGANS)
    assert "Spleen" not in resolution.rois and "Spleen" not in resolution.missing
    assert resolution.labelled[0] is False and resolution.labelled[1] is True
    (conflict,) = resolution.conflicts
    assert conflict.organ == "Spleen"
    assert (
        "'Spleen'" in resolution.error and "'SPLEEN_P'" in resolution.error and "Spleen" in resolution.error
    )
    # The same name twice is a conflict too; the site can settle one by mapping it to null.
    assert resolve_roi_names(["Liver", "Liver"], ORGANS).conflicts[0].organ == "Liver"
    settled = resolve_roi_names(["Spleen", "SPLEEN_P"], ORGANS, {"SPLEEN_P": None})
    assert settled.rois["Spleen"].local == "Spleen" and settled.error is None
    # Duplicates outside the task do not matter to it.
    assert resolve_roi_names(["BODY", "External", "Liver"], ORGANS).error is None


def test_organ_lists_are_checked() -> None:
    assert check_organs(["Spleen"]) == ("Spleen",)
    with pytest.raises(ValueError, match=r"'Kidney_Left' .* the TG-263 name is Kidney_L"):
        check_organs(["Spleen", "Kidney_Left"])
    with pytest.raises(ValueError, match="did you mean Pancreas"):
        resolve_roi_names(["x"], ["Pancreass"])
    with pytest.raises(ValueError, match="more than once"):
        check_organs(["Liver", "Liver"])
    with pytest.raises(ValueError, match="empty"):
        check_organs([])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_site_file_is_read_from_the_local_folder(tmp_path: Path) -> None:
    assert find_site_mapping(tmp_path).entries == {}
    _write(tmp_path / ROI_NAMES_FILE, json.dumps({"Śledź": "Spleen", "PTV_x": None}, ensure_ascii=False))
    mapping = find_site_mapping(tmp_path)
    assert mapping.lookup("sledz") == (True, "Spleen")
    assert mapping.lookup("PTV x") == (True, None)
    assert mapping.lookup("Liver") == (False, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"Sledz": "Splen"}', r"'Sledz' maps to 'Splen', which is not a TG-263 name .* did you mean Spleen"),
        ('{"L Kid": "Left Kidney"}', r"not a TG-263 name .* the TG-263 name is 'Kidney_L'"),
        ('{"Sledz": 3}', "give a TG-263 name as a string, or null"),
        ('["Spleen"]', "expected a JSON object"),
        ('{"": "Spleen"}', "empty local ROI name"),
        ('{"Sledz": "Spleen", "SLEDZ": "Liver"}', "same name ignoring case"),
        ('{"Sledz": "Spleen", "Sledz": "Spleen"}', "listed twice"),
        ('{"Sledz": "Spleen",}', "not valid JSON at line 1"),
    ],
)
def test_a_bad_site_file_is_refused_with_one_line(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path / ROI_NAMES_FILE, text)
    with pytest.raises(RoiMappingError, match=reason) as caught:
        load_site_mapping(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_site_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ROI_NAMES_FILE
    path.write_bytes('{"Śledziona": "Spleen"}'.encode("cp1250"))
    with pytest.raises(RoiMappingError, match="UTF-8"):
        load_site_mapping(path)


def test_a_plain_mapping_is_validated_too() -> None:
    with pytest.raises(RoiMappingError, match="Splen"):
        resolve_roi_names(["Sledz"], ORGANS, {"Sledz": "Splen"})
    assert SiteRoiMapping.from_dict({"a": "Liver"}).entries == {"a": "Liver"}


def test_geometry_names_map_the_same_here() -> None:
    # dose3d geometry keeps its own smaller table; a name it maps must not mean another organ here.
    from dose3d_fl.geometry.nomenclature import _SYNONYMS, TG263_NAMES, tg263_name

    for name in (*TG263_NAMES, *_SYNONYMS):
        assert standard_name(name) == tg263_name(name).name, name
