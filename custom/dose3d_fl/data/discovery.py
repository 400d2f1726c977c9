"""Find DICOM CT series and RT Structure Sets anywhere under a folder, whatever the layout and file names."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tqdm import tqdm

from dose3d_fl.data.rtstruct import RT_STRUCTURE_SET_STORAGE

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Objects that hold no patient volume (plans, doses, portal images, reports, presentation states,
# registrations, segmentations, documents, waveforms): counted by modality, otherwise ignored.
NON_IMAGE_MODALITIES = frozenset(
    {"RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "SR", "PR", "KO", "REG", "SEG", "DOC", "PLAN", "FID", "RWV"}
    | {"ECG", "HD", "AU", "RESP"}
)
# Attributes every composite DICOM object carries. pydicom's force=True "parses" any bytes, so a file
# without the "DICM" prefix counts as DICOM only when it holds some of them.
_DICOM_IDENTIFIERS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality")


class UnidentifiedDicomError(Exception):
    """A file parses as DICOM but cannot be used as one; the message is the one-line reason."""


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
        unreadable: ``(file, reason)`` for DICOM files that could not be parsed or identified.
        non_dicom: number of files that are not DICOM (skipped).
        ignored: DICOM objects that hold no image volume, by modality (``RTPLAN``, ``RTDOSE``, ``SR``...;
            ``DICOMDIR`` for media directories), counted and otherwise ignored.
        duplicates: files holding an instance (SOPInstanceUID) already found in another file, e.g. a
            study exported twice; the first file in path order is used.
        without_preamble: DICOM files without the 128-byte preamble and "DICM" prefix, read all the same.
    """

    image_series: dict[str, SeriesFiles] = field(default_factory=dict)
    structure_sets: list[tuple[Path, Dataset]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    non_dicom: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    without_preamble: int = 0

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

    Files without the DICOM preamble are read as raw datasets when they carry a SOPClassUID (and counted);
    one that parses as DICOM without a SOPClassUID is listed as unreadable with the reason, anything else
    counts as non-DICOM. An instance found in several files (a study exported twice) is kept once.
    Sub-folders are walked in sorted order, so the result does not depend on the file system.

    Args:
        root: the site's export folder.
        show_progress: draw a progress bar on stderr when it is a terminal.

    Returns:
        The inventory of what was found.
    """
    inventory = DicomInventory()
    seen: dict[str, tuple[Path, Dataset]] = {}
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    for path in tqdm(
        paths, desc="reading DICOM headers", unit="file", disable=None if show_progress else True
    ):
        try:
            ds, without_preamble = read_dicom(path, stop_before_pixels=True)
        except InvalidDicomError:
            inventory.non_dicom += 1
            continue
        except UnidentifiedDicomError as err:
            inventory.unreadable.append((path, str(err)))
            continue
        except Exception as err:  # pydicom raises many types on damaged files
            inventory.unreadable.append((path, f"unreadable DICOM file ({one_line(err)})"))
            continue
        inventory.without_preamble += without_preamble
        if _is_duplicate(path, ds, seen, inventory):
            continue
        _file_object(path, ds, inventory)
    logger.info(
        "%s: %d image series, %d structure sets, %d non-DICOM files, %d unreadable, %d duplicate files, "
        "%d files without preamble, ignored %s",
        root,
        len(inventory.image_series),
        len(inventory.structure_sets),
        inventory.non_dicom,
        len(inventory.unreadable),
        inventory.duplicates,
        inventory.without_preamble,
        dict(inventory.ignored),
    )
    return inventory


def _file_object(path: Path, ds: Dataset, inventory: DicomInventory) -> None:
    """Put one DICOM object where it belongs in the inventory."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == RT_STRUCTURE_SET_STORAGE or ds.get("Modality") == "RTSTRUCT":
        inventory.structure_sets.append((path, ds))
        return
    kind = non_image_kind(ds)
    if kind is not None:
        inventory.ignored[kind] += 1
        return
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    if not series_uid:
        inventory.unreadable.append((path, "image without SeriesInstanceUID"))
        return
    series = inventory.image_series.setdefault(
        series_uid, SeriesFiles(series_uid, str(ds.get("Modality", "unknown")))
    )
    if "Rows" in ds:
        series.files.append(path)
        series.headers.append(ds)
    else:
        series.broken.append((path, "image object without pixel data (truncated or header-only file)"))


def non_image_kind(ds: Dataset) -> str | None:
    """The modality of a DICOM object that holds no image volume (RT plan or dose, report...), else None.

    RT Dose and RT Image objects carry pixel data but are not patient volumes: they are recognised by
    modality first, then by a registered SOP class that does not store images.
    """
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        return modality
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if sop_class and sop_class.name != str(sop_class):  # a registered SOP class
        return None if "Image Storage" in sop_class.name else modality or sop_class.name
    if "Rows" in ds:
        return None  # an image of a private SOP class, or one without SOPClassUID: its series is checked
    media_class = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    if media_class == MEDIA_STORAGE_DIRECTORY:
        return "DICOMDIR"
    return modality or ("private SOP class" if sop_class else "no SOP class")


def _is_duplicate(
    path: Path, ds: Dataset, seen: dict[str, tuple[Path, Dataset]], inventory: DicomInventory
) -> bool:
    """Whether ``ds`` is an instance already found in another file (counted), recording it otherwise.

    Two image files with one SOPInstanceUID but different positions are not copies of one instance: the
    later file is listed as broken in its series, so the series is refused with the reason.
    """
    uid = str(ds.get("SOPInstanceUID", ""))
    if not uid:
        return False
    if uid not in seen:
        seen[uid] = (path, ds)
        return False
    first_path, first = seen[uid]
    same = all(
        str(first.get(keyword, "")) == str(ds.get(keyword, ""))
        for keyword in ("SOPClassUID", "SeriesInstanceUID", "ImagePositionPatient", "Rows", "Columns")
    )
    if same:
        inventory.duplicates += 1
        logger.debug("%s repeats instance %s of %s", path, uid, first_path)
        return True
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    if series_uid in inventory.image_series:
        inventory.image_series[series_uid].broken.append(
            (
                path,
                f"SOPInstanceUID {uid} is also in {first_path.name} with a different header (two images, "
                "one UID)",
            )
        )
    else:
        inventory.unreadable.append(
            (path, f"SOPInstanceUID {uid} is also in {first_path.name} with a different header")
        )
    return True


def read_dicom(path: Path, stop_before_pixels: bool = False) -> tuple[Dataset, bool]:
    """Read a DICOM file, also one without the 128-byte preamble and "DICM" prefix.

    Such a file (a raw dataset, or a file meta group without preamble) is read with ``force=True``; when it
    has no file meta information, its transfer syntax is the encoding pydicom detected, so its pixel data
    decode like any other file's.

    Args:
        path: the file.
        stop_before_pixels: leave pixel data unread.

    Returns:
        The dataset, and whether the file lacked the preamble.

    Raises:
        InvalidDicomError: the file is not DICOM.
        UnidentifiedDicomError: it parses as DICOM without the prefix but names no SOP class.
    """
    try:
        return dcmread(path, stop_before_pixels=stop_before_pixels), False
    except InvalidDicomError:
        pass
    try:
        ds = dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        identified = "SOPClassUID" in ds
        looks_dicom = any(keyword in ds for keyword in _DICOM_IDENTIFIERS)
    except Exception:
        raise InvalidDicomError(f"{path} is not DICOM") from None
    if not looks_dicom:
        raise InvalidDicomError(f"{path} is not DICOM")
    if not identified:
        raise UnidentifiedDicomError(
            "no DICOM preamble or 'DICM' prefix and no SOPClassUID: the object cannot be identified; "
            "re-export it as a DICOM Part 10 file"
        )
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds, True


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as a single short line for a rejection reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
