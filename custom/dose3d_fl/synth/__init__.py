"""The synthetic hospital: abdominal CT phantoms, each site's scanner, and the DICOM they write.

The project ships no patient data and downloads none: ``dose3d synth`` writes CT series and RTSTRUCTs for
several sites from a continuous phantom (with ``organs_at_risk``, each site names and omits organs its own
way: ``contouring``), and ``demo_sites`` prepares ingested site caches for the demo, the
simulator and the POC. Nothing here imports NVFlare.
"""

from dose3d_fl.synth.contouring import (
    ORGANS_AT_RISK,
    SITE_CONVENTIONS,
    OrganSpec,
    SiteConvention,
    SynthRoi,
    contoured_organs,
    convention_for_site,
    organ_label_map,
    patient_rois,
)
from dose3d_fl.synth.ct_writer import CTSeriesSpec, StudyIdentity, build_ct_slices
from dose3d_fl.synth.demo_sites import demo_site_names, prepare_caches, prepare_site_data
from dose3d_fl.synth.hospital import (
    SyntheticPatient,
    WrittenStudy,
    patient_identity,
    patients_per_site,
    synthesize_federation,
    synthesize_patient,
    write_study,
)
from dose3d_fl.synth.phantom import AbdomenPhantom, PhantomValues, sample_phantom
from dose3d_fl.synth.scanner import ScannerProfile, scan_geometry, scanner_for_site, simulate_ct

__all__ = [
    "ORGANS_AT_RISK",
    "SITE_CONVENTIONS",
    "AbdomenPhantom",
    "CTSeriesSpec",
    "OrganSpec",
    "PhantomValues",
    "ScannerProfile",
    "SiteConvention",
    "StudyIdentity",
    "SynthRoi",
    "SyntheticPatient",
    "WrittenStudy",
    "build_ct_slices",
    "contoured_organs",
    "convention_for_site",
    "demo_site_names",
    "organ_label_map",
    "patient_identity",
    "patient_rois",
    "patients_per_site",
    "prepare_caches",
    "prepare_site_data",
    "sample_phantom",
    "scan_geometry",
    "scanner_for_site",
    "simulate_ct",
    "synthesize_federation",
    "synthesize_patient",
    "write_study",
]
