"""Node addresses and our AE settings: what ``--node`` and ``--calling-ae`` accept, and the one-line refusals."""

from __future__ import annotations

import pytest

from dose3d_fl.clinical.pacs.node import DicomNode, NodeAddressError, ScuSettings


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("ORTHANC@pacs.example.org:4242", DicomNode("ORTHANC", "pacs.example.org", 4242)),
        ("PACS@10.0.0.5:104", DicomNode("PACS", "10.0.0.5", 104)),
        ("MY AE@host:11112", DicomNode("MY AE", "host", 11112)),
        ("PACS@[::1]:104", DicomNode("PACS", "::1", 104)),
        ("A@B@host:104", DicomNode("A@B", "host", 104)),
    ],
)
def test_node_addresses_parse_and_print_back(text: str, node: DicomNode) -> None:
    assert DicomNode.parse(text) == node
    assert str(node) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1:104", "expected AE@host:port"),
        ("@host:104", "expected AE@host:port"),
        ("PACS@host", "no valid host before ':port'"),
        ("PACS@host:", "the port must be a number from 1 to 65535"),
        ("PACS@host:70000", "the port must be a number from 1 to 65535"),
        ("PACS@ho st:104", "no valid host"),
        ("PACS@[::1:104", "no valid host"),
        ("A_TITLE_LONGER_THAN_16@host:104", "is not a DICOM AE title"),
        ("BACK\\SLASH@host:104", "is not a DICOM AE title"),
        ("   @host:104", "is not a DICOM AE title"),
    ],
)
def test_bad_node_addresses_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(NodeAddressError, match=r"^node ") as caught:
        DicomNode.parse(text)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_calling_ae_and_timeout_are_checked() -> None:
    assert ScuSettings().calling_ae == "DOSE3D"
    with pytest.raises(NodeAddressError, match="calling AE title 'WAY_TOO_LONG_FOR_DICOM'"):
        ScuSettings(calling_ae="WAY_TOO_LONG_FOR_DICOM")
    with pytest.raises(NodeAddressError, match="timeout must be positive"):
        ScuSettings(timeout=0)
