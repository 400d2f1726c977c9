"""A DICOM node's address (``AE@host:port``) and the settings of our side of an association."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CALLING_AE = "DOSE3D"
# PS3.5 6.2: an AE title is 1..16 characters of the default repertoire without backslash or control
# characters, and not only spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


class NodeAddressError(ValueError):
    """A node address or AE title that cannot be used; the message says what is wrong."""


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` if it is a valid DICOM AE title, else :class:`NodeAddressError`."""
    if not _AE_TITLE.match(title) or not title.strip():
        raise NodeAddressError(
            f"{what} {title!r} is not a DICOM AE title (1 to 16 printable ASCII characters, no backslash, "
            "not only spaces)"
        )
    return title


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity: the PACS (or any node) we associate with.

    Attributes:
        ae_title: the node's own AE title, sent as the Called AE title (a PACS that checks it rejects others).
        host: host name or IP address (an IPv6 address without brackets).
        port: its DICOM TCP port.
    """

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """Read ``AE@host:port`` (IPv6 as ``AE@[::1]:port``).

        Raises:
            NodeAddressError: the text is not of that form, the AE title is invalid or the port is not 1..65535.
        """
        title, at, address = text.rpartition("@")
        if not at or not title:
            raise NodeAddressError(
                f"node {text!r}: expected AE@host:port, e.g. ORTHANC@pacs.example.org:4242"
            )
        check_ae_title(title, f"node {text!r}: AE title")
        if address.startswith("["):
            host, bracket, rest = address[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
            valid_host = bool(bracket) and bool(re.match(r"^[0-9A-Fa-f:.]+$", host))
        else:
            host, _, port_text = address.rpartition(":")
            valid_host = bool(_HOST.match(host))
        if not valid_host:
            raise NodeAddressError(f"node {text!r}: no valid host before ':port'")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise NodeAddressError(f"node {text!r}: the port must be a number from 1 to 65535")
        return cls(title, host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True)
class ScuSettings:
    """Our side of an association.

    Args:
        calling_ae: our AE title, which the PACS must know (its list of modalities) to answer C-FIND and C-GET.
        timeout: seconds to wait for the TCP connection, for the association answer and for each DIMSE
            message.
    """

    calling_ae: str = DEFAULT_CALLING_AE
    timeout: float = 30.0

    def __post_init__(self) -> None:
        check_ae_title(self.calling_ae, "calling AE title")
        if self.timeout <= 0:
            raise NodeAddressError(f"timeout must be positive, got {self.timeout}")
