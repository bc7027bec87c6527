"""pytest-smtpsink: a real, throwaway SMTP server for tests.

Installing the package registers the pytest plugin; the names below are for
type annotations and for using the sink without pytest.
"""

from ._faults import Fault, FaultError
from ._mailbox import Mailbox, Messages
from ._match import Criteria
from ._message import Address, Addresses, Attachment, Envelope, Headers, Message
from ._server import SinkError, SMTPSink
from ._session import AuthInfo, Exchange, Session, TLSInfo
from ._settings import SettingsError, SinkSettings

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Addresses",
    "Attachment",
    "AuthInfo",
    "Criteria",
    "Envelope",
    "Exchange",
    "Fault",
    "FaultError",
    "Headers",
    "Mailbox",
    "Message",
    "Messages",
    "SMTPSink",
    "Session",
    "SettingsError",
    "SinkError",
    "SinkSettings",
    "TLSInfo",
    "__version__",
]
