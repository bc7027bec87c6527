"""pytest-smtpsink: a real, throwaway SMTP server for tests.

Installing the package registers the pytest plugin; the names below are for
type annotations and for using the sink without pytest.

They are imported on first use (PEP 562): pytest imports this package for
the plugin in every run, and a run that never uses the sink should not pay
for asyncio, aiosmtpd and the email parsers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._dkim import DkimResult
    from ._dns import DNSQuery, DNSZone
    from ._faults import Fault, FaultError, Trigger
    from ._imap import IMAPEndpoint
    from ._lint import Problem
    from ._mailbox import Mailbox
    from ._mailstore import StoredMessage
    from ._match import Criteria, CriterionError
    from ._message import (
        Address,
        Addresses,
        Attachment,
        Envelope,
        Headers,
        Message,
        RecipientDSN,
    )
    from ._messages import Messages
    from ._pop3 import POP3Endpoint
    from ._relay import Delivery, RelayError, RelayOutcome
    from ._server import SinkError, SMTPSink
    from ._session import AuthInfo, Exchange, Session, TLSInfo
    from ._settings import SettingsError, SinkSettings
    from ._spam import SpamdError, SpamReport, SpamRule
    from ._user_mailbox import UserMailbox

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Addresses",
    "Attachment",
    "AuthInfo",
    "Criteria",
    "CriterionError",
    "DNSQuery",
    "DNSZone",
    "Delivery",
    "DkimResult",
    "Envelope",
    "Exchange",
    "Fault",
    "FaultError",
    "Headers",
    "IMAPEndpoint",
    "Mailbox",
    "Message",
    "Messages",
    "POP3Endpoint",
    "Problem",
    "RecipientDSN",
    "RelayError",
    "RelayOutcome",
    "SMTPSink",
    "Session",
    "SettingsError",
    "SinkError",
    "SinkSettings",
    "SpamReport",
    "SpamRule",
    "SpamdError",
    "StoredMessage",
    "TLSInfo",
    "Trigger",
    "UserMailbox",
    "__version__",
]

_MODULES = {
    "DkimResult": "._dkim",
    "Fault": "._faults",
    "FaultError": "._faults",
    "Trigger": "._faults",
    "Mailbox": "._mailbox",
    "Messages": "._messages",
    "POP3Endpoint": "._pop3",
    "Problem": "._lint",
    "Criteria": "._match",
    "CriterionError": "._match",
    "DNSQuery": "._dns",
    "DNSZone": "._dns",
    "Delivery": "._relay",
    "RelayError": "._relay",
    "RelayOutcome": "._relay",
    "Address": "._message",
    "Addresses": "._message",
    "Attachment": "._message",
    "Envelope": "._message",
    "Headers": "._message",
    "Message": "._message",
    "RecipientDSN": "._message",
    "IMAPEndpoint": "._imap",
    "SinkError": "._server",
    "SMTPSink": "._server",
    "AuthInfo": "._session",
    "Exchange": "._session",
    "Session": "._session",
    "TLSInfo": "._session",
    "SettingsError": "._settings",
    "SinkSettings": "._settings",
    "SpamReport": "._spam",
    "SpamRule": "._spam",
    "SpamdError": "._spam",
    "StoredMessage": "._mailstore",
    "UserMailbox": "._user_mailbox",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and only those

    def __getattr__(name: str) -> Any:
        module = _MODULES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:
    return sorted(__all__)
