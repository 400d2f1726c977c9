"""Clinical use of a trained model: segment a new patient's CT into an RTSTRUCT for treatment planning.

Plain MONAI/pydicom: nothing here imports NVFlare. The names below are imported on first use
(``dose3d_fl._lazy``).
"""

from dose3d_fl._lazy import lazy_exports

# Imported on first use: the server's persistor imports ``provenance`` alone, without torch's inference stack,
# matplotlib or highdicom.
__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "inference": [
            "DeviceUnavailableError",
            "Prediction",
            "load_predictor",
            "predict_organ",
            "predict_organ_nifti",
        ],
        "model_file": ["ModelFileError", "SegmentationModel", "load_segmentation_model"],
        "models": ["ModelChoiceError", "ModelRecord", "list_models", "model_record", "read_model_record"],
        "overlay": ["Outline", "save_orthogonal_views"],
        "postprocess": ["clean_organ_mask", "fill_slice_holes", "largest_component"],
        "provenance": ["task_of", "weights_sha256"],
        "segment": ["SegmentConfig", "SegmentResult", "segment_ct"],
        "seg_export": ["build_segmentation"],
        "structure_export": [
            "NoOrganFoundError",
            "PredictedOrgan",
            "build_predicted_structure_set",
            "mask_contours",
        ],
    },
)
