"""Clinical use of a trained model: segment a new patient's CT into an RTSTRUCT for treatment planning.

Plain MONAI/pydicom: nothing here imports NVFlare.
"""

from dose3d_fl.clinical.inference import (
    DeviceUnavailableError,
    Prediction,
    load_predictor,
    predict_organ,
    predict_organ_nifti,
)
from dose3d_fl.clinical.model_file import ModelFileError, SegmentationModel, load_segmentation_model
from dose3d_fl.clinical.overlay import Outline, save_orthogonal_views
from dose3d_fl.clinical.postprocess import clean_organ_mask, fill_slice_holes, largest_component
from dose3d_fl.clinical.segment import SegmentConfig, SegmentResult, segment_ct
from dose3d_fl.clinical.structure_export import build_predicted_structure_set, mask_contours
from dose3d_fl.data.ct_input import InputSeries, InputSeriesError, load_input_series

__all__ = [
    "DeviceUnavailableError",
    "InputSeries",
    "InputSeriesError",
    "ModelFileError",
    "Outline",
    "Prediction",
    "SegmentConfig",
    "SegmentResult",
    "SegmentationModel",
    "build_predicted_structure_set",
    "clean_organ_mask",
    "fill_slice_holes",
    "largest_component",
    "load_input_series",
    "load_predictor",
    "load_segmentation_model",
    "mask_contours",
    "predict_organ",
    "predict_organ_nifti",
    "save_orthogonal_views",
    "segment_ct",
]
