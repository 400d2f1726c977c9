"""Local ROI names -> AAPM TG-263 standard names, exactly or not at all.

Hospitals name the same organ differently ("Spleen", "SPLEEN_P", "Śledziona", "Milz"); a federation trains
on TG-263 names (Mayo et al. 2018, Int J Radiat Oncol Biol Phys 100:1057), so each site maps its own names
before anything is learnt. Two sources map a name, and nothing else does:

1. **The site's mapping file**, ``roi_names.json`` in the site's local folder next to ``dose3d_site.json``
   (``<site workspace>/local/roi_names.json``). It belongs to the site's physicist, who knows what the local
   names mean::

       {
         "Sledz": "Spleen",
         "PANC": "Pancreas",
         "Nerki": "Kidneys",
         "PTV_boost_old": null
       }

   Keys are the names as the planning system exports them; values are TG-263 names of :data:`TG263_ALIASES`
   or ``null`` for an ROI that is known and deliberately not used (it is then neither mapped nor reported).
   Keys match the way aliases do (below). A target the table does not know is refused with the closest
   TG-263 name, and so are two keys that normalise alike but map differently.
2. **The built-in alias table** :data:`TG263_ALIASES`: common English, upper-case local, German and Polish
   spellings, with left/right as prefixes or suffixes. A name matches an alias only when both are equal after
   :func:`normalise_roi_name` (case, diacritics and separators ignored: "L KIDNEY", "Kidney-L", "kidney_l"
   and "Nerka lewa" / "Nerka Lewa" all match exactly).

The site file wins over the table. A name neither source maps is *unmapped*: :func:`resolve_roi_names`
reports it with suggestions (``difflib`` over the normalised names, never applied), so ``dose3d ingest`` can
say "unmapped ROI 'Sledz': did you mean Spleen? ...". Target volumes (PTV, CTV, GTV, ITV) and TG-263's
non-evaluated helper structures (names starting with ``z`` and a capital, digit or ``_``, or with ``_``) are
recognised as not organs and listed apart. Two ROIs of one structure set that map to the same task organ are
a conflict: the organ is left unlabelled and :attr:`Resolution.error` says which ROIs collide.

Pure Python: no DICOM, no torch.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "ROI_NAMES_FILE",
    "TG263_ALIASES",
    "Resolution",
    "RoiConflict",
    "RoiMappingError",
    "RoiMatch",
    "SiteRoiMapping",
    "UnmappedRoi",
    "check_organs",
    "find_site_mapping",
    "load_site_mapping",
    "normalise_roi_name",
    "resolve_roi_names",
    "standard_name",
    "suggest_tg263",
    "tg263_names",
]

log = logging.getLogger(__name__)

ROI_NAMES_FILE = "roi_names.json"
_MAX_TG263_LENGTH = 16  # TG-263's limit, which some planning systems impose

# Letters NFKD does not decompose into a base letter plus a combining mark.
_LETTERS = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "æ": "ae", "Æ": "AE"})
_SEPARATORS = re.compile(r"[\s\-_.,()\[\]]+")
_TARGET_VOLUME = re.compile(r"^(ptv|ctv|gtv|itv)(_|\d|$)")
_HELPER = re.compile(r"^(z[A-Z0-9_]|_)")

# Sides of paired organs in each language, as prefixes or suffixes of the organ word.
_SIDES_EN = {"L": ("l", "left", "lt"), "R": ("r", "right", "rt")}

# TG-263 name -> aliases as people write them (each TG-263 name is an alias of itself). Paired organs get
# their English side variants from ``_PAIRED_EN`` below; German and Polish forms are written out.
_ALIASES: dict[str, tuple[str, ...]] = {
    "External": (
        "Body",
        "Outline",
        "External contour",
        "Patient",
        "Ext",
        "Körper",
        "Körperkontur",
        "Außenkontur",
        "Ciało",
        "Obrys ciała",
        "Zewnętrzny",
    ),
    "Skin": ("Haut", "Skóra"),
    "Liver": ("Hepar", "Leber", "Wątroba"),
    "Spleen": ("SPLEEN_P", "Lien", "Milz", "Śledziona"),
    "Stomach": ("Gaster", "Magen", "Żołądek"),
    "Pancreas": ("Pankreas", "Bauchspeicheldrüse", "Trzustka"),
    "Duodenum": ("Zwölffingerdarm", "Dwunastnica"),
    "Gallbladder": ("Gall bladder", "Gallenblase", "Pęcherzyk żółciowy"),
    "Bowel": ("Bowel bag", "Darm", "Jelita"),
    "Bowel_Small": ("Small bowel", "Small intestine", "Dünndarm", "Jelito cienkie"),
    "Bowel_Large": ("Large bowel", "Colon", "Dickdarm", "Jelito grube"),
    "Colon_Sigmoid": ("Sigmoid", "Sigmoid colon", "Sigma", "Esica"),
    "Esophagus": ("Oesophagus", "Speiseröhre", "Ösophagus", "Przełyk"),
    "Kidney_L": ("Niere links", "Niere li", "Linke Niere", "Nerka lewa", "Lewa nerka", "Nerka L"),
    "Kidney_R": ("Niere rechts", "Niere re", "Rechte Niere", "Nerka prawa", "Prawa nerka", "Nerka P"),
    "Kidneys": ("Both kidneys", "Kidneys both", "Nieren", "Nerki"),
    "Lung_L": ("Lunge links", "Linke Lunge", "Płuco lewe", "Lewe płuco"),
    "Lung_R": ("Lunge rechts", "Rechte Lunge", "Płuco prawe", "Prawe płuco"),
    "Lungs": ("Lungs total", "Both lungs", "Lungen", "Płuca"),
    "Heart": ("Herz", "Serce"),
    "A_Aorta": ("Aorta", "Aorta abdominalis", "Aorta brzuszna"),
    "V_Venacava_I": ("IVC", "Inferior vena cava", "Vena cava inferior", "VCI", "Żyła główna dolna"),
    "V_Venacava_S": ("SVC", "Superior vena cava", "Vena cava superior", "VCS", "Żyła główna górna"),
    "SpinalCord": ("Spinal cord", "Cord", "Myelon", "Rückenmark", "Rdzeń kręgowy", "Rdzeń"),
    "SpinalCanal": ("Spinal canal", "Spinalkanal", "Kanał kręgowy"),
    "Bone": ("Knochen", "Kość", "Kości"),
    "Bladder": ("Urinary bladder", "Harnblase", "Blase", "Pęcherz moczowy", "Pęcherz"),
    "Rectum": ("Rektum", "Odbytnica"),
    "Prostate": ("Prostata", "Gruczoł krokowy"),
    "Femur_Head_L": ("Hüftkopf links", "Femurkopf links", "Głowa kości udowej lewa"),
    "Femur_Head_R": ("Hüftkopf rechts", "Femurkopf rechts", "Głowa kości udowej prawa"),
    "Brain": ("Gehirn", "Mózg", "Mózgowie"),
    "Brainstem": ("Brain stem", "Hirnstamm", "Pień mózgu"),
    "Parotid_L": ("Parotis links", "Ślinianka przyuszna lewa"),
    "Parotid_R": ("Parotis rechts", "Ślinianka przyuszna prawa"),
    "Trachea": ("Luftröhre", "Tchawica"),
    "Diaphragm": ("Zwerchfell", "Przepona"),
    "Adrenal_L": ("Nebenniere links", "Nadnercze lewe"),
    "Adrenal_R": ("Nebenniere rechts", "Nadnercze prawe"),
}
# TG-263 stem of a paired organ -> its English words; "Kidney_L" gets "L Kidney", "Kidney Left", ...
_PAIRED_EN: dict[str, tuple[str, ...]] = {
    "Kidney": ("Kidney",),
    "Lung": ("Lung",),
    "Femur_Head": ("Femoral head", "Femur head", "Head of femur"),
    "Parotid": ("Parotid", "Parotid gland"),
    "Adrenal": ("Adrenal", "Adrenal gland"),
}


def normalise_roi_name(name: str) -> str:
    """The form names are compared in: no diacritics, case-folded, separators as one ``_``.

    ``"Śledziona"`` -> ``"sledziona"``, ``" L. Kidney "`` -> ``"l_kidney"``, ``"Kidney (L)"`` ->
    ``"kidney_l"``, ``"Żołądek"`` -> ``"zoladek"``, ``"Außenkontur"`` -> ``"aussenkontur"``.
    """
    text = unicodedata.normalize("NFKD", name.translate(_LETTERS))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return _SEPARATORS.sub("_", text).strip("_")


def _build_table() -> dict[str, tuple[str, ...]]:
    table = {name: (name, *aliases) for name, aliases in _ALIASES.items()}
    for stem, words in _PAIRED_EN.items():
        for side, side_words in _SIDES_EN.items():
            variants = [f"{w} {s}" for w in words for s in side_words]
            variants += [f"{s} {w}" for w in words for s in side_words]
            table[f"{stem}_{side}"] += tuple(variants)
    return table


TG263_ALIASES: dict[str, tuple[str, ...]] = _build_table()
"""TG-263 name -> the spellings that map to it exactly (after :func:`normalise_roi_name`)."""


def _index(table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for name, aliases in table.items():
        for alias in aliases:
            key = normalise_roi_name(alias)
            if index.setdefault(key, name) != name:
                raise ValueError(f"alias {alias!r} maps to both {index[key]} and {name}")
    return index


_BY_ALIAS = _index(TG263_ALIASES)
_BY_NAME = {normalise_roi_name(name): name for name in TG263_ALIASES}


def tg263_names() -> tuple[str, ...]:
    """Every TG-263 name this project knows (the keys of :data:`TG263_ALIASES`)."""
    return tuple(TG263_ALIASES)


def standard_name(name: str) -> str | None:
    """The TG-263 name of ``name`` by an exact alias-table hit, or None."""
    return _BY_ALIAS.get(normalise_roi_name(name))


def suggest_tg263(name: str, limit: int = 3) -> tuple[str, ...]:
    """TG-263 names that ``name`` resembles (difflib on normalised names and aliases), best first.

    Only a hint for a person: nothing maps a name through a suggestion.
    """
    key = normalise_roi_name(name)
    if not key:
        return ()
    scores: dict[str, float] = {}
    for alias, target in _BY_ALIAS.items():
        score = difflib.SequenceMatcher(None, key, alias).ratio()
        if len(key) >= 3 and alias.startswith(key):
            score = max(score, 0.75)  # an abbreviation ("panc")
        if score >= 0.6:
            scores[target] = max(scores.get(target, 0.0), score)
    if not scores:
        return ()
    # Only the names about as close as the best: a clear hit is not diluted by weaker ones.
    best = max(scores.values())
    ranked = sorted((t for t in scores if scores[t] >= best - 0.1), key=lambda t: (-scores[t], t))
    return tuple(ranked[:limit])


def _did_you_mean(name: str) -> str:
    found = suggest_tg263(name)
    return f"; did you mean {' or '.join(found)}?" if found else ""


def check_organs(organs: Sequence[str]) -> tuple[str, ...]:
    """A task's organ list, checked: TG-263 names of the table, each once.

    Raises:
        ValueError: an empty list, a name the table does not know (with the closest one), or a repeat.
    """
    if not organs:
        raise ValueError("the organ list is empty: name at least one TG-263 organ, e.g. Spleen")
    for organ in organs:
        if organ not in TG263_ALIASES:
            exact = _BY_ALIAS.get(normalise_roi_name(organ))
            hint = f"; the TG-263 name is {exact}" if exact else _did_you_mean(organ)
            raise ValueError(f"organ {organ!r} is not a TG-263 name this project knows{hint}")
    repeated = sorted({o for o in organs if list(organs).count(o) > 1})
    if repeated:
        raise ValueError(f"organ list names {', '.join(repeated)} more than once")
    return tuple(organs)


# -- the site's mapping file ---------------------------------------------------------------------------------


class RoiMappingError(ValueError):
    """A site's ``roi_names.json`` that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class SiteRoiMapping:
    """A site's own ROI names: local name (as written) -> TG-263 name, or None for "known, not used".

    Build with :meth:`from_dict` or :func:`load_site_mapping`, which validate it.
    """

    entries: Mapping[str, str | None] = field(default_factory=dict)
    source: str = ROI_NAMES_FILE

    @classmethod
    def from_dict(cls, data: object, source: str = ROI_NAMES_FILE) -> SiteRoiMapping:
        """Validate a parsed mapping.

        Raises:
            RoiMappingError: not an object, an empty name, a value that is not a known TG-263 name or null
                (with the closest name), or two names that normalise alike but map to different organs.
        """
        if not isinstance(data, dict):
            raise RoiMappingError(
                f'{source}: expected a JSON object {{"local ROI name": "TG-263 name"}}, '
                f"found {type(data).__name__}"
            )
        seen: dict[str, tuple[str, str | None]] = {}
        for local, target in data.items():
            if not isinstance(local, str) or not normalise_roi_name(local):
                raise RoiMappingError(f"{source}: an entry has an empty local ROI name")
            if target is not None and not isinstance(target, str):
                raise RoiMappingError(
                    f"{source}: {local!r} maps to {target!r}; give a TG-263 name as a string, or null to "
                    "ignore the ROI"
                )
            if target is not None and target not in TG263_ALIASES:
                exact = _BY_ALIAS.get(normalise_roi_name(target))
                hint = f"; the TG-263 name is {exact!r}" if exact else _did_you_mean(target)
                raise RoiMappingError(
                    f"{source}: {local!r} maps to {target!r}, which is not a TG-263 name this project "
                    f"knows{hint}"
                )
            key = normalise_roi_name(local)
            if key in seen and seen[key][1] != target:
                other, other_target = seen[key]
                raise RoiMappingError(
                    f"{source}: {other!r} -> {other_target} and {local!r} -> {target} are the same name "
                    "ignoring case, accents and separators; keep one"
                )
            seen[key] = (local, target)
        return cls(entries=dict(data), source=source)

    def lookup(self, local: str) -> tuple[bool, str | None]:
        """``(found, TG-263 name or None)`` for a local name, matched after normalisation."""
        key = normalise_roi_name(local)
        for name, target in self.entries.items():
            if normalise_roi_name(name) == key:
                return True, target
        return False, None


def _refuse_duplicate_keys(source: str):
    def hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            if key in out:
                raise RoiMappingError(f"{source}: {key!r} is listed twice; keep one entry")
            out[key] = value
        return out

    return hook


def load_site_mapping(path: str | Path) -> SiteRoiMapping:
    """Read and validate a site's ``roi_names.json``.

    Raises:
        RoiMappingError: the file cannot be read, is not JSON, lists a name twice, or fails
            :meth:`SiteRoiMapping.from_dict`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RoiMappingError(f"{path}: cannot be read ({err}); save it as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys(str(path)))
    except json.JSONDecodeError as err:
        raise RoiMappingError(
            f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg})"
        ) from None
    return SiteRoiMapping.from_dict(data, source=str(path))


def find_site_mapping(local_dir: str | Path) -> SiteRoiMapping:
    """The mapping in ``local_dir/roi_names.json`` (the folder of ``dose3d_site.json``); empty if absent."""
    path = Path(local_dir) / ROI_NAMES_FILE
    if not path.is_file():
        return SiteRoiMapping(source=str(path))
    return load_site_mapping(path)


# -- resolving one structure set -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoiMatch:
    """A local ROI and the TG-263 name it maps to, and through which source."""

    local: str
    organ: str
    via: Literal["site file", "alias table"]


@dataclass(frozen=True)
class UnmappedRoi:
    """A local ROI that neither the site file nor the alias table maps; ``suggestions`` are hints only."""

    local: str
    suggestions: tuple[str, ...]

    def message(self, mapping_file: str = ROI_NAMES_FILE) -> str:
        """One line for a person, e.g. ``unmapped ROI 'Sledz': did you mean Spleen? add ...``."""
        if self.suggestions:
            best = self.suggestions[0]
            return (
                f"unmapped ROI {self.local!r}: did you mean {' or '.join(self.suggestions)}? Add "
                f'"{self.local}": "{best}" to {mapping_file} (or null to ignore it)'
            )
        return (
            f"unmapped ROI {self.local!r}: no TG-263 name resembles it; map it in {mapping_file}, or to "
            "null to ignore it"
        )


@dataclass(frozen=True)
class RoiConflict:
    """Several ROIs of one structure set that map to the same organ."""

    organ: str
    rois: tuple[RoiMatch, ...]

    @property
    def reason(self) -> str:
        """One line naming the ROIs and how each was mapped."""
        listed = " and ".join(f"{m.local!r} (by the {m.via})" for m in self.rois)
        return (
            f"{listed} map to the same organ, {self.organ}; rename one in the planning system, or map the "
            f"one to leave out to null in {ROI_NAMES_FILE}"
        )


@dataclass(frozen=True)
class Resolution:
    """How one structure set's ROIs map to a task's organs.

    Args:
        organs: the task's organs (TG-263), in label order: organ ``i`` is label value ``i + 1``.
        rois: task organ -> the ROI that delineates it (organs in conflict are not here).
        missing: task organs no ROI maps to; the case has them unlabelled, not as background.
        conflicts: task organs that several ROIs map to (unlabelled until the site resolves it).
        other: ROIs mapped to TG-263 names outside the task.
        ignored: ROIs the site file maps to null.
        not_organs: target volumes (PTV, CTV, GTV, ITV) and TG-263 helper structures (``z...``, ``_...``).
        unmapped: ROIs nothing maps, with suggestions.
    """

    organs: tuple[str, ...]
    rois: dict[str, RoiMatch]
    missing: tuple[str, ...]
    conflicts: tuple[RoiConflict, ...]
    other: tuple[RoiMatch, ...]
    ignored: tuple[str, ...]
    not_organs: tuple[str, ...]
    unmapped: tuple[UnmappedRoi, ...]

    @property
    def labelled(self) -> tuple[bool, ...]:
        """Per task organ (in order): whether this structure set delineates it unambiguously."""
        return tuple(organ in self.rois for organ in self.organs)

    @property
    def error(self) -> str | None:
        """One line when ROIs conflict over a task organ (the structure set is ambiguous), else None."""
        if not self.conflicts:
            return None
        return "; ".join(conflict.reason for conflict in self.conflicts)


def resolve_roi_names(
    local_names: Iterable[str],
    organs: Sequence[str],
    site_mapping: SiteRoiMapping | Mapping[str, str | None] | None = None,
) -> Resolution:
    """Map a structure set's ROI names to a task's TG-263 organs, through the site file or an exact alias.

    Args:
        local_names: the ROI names of one structure set, as written (a name may appear twice).
        organs: the task's organs, TG-263 names (:func:`check_organs`).
        site_mapping: the site's ``roi_names.json`` (validated here when given as a plain mapping).

    Returns:
        The :class:`Resolution`; nothing is guessed: a name neither source maps is in ``unmapped``.

    Raises:
        ValueError: ``organs`` is not a valid organ list.
        RoiMappingError: ``site_mapping`` is a plain mapping that fails validation.
    """
    organs = check_organs(organs)
    if site_mapping is None:
        site_mapping = SiteRoiMapping()
    elif not isinstance(site_mapping, SiteRoiMapping):
        site_mapping = SiteRoiMapping.from_dict(dict(site_mapping))

    by_organ: dict[str, list[RoiMatch]] = {}
    ignored: list[str] = []
    not_organs: list[str] = []
    unmapped: list[UnmappedRoi] = []
    for local in local_names:
        found, target = site_mapping.lookup(local)
        if found and target is None:
            ignored.append(local)
            continue
        if found:
            by_organ.setdefault(target, []).append(RoiMatch(local, target, "site file"))
            continue
        target = standard_name(local)
        if target is not None:
            by_organ.setdefault(target, []).append(RoiMatch(local, target, "alias table"))
        elif _TARGET_VOLUME.match(normalise_roi_name(local)) or _HELPER.match(local.strip()):
            not_organs.append(local)
        else:
            unmapped.append(UnmappedRoi(local, suggest_tg263(local)))

    rois = {o: by_organ[o][0] for o in organs if len(by_organ.get(o, ())) == 1}
    conflicts = tuple(RoiConflict(o, tuple(by_organ[o])) for o in organs if len(by_organ.get(o, ())) > 1)
    other = tuple(m for target, matches in by_organ.items() if target not in organs for m in matches)
    for unknown in unmapped:
        log.debug("%s", unknown.message(site_mapping.source))
    return Resolution(
        organs=organs,
        rois=rois,
        missing=tuple(o for o in organs if o not in by_organ),
        conflicts=conflicts,
        other=other,
        ignored=tuple(ignored),
        not_organs=tuple(not_organs),
        unmapped=tuple(unmapped),
    )
