"""Open a DIMSE association with a node and say in one line why it failed when it does.

pynetdicom reports a failed association by flags on the ``Association`` and by log records; this module
turns them into a :class:`PacsError` naming the node and what to change: nothing listens on the port, no
answer within the timeout, an unknown host, a rejection (with the PACS's own reason, e.g. "Called AE title
not recognised"), an abort, or no presentation context accepted.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from dose3d_fl.clinical.pacs.node import DicomNode, ScuSettings

log = logging.getLogger(__name__)

# pynetdicom logs C-FIND identifiers at debug level; patient attributes must not reach a log.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

_TRANSPORT_LOGGER = "pynetdicom.transport"
_TCP_ERROR_PREFIX = "TCP Initialisation Error: "


class PacsError(Exception):
    """A DICOM network operation failed; the message is the one-line reason."""


@dataclass(frozen=True)
class RequestedContext:
    """A presentation context we propose: an abstract syntax (SOP class) and its transfer syntaxes."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class _Observed:
    """What the association attempt showed besides pynetdicom's flags."""

    connected: bool = False
    tcp_errors: list[str] = field(default_factory=list)


class _TcpErrorCapture(logging.Handler):
    """Keeps pynetdicom's record of why the TCP connection failed (it is logged, not raised)."""

    def __init__(self, observed: _Observed) -> None:
        super().__init__(logging.ERROR)
        self.observed = observed

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_TCP_ERROR_PREFIX):
            self.observed.tcp_errors.append(message[len(_TCP_ERROR_PREFIX) :])


def _on_connection_open(event: Any, observed: _Observed) -> None:
    observed.connected = True
    # DIMSE sends a command and its data set as separate small writes: with Nagle's algorithm each waits
    # for the peer's delayed ACK (about 40 ms per message on Linux), which dominates a series transfer.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def open_association(
    node: DicomNode,
    settings: ScuSettings,
    contexts: Sequence[RequestedContext],
    roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
    handlers: Sequence[tuple[Any, Any]] = (),
) -> Iterator[Association]:
    """An established association with ``node``, released (or already ended) on exit.

    Args:
        node: the remote node.
        settings: our AE title and timeouts.
        contexts: the presentation contexts to propose.
        roles: SCP/SCU role selections (C-GET needs the SCP role for the storage classes it receives).
        handlers: extra pynetdicom event handlers, e.g. ``(evt.EVT_C_STORE, handler)`` for C-GET.

    Raises:
        PacsError: the association could not be established; the message names the node and the cause.
    """
    ae = AE(ae_title=settings.calling_ae)
    ae.connection_timeout = settings.timeout
    ae.acse_timeout = settings.timeout
    ae.dimse_timeout = settings.timeout
    ae.network_timeout = settings.timeout
    for context in contexts:
        ae.add_requested_context(context.abstract_syntax, list(context.transfer_syntaxes))
    observed = _Observed()
    capture = _TcpErrorCapture(observed)
    transport_log = logging.getLogger(_TRANSPORT_LOGGER)
    transport_log.addHandler(capture)
    start = time.perf_counter()
    try:
        assoc = ae.associate(
            node.host,
            node.port,
            ae_title=node.ae_title,
            ext_neg=list(roles) or None,
            evt_handlers=[(evt.EVT_CONN_OPEN, _on_connection_open, [observed]), *handlers],
        )
    except OSError as err:  # the host name does not resolve: raised, not logged
        raise PacsError(_unreachable_reason(node, settings, _Observed(tcp_errors=[str(err)]), 0.0)) from err
    finally:
        transport_log.removeHandler(capture)
    if not assoc.is_established:
        raise PacsError(_failure_reason(node, settings, assoc, observed, time.perf_counter() - start))
    log.debug("association with %s established as %s", node, settings.calling_ae)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _failure_reason(
    node: DicomNode, settings: ScuSettings, assoc: Association, observed: _Observed, seconds: float
) -> str:
    if not observed.connected:
        return _unreachable_reason(node, settings, observed, seconds)
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        return (
            f"{node} rejected the association from {settings.calling_ae} ({answer.result_str}, source "
            f"{answer.source_str}: {answer.reason_str}){_rejection_hint(answer.reason_str)}"
        )
    if answer is not None and answer.result == 0x00:
        offered = sorted({str(cx.abstract_syntax.name) for cx in assoc.requestor.requested_contexts})
        return (
            f"{node} accepted the association but none of the offered presentation contexts "
            f"({', '.join(offered)}); the node does not support this service"
        )
    if answer is None and seconds >= settings.timeout * 0.9:
        return (
            f"{node} opened the connection but gave no answer to the association request within "
            f"{settings.timeout:g} s; is it a DICOM port?"
        )
    return f"{node} aborted the association request; check the node's logs for why"


def _unreachable_reason(node: DicomNode, settings: ScuSettings, observed: _Observed, seconds: float) -> str:
    cause = observed.tcp_errors[-1] if observed.tcp_errors else ""
    lowered = cause.lower()
    if "refused" in lowered:
        what = "connection refused: nothing listens on that port"
    elif "timed out" in lowered or (not cause and seconds >= settings.timeout * 0.9):
        what = f"no answer within {settings.timeout:g} s (a firewall, or a wrong host or port)"
    elif any(text in lowered for text in ("name or service not known", "name resolution", "nodename nor")):
        what = f"unknown host {node.host!r} ({cause})"
    else:
        what = cause or "the TCP connection failed"
    return f"cannot reach {node}: {what}"


def _rejection_hint(reason: str) -> str:
    lowered = reason.lower()
    if "called ae" in lowered:
        return "; check the node's own AE title in --node TITLE@host:port"
    if "calling ae" in lowered:
        return "; the PACS does not know our AE title: add it to the PACS's DICOM modalities (docs/pacs.md)"
    return ""


def describe_status(status: Any, table: dict[int, tuple[str, str]]) -> str:
    """``"0xA700 (Failure: Refused: Out of Resources)"`` for a DIMSE response status data set.

    Args:
        status: the response's status data set; empty when the association ended without an answer.
        table: pynetdicom's status table of the service (``pynetdicom.status.*_SERVICE_CLASS_STATUS``).
    """
    code = getattr(status, "Status", None)
    if code is None:
        return "no response: the association ended (the node closed the connection or timed out)"
    category, text = table.get(code, ("Unknown", ""))
    comment = str(getattr(status, "ErrorComment", "") or "").strip()
    detail = ": ".join(part for part in (category, text, comment) if part)
    return f"0x{code:04X} ({detail})"
