"""`ReadSideEndpoint`: what a test hands a POP3 or IMAP client, the shared
part of `POP3Endpoint` and `IMAPEndpoint`.

Test side: it reads the sink's address and settings and the port its
read-side server bound; it holds no connection itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from ._text import format_address

if TYPE_CHECKING:
    import ssl

    from ._mailbox import Mailbox


class _Bound(Protocol):
    @property
    def port(self) -> int: ...


class ReadSideEndpoint:
    """Where a client of one of the sink's read-side servers connects."""

    #: The URL schemes: plain (or STARTTLS) and implicit TLS.
    _schemes: ClassVar[tuple[str, str]]

    def __init__(self, mailbox: Mailbox, server: _Bound) -> None:
        self._mailbox = mailbox
        self._server = server

    @property
    def host(self) -> str:
        """The address to connect to, e.g. ``"127.0.0.1"``."""
        return self._mailbox.host

    @property
    def port(self) -> int:
        """This server's port (not the SMTP one)."""
        return self._server.port

    @property
    def tls(self) -> str | None:
        """The sink's TLS setting, which this server follows: None (plain
        text), ``"starttls"`` (STLS or STARTTLS offered),
        ``"starttls-required"`` (TLS before any login) or ``"implicit"``
        (POP3S or IMAPS: TLS from the first byte)."""
        return self._mailbox.settings.tls

    @property
    def url(self) -> str:
        """``pop3://host:port`` or ``imap://host:port`` (``pop3s://`` or
        ``imaps://`` for implicit TLS)."""
        scheme = self._schemes[1] if self.tls == "implicit" else self._schemes[0]
        return f"{scheme}://{format_address(self.host, self.port)}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the sink's certificate (and nothing
        else), with host name checking on (as ``Mailbox.ssl_context``)."""
        return self._mailbox.ssl_context()

    @property
    def ca_path(self) -> str:
        """Path of a PEM file with the CA that signed the sink's certificate."""
        return self._mailbox.ca_path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} tls={self.tls}>"
