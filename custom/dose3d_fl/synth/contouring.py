"""How each synthetic site contours organs at risk: its ROI names and which organs a patient has drawn.

Used when a federation is synthesised with ``organs_at_risk=True`` (``dose3d synth --organs-at-risk``). Each
site names structures its own way, as hospitals do:

- site 1 (and 4, 7...) uses the TG-263 names themselves;
- site 2 writes an upper-case local style ("SPLEEN_P", "L KIDNEY", and "PANC", which no alias table knows:
  that site needs a ``roi_names.json``);
- site 3 writes Polish names with diacritics ("Śledziona", "Nerka lewa"), encoded as UTF-8 (ISO_IR 192).

Not every organ is drawn for every patient (:func:`contoured_organs`): each site has its own habits, drawn
per patient from a random stream of its own, so the same seed gives the same structure sets and the CT is
unchanged. The spleen, the single-organ task's target, is missing only for every tenth patient of one site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EXTERNAL",
    "ORGANS_AT_RISK",
    "SITE_CONVENTIONS",
    "SPLEEN_ROIS",
    "OrganSpec",
    "SiteConvention",
    "SynthRoi",
    "contoured_organs",
    "convention_for_site",
    "organ_label_map",
    "patient_rois",
]


@dataclass(frozen=True)
class SynthRoi:
    """One ROI to write: the phantom structure it outlines, its name, colour and RTROIInterpretedType."""

    structure: str
    name: str
    color: tuple[int, int, int]
    interpreted_type: str


# The single-organ federation's structure sets: the body and the spleen, named alike at every site.
SPLEEN_ROIS: tuple[SynthRoi, ...] = (
    SynthRoi("BODY", "BODY", (0, 255, 0), "EXTERNAL"),
    SynthRoi("SPLEEN", "SPLEEN", (255, 128, 0), "ORGAN"),
)


@dataclass(frozen=True)
class OrganSpec:
    """An organ the phantom models: its TG-263 name, its phantom structure and its display colour."""

    tg263: str
    structure: str
    color: tuple[int, int, int]


# The organs at risk of the synthetic abdomen, in label order (organ i is label value i + 1 in
# :func:`organ_label_map`). Pancreas and aorta are the small and the thin structure.
ORGANS_AT_RISK: tuple[OrganSpec, ...] = (
    OrganSpec("Spleen", "SPLEEN", (255, 128, 0)),
    OrganSpec("Liver", "LIVER", (160, 32, 240)),
    OrganSpec("Kidney_L", "KIDNEY_L", (0, 128, 255)),
    OrganSpec("Kidney_R", "KIDNEY_R", (0, 200, 200)),
    OrganSpec("Stomach", "STOMACH", (255, 220, 0)),
    OrganSpec("Pancreas", "PANCREAS", (255, 0, 128)),
    OrganSpec("A_Aorta", "AORTA", (220, 0, 0)),
)
# The body outline, written with RTROIInterpretedType EXTERNAL in every structure set.
EXTERNAL = OrganSpec("External", "BODY", (0, 255, 0))


@dataclass(frozen=True)
class SiteConvention:
    """One site's structure names and contouring habits.

    Args:
        style: a short description for documentation and logs.
        roi_names: TG-263 name -> the name this site writes (``External`` included).
        contoured: TG-263 name -> probability that a patient has the organ drawn (missing organs: 1.0).
        together: groups of organs drawn together or not at all (e.g. both kidneys), with the first one's
            probability.
        spleen_gap: the spleen is left out for one patient in this many (0: never).
        character_set: SpecificCharacterSet of the site's structure sets; None for plain ASCII.
    """

    style: str
    roi_names: dict[str, str]
    contoured: dict[str, float]
    together: tuple[tuple[str, ...], ...] = ()
    spleen_gap: int = 0
    character_set: str | None = None

    def roi_name(self, tg263: str) -> str:
        """The name this site writes for a TG-263 structure."""
        return self.roi_names[tg263]

    def roi_names_json(self) -> dict[str, str]:
        """The ``roi_names.json`` this site's physicist writes: each of its names -> TG-263."""
        return {local: tg263 for tg263, local in self.roi_names.items()}


SITE_CONVENTIONS: tuple[SiteConvention, ...] = (
    SiteConvention(
        style="TG-263",
        roi_names={spec.tg263: spec.tg263 for spec in (EXTERNAL, *ORGANS_AT_RISK)},
        contoured={"Stomach": 0.8, "Pancreas": 0.6},
    ),
    SiteConvention(
        style="upper-case local",
        roi_names={
            "External": "BODY",
            "Spleen": "SPLEEN_P",
            "Liver": "LIVER",
            "Kidney_L": "L KIDNEY",
            "Kidney_R": "R KIDNEY",
            "Stomach": "STOMACH",
            "Pancreas": "PANC",
            "A_Aorta": "AORTA",
        },
        contoured={
            "Liver": 0.85,
            "Kidney_L": 0.9,
            "Kidney_R": 0.9,
            "Stomach": 0.7,
            "Pancreas": 0.5,
            "A_Aorta": 0.3,
        },
        spleen_gap=10,
    ),
    SiteConvention(
        style="Polish, UTF-8",
        roi_names={
            "External": "Obrys ciała",
            "Spleen": "Śledziona",
            "Liver": "Wątroba",
            "Kidney_L": "Nerka lewa",
            "Kidney_R": "Nerka prawa",
            "Stomach": "Żołądek",
            "Pancreas": "Trzustka",
            "A_Aorta": "Aorta",
        },
        contoured={"Liver": 0.9, "Kidney_L": 0.8, "Stomach": 0.75, "Pancreas": 0.4, "A_Aorta": 0.7},
        together=(("Kidney_L", "Kidney_R"),),
        character_set="ISO_IR 192",
    ),
)


def convention_for_site(index: int) -> SiteConvention:
    """The convention of site ``index`` (0-based); sites beyond three reuse them in turn, like scanners."""
    return SITE_CONVENTIONS[index % len(SITE_CONVENTIONS)]


def _labelling_stream(seed: int, site: int, patient: int) -> np.random.Generator:
    # Apart from the stream that draws the patient, so the CT is the same with or without organs at risk.
    return np.random.default_rng([seed, site, patient, 263])


def contoured_organs(seed: int, site: int, patient: int) -> tuple[str, ...]:
    """The TG-263 organs drawn for a patient (``site``, ``patient`` 1-based), in :data:`ORGANS_AT_RISK` order.

    Deterministic for ``(seed, site, patient)``.
    """
    return _draw_organs(_labelling_stream(seed, site, patient), seed, site, patient)


def _draw_organs(rng: np.random.Generator, seed: int, site: int, patient: int) -> tuple[str, ...]:
    convention = convention_for_site(site - 1)
    draws = {spec.tg263: float(rng.random()) for spec in ORGANS_AT_RISK}
    drawn = {organ for organ, u in draws.items() if u < convention.contoured.get(organ, 1.0)}
    for first, *others in convention.together:
        drawn = drawn - set(others) | (set(others) if first in drawn else set())
    if convention.spleen_gap and (patient + seed) % convention.spleen_gap == 0 and len(drawn) > 1:
        drawn.discard("Spleen")  # never the only organ: every structure set delineates one
    return tuple(spec.tg263 for spec in ORGANS_AT_RISK if spec.tg263 in drawn)


def patient_rois(seed: int, site: int, patient: int) -> tuple[SynthRoi, ...]:
    """The ROIs of a patient's structure set with organs at risk: the body and the drawn organs, named the
    site's way, in an order that varies by patient (as ROIs are created in a planning system)."""
    convention = convention_for_site(site - 1)
    rng = _labelling_stream(seed, site, patient)
    drawn = set(_draw_organs(rng, seed, site, patient))
    specs = [EXTERNAL, *(spec for spec in ORGANS_AT_RISK if spec.tg263 in drawn)]
    rois = [
        SynthRoi(
            spec.structure,
            convention.roi_name(spec.tg263),
            spec.color,
            "EXTERNAL" if spec is EXTERNAL else "ORGAN",
        )
        for spec in specs
    ]
    return tuple(rois[i] for i in rng.permutation(len(rois)))


def organ_label_map(fields: dict[str, np.ndarray], organs: tuple[str, ...] | None = None) -> np.ndarray:
    """Ground-truth label map: organ ``i`` of ``organs`` (TG-263, default all) is value ``i + 1``, else 0.

    Args:
        fields: the phantom's structure fields (``< 0`` inside), keyed by structure name.
        organs: TG-263 names of :data:`ORGANS_AT_RISK`.

    Raises:
        ValueError: an organ the phantom does not model, or two organs claiming one voxel.
    """
    specs = {spec.tg263: spec for spec in ORGANS_AT_RISK}
    organs = organs if organs is not None else tuple(specs)
    unknown = [o for o in organs if o not in specs]
    if unknown:
        raise ValueError(f"the phantom models no {', '.join(unknown)}; organs: {', '.join(specs)}")
    label = np.zeros(next(iter(fields.values())).shape, dtype=np.uint8)
    for value, organ in enumerate(organs, start=1):
        inside = fields[specs[organ].structure] < 0
        if (label[inside] != 0).any():
            raise ValueError(f"{organ} overlaps another organ of the label map")
        label[inside] = value
    return label
