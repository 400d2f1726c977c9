"""Find DICOM CT series and RT Structure Sets anywhere under a folder, whatever the layout and file names."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from tqdm import tqdm

from dose3d_fl.data.rtstruct import RT_STRUCTURE_SET_STORAGE

logger = logging.getLogger(__name__)


@dataclass
class SeriesFiles:
    """The files of one image series (one SeriesInstanceUID), with their headers (no pixel data).

    ``broken`` lists files that name this series but hold no image (e.g. truncated inside the header):
    the series is incomplete and must not be used.
    """

    series_instance_uid: str
    modality: str
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)

    def folders(self, root: Path) -> str:
        """The folders holding the series, relative to ``root``, for messages."""
        paths = [*self.files, *(path for path, _ in self.broken)]
        names = sorted({_relative(path.parent, root) for path in paths})
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


@dataclass
class DicomInventory:
    """Everything found under an input folder.

    Attributes:
        image_series: image series by SeriesInstanceUID.
        structure_sets: RT Structure Set files with their full datasets.
        unreadable: ``(file, reason)`` for DICOM files that could not be parsed.
        non_dicom: number of files that are not DICOM (skipped).
        other_objects: number of DICOM objects that are neither images nor structure sets (DICOMDIR,
            RT plans and doses, reports...), ignored.
    """

    image_series: dict[str, SeriesFiles] = field(default_factory=dict)
    structure_sets: list[tuple[Path, Dataset]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    non_dicom: int = 0
    other_objects: int = 0

    def series_of_instances(self, sop_instance_uids: Iterable[str]) -> set[str]:
        """SeriesInstanceUIDs of the image series that contain any of the given instances."""
        wanted = set(sop_instance_uids)
        return {
            uid
            for uid, series in self.image_series.items()
            if any(str(h.get("SOPInstanceUID", "")) in wanted for h in series.headers)
        }


def discover_dicom(root: Path, show_progress: bool = False) -> DicomInventory:
    """Read the header of every file under ``root`` and group DICOM images by series.

    Files without the DICOM preamble are retried as raw datasets and kept only if they carry a
    SOPClassUID; anything else counts as non-DICOM. Sub-folders are walked in sorted order, so the
    result does not depend on the file system.

    Args:
        root: the site's export folder.
        show_progress: draw a progress bar on stderr when it is a terminal.

    Returns:
        The inventory of what was found.
    """
    inventory = DicomInventory()
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    for path in tqdm(
        paths, desc="reading DICOM headers", unit="file", disable=None if show_progress else True
    ):
        try:
            ds = _read_header(path)
        except InvalidDicomError:
            inventory.non_dicom += 1
            continue
        except Exception as err:  # pydicom raises many types on damaged files
            inventory.unreadable.append((path, f"unreadable DICOM file ({one_line(err)})"))
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class == RT_STRUCTURE_SET_STORAGE or ds.get("Modality") == "RTSTRUCT":
            inventory.structure_sets.append((path, ds))
            continue
        is_image = "PixelData" in ds or "Rows" in ds
        if not is_image and not _is_image_storage(sop_class):
            inventory.other_objects += 1
            continue
        series_uid = str(ds.get("SeriesInstanceUID", ""))
        if not series_uid:
            inventory.unreadable.append((path, "image without SeriesInstanceUID"))
            continue
        series = inventory.image_series.setdefault(
            series_uid, SeriesFiles(series_uid, str(ds.get("Modality", "unknown")))
        )
        if is_image:
            series.files.append(path)
            series.headers.append(ds)
        else:
            series.broken.append((path, "image object without pixel data (truncated or header-only file)"))
    logger.info(
        "%s: %d image series, %d structure sets, %d non-DICOM files, %d unreadable",
        root,
        len(inventory.image_series),
        len(inventory.structure_sets),
        inventory.non_dicom,
        len(inventory.unreadable),
    )
    return inventory


def _is_image_storage(sop_class_uid: str) -> bool:
    """Whether a SOP class stores images (CT, MR, PET, ...), by its registered name."""
    name = UID(sop_class_uid).name if sop_class_uid else ""
    return "Image Storage" in name


def _read_header(path: Path) -> Dataset:
    """Read a DICOM file without pixel data; raise InvalidDicomError for anything that is not DICOM."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Some exports omit the 128-byte preamble; force-reading any other file "succeeds" with
        # garbage, so accept it only if it parses and names a SOP class.
        try:
            ds = dcmread(path, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in ds:
                raise InvalidDicomError(f"{path} is not DICOM") from None
        except InvalidDicomError:
            raise
        except Exception:
            raise InvalidDicomError(f"{path} is not DICOM") from None
    return ds


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as a single short line for a rejection reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
