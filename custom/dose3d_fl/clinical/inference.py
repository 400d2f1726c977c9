"""Run a segmentation model on one CT volume and map the prediction back to the CT's own grid.

The CT is written to a temporary NIfTI exactly as ``dose3d ingest`` writes training images, so the
profile's own MONAI preprocessing (RAS, resampling, body crop, HU window, padding) runs unchanged; MONAI's
``Invertd`` then undoes the spatial steps on the organs' probabilities, which are compared on the original
grid (smoother than resampling a label). A model with several organs gives one mask per organ (class 1, 2,
... of the network, in the order of its task's organs).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from dose3d_fl.clinical.model_file import ModelFileError, SegmentationModel
from dose3d_fl.clinical.postprocess import clean_organ_mask
from dose3d_fl.data.cases import IMAGE
from dose3d_fl.data.ct_series import CTVolume
from dose3d_fl.data.discovery import one_line
from dose3d_fl.data.nifti import save_nifti
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.transforms import eval_transforms

log = logging.getLogger(__name__)

PREDICTION = "prediction"


class DeviceUnavailableError(Exception):
    """The device asked for does not exist on this machine; the message is the one-line reason."""


@dataclass
class Prediction:
    """The predicted organs on the CT grid.

    Attributes:
        masks: per organ (network class 1, 2, ...), a boolean ``(columns, rows, slices)`` mask after
            post-processing.
        raw_voxels: per organ, its voxels before post-processing.
        seconds: wall time per stage (``preprocess``, ``network``, ``invert``, ``postprocess``).
    """

    masks: list[np.ndarray]
    raw_voxels: list[int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """The first organ's mask (the one organ of a one-organ model)."""
        return self.masks[0]


def load_predictor(model: SegmentationModel, device: str | None = None) -> SegTrainer:
    """The profile's network with the model's weights, ready for ``predict`` (the trainer's inference).

    Raises:
        ModelFileError: the weights do not fit the profile's network.
        DeviceUnavailableError: a CUDA device is asked for on a machine without one.
    """
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"--device {device}: this machine has no CUDA device (or torch was built without CUDA)"
        )
    predictor = SegTrainer([], [], model.profile, device=device, show_progress=False)
    try:
        predictor.set_weights(model.weights)
    except (RuntimeError, KeyError) as err:
        raise ModelFileError(
            f"{model.path}: its weights do not fit the network of profile {model.profile.name!r} "
            f"({one_line(err, 160)}); pass the profile it was trained with (--profile)"
        ) from err
    return predictor


def predict_organ(predictor: SegTrainer, volume: CTVolume, threshold: float = 0.0) -> Prediction:
    """Segment every organ class of the model on a CT volume and return them on the volume's own grid.

    Args:
        predictor: from :func:`load_predictor`.
        volume: the validated CT.
        threshold: least probability of an organ on the original grid. A voxel is given to the organ of
            highest probability when that is at least the background's (for one organ: at least 0.5) and
            at least ``threshold``.

    Returns:
        The cleaned masks (largest connected component, slice holes filled) and timings.
    """
    start = time.perf_counter()
    hu = np.rint(volume.hu).astype(np.int16) if volume.integer_hu else volume.hu
    with tempfile.TemporaryDirectory(prefix="dose3d-segment-") as tmp:
        path = save_nifti(hu, volume.geometry.affine_ras, Path(tmp) / "ct.nii")
        written = time.perf_counter() - start
        prediction = predict_organ_nifti(predictor, path, threshold)
    prediction.seconds["preprocess"] += written
    return prediction


def predict_organ_nifti(predictor: SegTrainer, image_path: Path, threshold: float = 0.0) -> Prediction:
    """:func:`predict_organ` on a CT already stored as NIfTI (HU), e.g. a case of a site cache.

    Returns:
        The cleaned masks on the NIfTI's voxel grid, and timings.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    preprocess = eval_transforms(predictor.profile, with_label=False)
    data = preprocess({IMAGE: str(image_path)})
    image = data[IMAGE]
    image = image if isinstance(image, MetaTensor) else MetaTensor(image)
    seconds["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    logits = predictor.predict(image.unsqueeze(0))[0].float().cpu()
    probability = torch.softmax(logits, dim=0)[1:]  # the organs; background is what they leave
    seconds["network"] = time.perf_counter() - start

    start = time.perf_counter()
    prediction = MetaTensor(probability, meta=image.meta, applied_operations=image.applied_operations)
    invert = Invertd(keys=PREDICTION, transform=preprocess, orig_keys=IMAGE, nearest_interp=False)
    restored = invert({PREDICTION: prediction, IMAGE: image})[PREDICTION]
    organs = np.asarray(restored.detach().cpu().numpy())
    expected = tuple(nib.load(image_path).shape[:3])
    if organs.shape[1:] != expected:
        raise RuntimeError(f"inverted prediction has shape {organs.shape[1:]}, the CT {expected}")
    best, top = organs.argmax(axis=0), organs.max(axis=0)
    # Outside the body crop every organ's probability is 0 after inversion: background there.
    assigned = (top >= 1.0 - organs.sum(axis=0)) & (top >= threshold)
    foreground = [assigned & (best == c) for c in range(organs.shape[0])]
    seconds["invert"] = time.perf_counter() - start

    start = time.perf_counter()
    masks = [clean_organ_mask(organ) for organ in foreground]
    seconds["postprocess"] = time.perf_counter() - start
    log.info(
        "%s: %s voxels (%s before post-processing) in %s",
        image_path.name,
        [int(m.sum()) for m in masks],
        [int(f.sum()) for f in foreground],
        {k: round(v, 2) for k, v in seconds.items()},
    )
    return Prediction(masks=masks, raw_voxels=[int(f.sum()) for f in foreground], seconds=seconds)
