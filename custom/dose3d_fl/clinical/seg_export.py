"""The predicted organ as a DICOM Segmentation (binary SEG, highdicom), beside the RTSTRUCT.

Planning systems import RTSTRUCT; a SEG keeps the voxel mask exactly (no contour approximation) for
viewers and archives that read it.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dose3d_fl import __version__
from dose3d_fl.data.ct_input import InputSeries

# SNOMED CT codes of the structures the project segments; anything else is coded as an organ.
PROPERTY_TYPES = {"SPLEEN": codes.SCT.Spleen}


def build_segmentation(
    series: InputSeries, mask: np.ndarray, roi_name: str, model_name: str
) -> hd.seg.Segmentation:
    """A binary DICOM SEG of ``mask`` on the input series (one frame per CT slice that holds the organ).

    Args:
        series: the segmented CT series; its files are read again for their pixel module.
        mask: the organ on the series' grid ``(columns, rows, slices)``.
        roi_name: segment label.
        model_name: recorded as the manufacturer model (e.g. the profile name).

    Returns:
        The dataset, ready for ``save_as``.
    """
    sources = [dcmread(path) for path in series.volume.files]
    frames = np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(bool)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=roi_name,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=PROPERTY_TYPES.get(roi_name.strip().upper(), codes.SCT.Organ),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="dose3d-fl", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=1002,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="dose3d-fl",
        manufacturer_model_name=model_name,
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=True,
    )
