"""The predicted organs as a DICOM Segmentation (binary SEG, highdicom), beside the RTSTRUCT.

Planning systems import RTSTRUCT; a SEG keeps the voxel masks exactly (no contour approximation) for
viewers and archives that read it. It names the model as the RTSTRUCT does: Manufacturer ``dose3d-fl``,
ManufacturerModelName, DeviceSerialNumber (the weights' SHA-256), SoftwareVersions, SeriesDescription, and
each segment's algorithm identification.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dose3d_fl import __version__
from dose3d_fl.clinical.models import ModelRecord
from dose3d_fl.clinical.structure_export import NoOrganFoundError, PredictedOrgan, model_equipment
from dose3d_fl.data.ct_input import InputSeries
from dose3d_fl.data.rtstruct import declare_character_set

# SNOMED CT codes of the structures the project segments; anything else is coded as an organ.
PROPERTY_TYPES = {"SPLEEN": codes.SCT.Spleen, "LIVER": codes.SCT.Liver}


def build_segmentation(
    series: InputSeries, organs: Sequence[PredictedOrgan], model: ModelRecord
) -> hd.seg.Segmentation:
    """A binary DICOM SEG of the organs found, on the input series (one frame per CT slice holding an organ).

    Args:
        series: the segmented CT series; its files are read again for their pixel module.
        organs: the model's organs; those without a voxel are left out (a segment cannot be empty).
        model: the model that made them.

    Returns:
        The dataset, ready for ``save_as``.

    Raises:
        NoOrganFoundError: no organ has a voxel.
    """
    found = [organ for organ in organs if organ.mask.any()]
    if not found:
        raise NoOrganFoundError("the model found none of its organs; a DICOM SEG cannot be empty")
    sources = [dcmread(path) for path in series.volume.files]
    # (slices, rows, columns, segments): segment n is channel n - 1.
    frames = np.stack(
        [np.stack([o.mask[:, :, k].T for o in found], axis=-1) for k in range(found[0].mask.shape[2])]
    )
    algorithm = hd.AlgorithmIdentificationSequence(
        name="dose3d-fl",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={
            "model_sha256": model.sha256,
            "training": model.training(),
            "profile": model.profile or "",
        },
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=organ.name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=PROPERTY_TYPES.get(organ.name.strip().upper(), codes.SCT.Organ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, organ in enumerate(found, start=1)
    ]
    equipment = model_equipment(model)
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=1002,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=equipment.manufacturer,
        manufacturer_model_name=equipment.model_name,
        software_versions=equipment.software_versions,
        device_serial_number=equipment.device_serial_number,
        series_description=model.series_description(),
        content_description=f"dose3d-fl model {model.short_hash}"[:64],
        content_label="DOSE3D_AUTO",
        omit_empty_frames=True,
    )
    # highdicom copies the patient's names from the CT as decoded text: declare their character set, as the
    # RTSTRUCT does.
    declare_character_set(segmentation)
    return segmentation
