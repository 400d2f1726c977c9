"""Geometry of a regular CT grid in DICOM patient coordinates.

Conventions used throughout ``dose3d_fl.data``:

* Patient coordinates are DICOM's LPS, in millimetres: +x to the patient's left, +y posterior, +z superior.
* A volume array is indexed ``[i, j, k]``: ``i`` = column index (along ImageOrientationPatient[0:3]),
  ``j`` = row index (along ImageOrientationPatient[3:6]), ``k`` = slice index, ordered by position along
  ``slice_direction``. A DICOM ``pixel_array`` (indexed ``[row, column]``) is therefore stored transposed.
* NIfTI affines are RAS (the NIfTI convention): ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class VolumeGeometry:
    """A regular 3D grid of CT voxels in patient coordinates.

    Args:
        shape: number of voxels ``(columns, rows, slices)``.
        row_direction: unit vector of increasing column index (ImageOrientationPatient[0:3]).
        column_direction: unit vector of increasing row index (ImageOrientationPatient[3:6]).
        slice_direction: unit vector of increasing slice index; parallel to the slice normal for an
            untilted series (either sign).
        spacing: voxel size ``(column spacing, row spacing, slice spacing)`` in mm; note the DICOM
            PixelSpacing tag lists ``(row spacing, column spacing)``.
        origin: patient position of the centre of voxel ``(0, 0, 0)`` (ImagePositionPatient of slice 0).
    """

    shape: tuple[int, int, int]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    slice_direction: tuple[float, float, float]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def normal(self) -> np.ndarray:
        """The slice normal ``row_direction x column_direction``."""
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def image_orientation(self) -> list[float]:
        """ImageOrientationPatient of every slice."""
        return [float(v) for v in (*self.row_direction, *self.column_direction)]

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices ``(i, j, k, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        for axis, (direction, step) in enumerate(
            zip((self.row_direction, self.column_direction, self.slice_direction), self.spacing, strict=True)
        ):
            affine[:3, axis] = np.asarray(direction, dtype=float) * step
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """The NIfTI (RAS) affine of the grid."""
        return LPS_TO_RAS @ self.affine_lps

    def slice_origin(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice ``k``."""
        return np.asarray(self.origin, dtype=float) + k * self.spacing[2] * np.asarray(self.slice_direction)

    def slice_points(self, k: int) -> np.ndarray:
        """Patient coordinates of the voxel centres of slice ``k`` as a float32 ``(rows, columns, 3)`` array."""
        rows, cols = np.meshgrid(np.arange(self.shape[1]), np.arange(self.shape[0]), indexing="ij")
        return self.pixel_to_patient(np.stack([rows, cols], axis=-1), k).astype(np.float32)

    def voxel_points(self) -> np.ndarray:
        """Patient coordinates of every voxel centre as a float32 ``(columns, rows, slices, 3)`` array."""
        index = np.indices(self.shape, dtype=np.float32).reshape(3, -1)
        affine = self.affine_lps.astype(np.float32)
        points = affine[:3, :3] @ index + affine[:3, 3:4]
        return points.T.reshape(*self.shape, 3)

    def pixel_to_patient(self, row_col: np.ndarray, k: int) -> np.ndarray:
        """Map in-plane ``(row, column)`` coordinates on slice ``k`` to patient coordinates.

        Args:
            row_col: array ``(..., 2)`` of (possibly fractional) row and column indices.
            k: slice index.

        Returns:
            Array ``(..., 3)`` of LPS millimetres.
        """
        row_col = np.asarray(row_col, dtype=float)
        col_step = np.asarray(self.row_direction) * self.spacing[0]
        row_step = np.asarray(self.column_direction) * self.spacing[1]
        return self.slice_origin(k) + row_col[..., 1:2] * col_step + row_col[..., 0:1] * row_step

    def patient_to_pixel(self, points: np.ndarray, k: int) -> np.ndarray:
        """Project patient coordinates onto slice ``k``; inverse of :meth:`pixel_to_patient` in-plane.

        Returns:
            Array ``(..., 2)`` of fractional ``(row, column)`` indices.
        """
        offset = np.asarray(points, dtype=float) - self.slice_origin(k)
        col = offset @ np.asarray(self.row_direction) / self.spacing[0]
        row = offset @ np.asarray(self.column_direction) / self.spacing[1]
        return np.stack([row, col], axis=-1)

    def slice_positions(self) -> np.ndarray:
        """Position of every slice along the normal (mm), in slice order."""
        return np.array([self.slice_origin(k) @ self.normal for k in range(self.shape[2])])
