"""Organs at risk in the synthetic hospitals: each site's names, partial delineation, exact round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dose3d_fl.cli import main
from dose3d_fl.data.discovery import discover_dicom
from dose3d_fl.data.rtstruct import rasterise_contours, read_structure_set
from dose3d_fl.data.tg263 import resolve_roi_names
from dose3d_fl.synth.contouring import (
    ORGANS_AT_RISK,
    SITE_CONVENTIONS,
    contoured_organs,
    convention_for_site,
    organ_label_map,
    patient_rois,
)
from dose3d_fl.synth.hospital import (
    SyntheticPatient,
    patient_identity,
    synthesize_federation,
    synthesize_patient,
    write_study,
)
from dose3d_fl.synth.scanner import SITE_SCANNERS
from tests.data.dicom_builders import dice

# With this seed site 1 lacks the pancreas, site 2 the kidneys and the aorta, site 3 nothing.
SEED = "2"
TG263 = tuple(spec.tg263 for spec in ORGANS_AT_RISK)
# Plausible adult volumes (ml; kidneys without the renal sinus); the synthetic organs must stay inside them on
# every scanner's grid (24 drawn patients measured, in this order: 101-279, 1069-2276, 59-132, 106-147,
# 232-455, 27-75, 63-132).
VOLUME_ML = {
    "Spleen": (60, 450),
    "Liver": (800, 2600),
    "Kidney_L": (40, 260),
    "Kidney_R": (40, 260),
    "Stomach": (100, 900),
    "Pancreas": (15, 130),
    "A_Aorta": (30, 220),
}


@pytest.fixture(scope="module")
def one_patient_per_scanner() -> list[SyntheticPatient]:
    return [
        synthesize_patient(np.random.default_rng([11, site]), scanner)
        for site, scanner in enumerate(SITE_SCANNERS)
    ]


@pytest.fixture(scope="module")
def organ_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("organs")
    assert (
        main(
            [
                "synth",
                "--out",
                str(out),
                "--sites",
                "3",
                "--patients",
                "1",
                "--seed",
                SEED,
                "--organs-at-risk",
            ]
        )
        == 0
    )
    return out


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_organ_labels_are_consistent_and_organs_do_not_overlap(
    one_patient_per_scanner: list[SyntheticPatient],
) -> None:
    for patient in one_patient_per_scanner:
        label = patient.label_map()
        assert label.shape == patient.geometry.shape and label.dtype == np.uint8
        masks = [patient.fields[spec.structure] < 0 for spec in ORGANS_AT_RISK]
        assert sum(m.astype(np.int8) for m in masks).max() == 1  # no voxel in two organs
        assert set(np.unique(label)) == set(range(len(TG263) + 1))
        voxel_ml = float(np.prod(patient.geometry.spacing)) / 1000.0
        for value, (organ, mask) in enumerate(zip(TG263, masks, strict=True), start=1):
            np.testing.assert_array_equal(label == value, mask)
            low, high = VOLUME_ML[organ]
            assert low <= mask.sum() * voxel_ml <= high, organ
        assert not (label.astype(bool) & (patient.fields["BODY"] >= 0)).any()  # organs lie in the body
        # A sub-list keeps its own order: value i + 1 is the i-th organ named.
        sub = patient.label_map(("Kidney_R", "Spleen"))
        np.testing.assert_array_equal(sub == 1, masks[3])
        np.testing.assert_array_equal(sub == 2, masks[0])
    with pytest.raises(ValueError, match="models no Heart"):
        organ_label_map(one_patient_per_scanner[0].fields, ("Heart",))


def test_each_site_names_organs_its_own_way() -> None:
    tg, local, polish = (convention_for_site(i) for i in range(3))
    assert [tg.roi_name(o) for o in TG263] == list(TG263)
    assert local.roi_name("Spleen") == "SPLEEN_P" and local.roi_name("Kidney_L") == "L KIDNEY"
    assert polish.roi_name("Spleen") == "Śledziona" and polish.roi_name("Stomach") == "Żołądek"
    assert polish.character_set == "ISO_IR 192"
    assert convention_for_site(3) is tg
    for convention in SITE_CONVENTIONS:
        assert set(convention.roi_names) == {"External", *TG263}
        assert len(set(convention.roi_names.values())) == len(convention.roi_names)


def test_partial_delineation_is_deterministic_and_spares_the_spleen() -> None:
    for seed in range(4):
        per_site = {site: [contoured_organs(seed, site, p) for p in range(1, 21)] for site in (1, 2, 3)}
        for site, drawn in per_site.items():
            assert all(drawn), "every patient has at least one organ drawn"
            missing_spleen = sum("Spleen" not in organs for organs in drawn)
            assert missing_spleen <= len(drawn) // 10, (seed, site)
            # The Polish site draws both kidneys or neither.
            if site == 3:
                assert all(("Kidney_L" in o) == ("Kidney_R" in o) for o in drawn)
        everything = [o for drawn in per_site.values() for o in drawn]
        assert any(len(o) < len(TG263) for o in everything), "some patients lack some organs"
        assert contoured_organs(seed, 2, 5) == contoured_organs(seed, 2, 5)
    rois = patient_rois(0, 3, 4)
    assert {r.structure for r in rois} == {"BODY"} | {
        s.structure for s in ORGANS_AT_RISK if s.tg263 in contoured_organs(0, 3, 4)
    }


def test_organs_at_risk_leave_the_ct_unchanged(organ_federation: Path, tmp_path: Path) -> None:
    synthesize_federation(tmp_path / "spleen", (1, 1, 1), seed=int(SEED), workers=2)
    plain, organs = _digests(tmp_path / "spleen"), _digests(organ_federation)
    assert plain.keys() == organs.keys()
    differing = {name for name in plain if plain[name] != organs[name]}
    rtstructs = {
        str(p.relative_to(organ_federation)) for s in organ_federation.iterdir() for p in _rtstructs(s)
    }
    assert len(rtstructs) == 3 and differing == rtstructs  # only the structure sets differ


def _rtstructs(site: Path) -> list[Path]:
    return [Path(ds.filename) for _, ds in discover_dicom(site).structure_sets]


def test_structure_sets_follow_each_sites_convention(organ_federation: Path) -> None:
    for index, site in enumerate(sorted(organ_federation.iterdir())):
        convention = convention_for_site(index)
        for path in _rtstructs(site):
            ds = dcmread(path)
            names = [roi.ROIName for roi in ds.StructureSetROISequence]
            local_to_tg263 = convention.roi_names_json()
            assert set(names) <= set(local_to_tg263) and local_to_tg263[names[0]]
            assert convention.roi_name("External") in names
            types = {
                roi.ReferencedROINumber: roi.RTROIInterpretedType for roi in ds.RTROIObservationsSequence
            }
            by_number = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
            assert {by_number[n] for n, t in types.items() if t == "EXTERNAL"} == {
                convention.roi_name("External")
            }
            if convention.character_set:
                assert ds.SpecificCharacterSet == convention.character_set
                raw = path.read_bytes()
                assert "Obrys ciała".encode() in raw  # UTF-8 bytes, as declared


def test_every_sites_names_resolve_to_tg263_with_its_mapping_file(organ_federation: Path) -> None:
    for index, site in enumerate(sorted(organ_federation.iterdir())):
        convention = convention_for_site(index)
        for path in _rtstructs(site):
            names = [roi.ROIName for roi in dcmread(path).StructureSetROISequence]
            by_table = resolve_roi_names(names, TG263)
            with_file = resolve_roi_names(names, TG263, convention.roi_names_json())
            assert with_file.unmapped == () and with_file.error is None
            assert {o for o, m in with_file.rois.items()} == {
                o for o in TG263 if convention.roi_name(o) in names
            }
            # Only site 2's "PANC" needs the site's file; the table never guesses it.
            assert ("PANC" in names) == (index == 1)
            assert [u.local for u in by_table.unmapped] == (["PANC"] if "PANC" in names else [])
            assert all(u.suggestions[0] == "Pancreas" for u in by_table.unmapped)


@pytest.mark.parametrize("site", [1, 2, 3])
def test_organ_contours_round_trip_to_the_ground_truth(
    tmp_path: Path, site: int, one_patient_per_scanner: list[SyntheticPatient]
) -> None:
    scanner, patient = SITE_SCANNERS[site - 1], one_patient_per_scanner[site - 1]
    convention = convention_for_site(site - 1)
    rois = patient_rois(0, site, 1)
    identity = patient_identity(11, site, 1, scanner, np.random.default_rng(site))
    written = write_study(
        patient,
        identity,
        scanner,
        tmp_path,
        ["organs", str(site)],
        "P001",
        rois=rois,
        character_set=convention.character_set,
    )
    structure_set = read_structure_set(dcmread(written.rtstruct_file))
    claimed = np.zeros(patient.geometry.shape, dtype=np.int8)
    for roi in rois:
        mask, off_slice = rasterise_contours(structure_set.rois[roi.name].contours, patient.geometry)
        assert off_slice == 0
        assert dice(mask, patient.fields[roi.structure] < 0) >= 0.99, roi.name
        if roi.interpreted_type == "ORGAN":
            claimed += mask
    assert claimed.max() <= 1  # rasterised organs do not overlap either
