"""CT scanner simulation: each site's protocol (grid, resolution, noise, calibration) applied to a phantom.

Sites differ the way real scanners do, which makes the federation non-IID: pixel spacing, slice
thickness, field of view, noise level, a HU calibration offset, rescale encoding and patient position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.synth.phantom import AbdomenPhantom

# ImageOrientationPatient of axial slices by patient position (head/feet first, supine).
_ORIENTATIONS = {
    "HFS": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


@dataclass(frozen=True)
class ScannerProfile:
    """One site's CT scanner and abdominal protocol.

    Args:
        manufacturer: Manufacturer tag value.
        model: ManufacturerModelName tag value.
        matrix: rows = columns of every slice.
        pixel_spacing: in-plane voxel size (mm); field of view = matrix x pixel_spacing.
        slice_thickness: reconstructed slice thickness = slice spacing (mm).
        noise_hu: standard deviation of the (spatially correlated) image noise in HU.
        hu_offset: calibration offset added to every HU value.
        blur_mm: in-plane point spread (Gaussian sigma, mm) of the reconstruction kernel.
        rescale_intercept: stored = HU - intercept (slope 1); 0 stores signed HU directly.
        patient_position: ``"HFS"`` or ``"FFS"``; sets ImageOrientationPatient.
        kernel: ConvolutionKernel tag value.
        layout: how the site's PACS export names folders and files (see ``synth``).
    """

    manufacturer: str
    model: str
    matrix: int
    pixel_spacing: float
    slice_thickness: float
    noise_hu: float
    hu_offset: float
    blur_mm: float
    rescale_intercept: float = -1024.0
    patient_position: str = "HFS"
    kernel: str = "B30f"
    layout: str = "patient-folders"

    @property
    def field_of_view(self) -> float:
        """Reconstruction diameter in mm."""
        return self.matrix * self.pixel_spacing


# Three partner sites, deliberately unlike each other. Matrices are smaller than clinical 512x512 (with
# coarser pixels over a similar field of view) so that 25 patients synthesise and train on 2 CPU cores.
SITE_SCANNERS: tuple[ScannerProfile, ...] = (
    ScannerProfile(
        manufacturer="SYNTH Medical",
        model="Alpha 128",
        matrix=160,
        pixel_spacing=2.5,
        slice_thickness=2.5,
        noise_hu=10.0,
        hu_offset=0.0,
        blur_mm=1.0,
        kernel="B30f",
        layout="patient-folders",
    ),
    ScannerProfile(
        manufacturer="SYNTH Imaging",
        model="Beta 64",
        matrix=144,
        pixel_spacing=2.9,
        slice_thickness=3.0,
        noise_hu=16.0,
        hu_offset=7.0,
        blur_mm=1.4,
        rescale_intercept=-1000.0,
        kernel="STANDARD",
        layout="flat",
    ),
    ScannerProfile(
        manufacturer="SYNTH Systems",
        model="Gamma 16",
        matrix=176,
        pixel_spacing=2.1,
        slice_thickness=5.0,
        noise_hu=24.0,
        hu_offset=-9.0,
        blur_mm=1.2,
        rescale_intercept=0.0,
        patient_position="FFS",
        kernel="FC18",
        layout="pacs",
    ),
)


def scanner_for_site(index: int) -> ScannerProfile:
    """The scanner of site ``index`` (0-based); sites beyond the three presets reuse them in turn."""
    return SITE_SCANNERS[index % len(SITE_SCANNERS)]


def scan_geometry(
    phantom: AbdomenPhantom, scanner: ScannerProfile, table_offset: tuple[float, float]
) -> VolumeGeometry:
    """The axial grid a scanner reconstructs for a patient: centred on the table, covering the abdomen.

    Args:
        phantom: the patient (its craniocaudal extent sets the scan range).
        scanner: the site's protocol.
        table_offset: in-plane (x, y) offset of the reconstruction centre from the body centre (mm).

    Returns:
        The grid, slices ascending along the slice normal.
    """
    row_dir, col_dir = (np.asarray(v) for v in _ORIENTATIONS[scanner.patient_position])
    normal = np.cross(row_dir, col_dir)
    z_low, z_high = phantom.z_range
    slices = int(np.floor((z_high - z_low) / scanner.slice_thickness)) + 1
    start_z = z_low if normal[2] > 0 else z_low + (slices - 1) * scanner.slice_thickness
    half = (scanner.matrix - 1) / 2 * scanner.pixel_spacing
    centre = np.array([table_offset[0], table_offset[1], start_z])
    origin = centre - half * row_dir - half * col_dir
    return VolumeGeometry(
        shape=(scanner.matrix, scanner.matrix, slices),
        row_direction=tuple(float(v) for v in row_dir),
        column_direction=tuple(float(v) for v in col_dir),
        slice_direction=tuple(float(v) for v in normal),
        spacing=(scanner.pixel_spacing, scanner.pixel_spacing, scanner.slice_thickness),
        origin=tuple(float(v) for v in origin),
    )


def simulate_ct(
    phantom: AbdomenPhantom, geometry: VolumeGeometry, scanner: ScannerProfile, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Image a phantom: sample anatomy at voxel centres, blur, add correlated noise and calibration offset.

    Args:
        phantom: the patient.
        geometry: the grid to reconstruct.
        scanner: the site's protocol.
        rng: noise source.

    Returns:
        HU volume ``(columns, rows, slices)`` float32, and the structure fields (``< 0`` inside) on the
        same grid; ground-truth masks are ``fields[name] < 0``.
    """
    values = phantom.evaluate(geometry.voxel_points())
    sigma_xy = scanner.blur_mm / scanner.pixel_spacing
    hu = gaussian_filter(values.hu, sigma=(sigma_xy, sigma_xy, 0.35), mode="nearest")
    noise = gaussian_filter(rng.standard_normal(geometry.shape, dtype=np.float32), sigma=(0.7, 0.7, 0.3))
    noise *= scanner.noise_hu / max(float(noise.std()), 1e-6)
    hu += noise + scanner.hu_offset
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return hu.astype(np.float32), values.fields
