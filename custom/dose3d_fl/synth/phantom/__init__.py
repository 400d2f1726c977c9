"""Synthetic non-contrast abdominal CT phantom in continuous patient coordinates.

Conventions: DICOM LPS millimetres (+x to the patient's left, +y posterior, +z superior); the body is
centred near x = y = 0 and z = 0 lies near the splenic hilum. Each structure is a smooth, roughly
signed-distance field in millimetres (negative inside), and tissue HU are painted from the same fields, so
the masks ``fields[name] < 0`` agree with the HU image on any grid. Organs evaluated as structures never
overlap; the spleen is wrapped in a fat plane, so finding it needs shape and position, not a HU window. The
phantom is noise-free: the scanner simulation adds noise, blur and calibration.

Modules, from the bottom up:

- ``shapes``: ellipsoids, tubes, smooth/rounded min and max, distance helpers, frame helpers.
- ``values``: structure names, :class:`PhantomValues`, fixed tissue HU, texture amplitudes and texture.
- ``anatomy``: body outline, subcutaneous fat, diaphragm domes, spleen and renal sinus as fields.
- ``scene``: one evaluation, building the structure fields outside-in and painting HU from them.
- ``model``: :class:`AbdomenPhantom`, the drawn parameters of one patient, and its ``evaluate``.
- ``sampling``: :func:`sample_phantom`, which draws those parameters from a random generator.
"""

from dose3d_fl.synth.phantom.model import AbdomenPhantom
from dose3d_fl.synth.phantom.sampling import sample_phantom
from dose3d_fl.synth.phantom.shapes import Ellipsoid, Tube
from dose3d_fl.synth.phantom.values import STRUCTURE_NAMES, PhantomValues

__all__ = [
    "STRUCTURE_NAMES",
    "AbdomenPhantom",
    "Ellipsoid",
    "PhantomValues",
    "Tube",
    "sample_phantom",
]
