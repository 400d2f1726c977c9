"""The hospital's PACS over DICOM networking (DIMSE, pynetdicom): pull studies in, send results back.

``find_studies`` (C-FIND, Study Root), ``pull_studies`` (C-GET of the CT and RTSTRUCT series into a site's
input folder, a study at a time, whole or not at all) and ``send_files`` (C-STORE). Every failure is a
:class:`PacsError` or a per-study / per-file result with a one-line reason. No NVFlare, no torch.
Names are re-exported lazily.
"""

from dose3d_fl._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "association": ["PacsError", "RequestedContext", "describe_status", "open_association"],
        "node": ["DEFAULT_CALLING_AE", "DicomNode", "NodeAddressError", "ScuSettings", "check_ae_title"],
        "pull": ["PullReport", "StudyOutcome", "pull_studies", "staging_folder"],
        "query": [
            "QueryResult",
            "SeriesMatch",
            "StudyMatch",
            "WANTED_MODALITIES",
            "check_patient_id",
            "check_uid",
            "find_studies",
        ],
        "retrieve": ["RECEIVED_SOP_CLASSES", "RECEIVED_TRANSFER_SYNTAXES", "retrieve_study"],
        "store": ["SendResult", "send_files"],
    },
)
