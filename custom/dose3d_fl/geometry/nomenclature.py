"""Structure names -> AAPM TG-263 standard names (Mayo et al. 2018, Int J Radiat Oncol Biol Phys 100:1057).

Only the names this project meets are listed: the abdominal and thoracic organs at risk of the synthetic
sites and of common planning templates, with the local spellings seen in exports (``BODY``, ``Kidney Left``,
``IVC``...). A name not found keeps its own spelling and is marked as not standard in the label table, so a
person sees which structures still need a TG-263 name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# TG-263 primary names.
TG263_NAMES = (
    "External",
    "Skin",
    "Liver",
    "Spleen",
    "Stomach",
    "Pancreas",
    "Duodenum",
    "Gallbladder",
    "Bowel",
    "Bowel_Small",
    "Bowel_Large",
    "Colon_Sigmoid",
    "Esophagus",
    "Kidney_L",
    "Kidney_R",
    "Kidneys",
    "Lung_L",
    "Lung_R",
    "Lungs",
    "Heart",
    "A_Aorta",
    "V_Venacava_I",
    "V_Venacava_S",
    "SpinalCord",
    "SpinalCanal",
    "Bone",
    "Bladder",
    "Rectum",
    "Prostate",
    "Femur_Head_L",
    "Femur_Head_R",
    "Brain",
    "Brainstem",
    "Parotid_L",
    "Parotid_R",
    "Trachea",
    "Diaphragm",
    "Adrenal_L",
    "Adrenal_R",
)
# Local spellings (normalised: lower case, words joined by "_") -> TG-263 name.
_SYNONYMS = {
    "body": "External",
    "outline": "External",
    "external_contour": "External",
    "patient": "External",
    "lung_left": "Lung_L",
    "left_lung": "Lung_L",
    "lung_right": "Lung_R",
    "right_lung": "Lung_R",
    "kidney_left": "Kidney_L",
    "left_kidney": "Kidney_L",
    "kidney_right": "Kidney_R",
    "right_kidney": "Kidney_R",
    "aorta": "A_Aorta",
    "ivc": "V_Venacava_I",
    "inferior_vena_cava": "V_Venacava_I",
    "vena_cava_inferior": "V_Venacava_I",
    "svc": "V_Venacava_S",
    "superior_vena_cava": "V_Venacava_S",
    "spinal_cord": "SpinalCord",
    "cord": "SpinalCord",
    "spinal_canal": "SpinalCanal",
    "oesophagus": "Esophagus",
    "gall_bladder": "Gallbladder",
    "small_bowel": "Bowel_Small",
    "small_intestine": "Bowel_Small",
    "large_bowel": "Bowel_Large",
    "colon": "Bowel_Large",
    "urinary_bladder": "Bladder",
    "brain_stem": "Brainstem",
    "femoral_head_l": "Femur_Head_L",
    "femoral_head_r": "Femur_Head_R",
    "adrenal_gland_l": "Adrenal_L",
    "adrenal_gland_r": "Adrenal_R",
}
_BY_NORMALISED = {name.casefold(): name for name in TG263_NAMES}


@dataclass(frozen=True)
class StructureName:
    """A structure's name in the outputs.

    Args:
        name: the TG-263 name, or the source name when none is known.
        source: the name in the structure set or given for the label value.
        standard: whether ``name`` is a TG-263 name.
    """

    name: str
    source: str
    standard: bool

    @property
    def file_stem(self) -> str:
        """``name`` with anything but letters, digits, ``_`` and ``-`` replaced, for mesh file names."""
        return re.sub(r"[^A-Za-z0-9_-]+", "_", self.name).strip("_") or "structure"


def tg263_name(source: str) -> StructureName:
    """The TG-263 name of a structure name, matching case-insensitively and across spaces/hyphens."""
    normalised = re.sub(r"[\s\-]+", "_", source.strip()).casefold()
    standard = _BY_NORMALISED.get(normalised) or _SYNONYMS.get(normalised)
    if standard is None:
        return StructureName(name=source.strip(), source=source, standard=False)
    return StructureName(name=standard, source=source, standard=True)
