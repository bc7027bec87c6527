"""Certificates for TLS sinks: one throwaway authority per process.

trustme makes a CA and a leaf certificate for 127.0.0.1, ::1 and localhost.
Key generation is the expensive part, so it happens once, on the first TLS
sink, and every TLS sink and client context of the process reuses it. A sink
bound to another address (``allow_remote``) gets a leaf that names that
address too, made once per address. Called from the thread that starts a
sink; the lock makes that safe from several threads.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import ssl
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trustme

_lock = threading.Lock()

#: Seconds a client may take over an implicit-TLS handshake; this also bounds
#: how long stop() waits for a client that connected and never finished it.
HANDSHAKE_TIMEOUT = 2.0

#: Where the API says to look; the standalone sink says its banner instead.
TRUST_HINT = "see ssl_context() and ca_path"

# OpenSSL's reason codes, in words, for a session's ``tls_error``.
_REJECTED_CERTIFICATE = (
    "the client rejected the sink's certificate (does it trust the sink's CA? "
    f"{TRUST_HINT})"
)
#: A "bad certificate" alert: an untrusted CA to some clients, and what
#: Python's ssl sends for a host name the certificate does not hold.
_BAD_CERTIFICATE = (
    "the client rejected the sink's certificate (does it connect by a name the "
    "certificate holds, 127.0.0.1, ::1 or localhost for the test CA's? does it "
    f"trust the sink's CA? {TRUST_HINT})"
)
_NOT_TLS = "the client did not start TLS"
_STARTTLS_COMMAND = {"SMTP": "STARTTLS", "POP3": "STLS", "IMAP": "STARTTLS"}
_HANDSHAKE_HINTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": _BAD_CERTIFICATE,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": _BAD_CERTIFICATE,
    "TLSV1_ALERT_UNKNOWN_CA": _REJECTED_CERTIFICATE,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": _REJECTED_CERTIFICATE,
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "HTTP_REQUEST": _NOT_TLS,
    "UNKNOWN_PROTOCOL": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
    "RECORD_LAYER_FAILURE": _NOT_TLS,
    # Also what a server context without a certificate says to any client.
    "NO_SHARED_CIPHER": (
        "no cipher suite in common with the client, or no certificate in the "
        "sink's tls_context (load_cert_chain())"
    ),
    # What it says instead when an sni_callback picked no certificate (the
    # check of tls_context when the settings are made leaves those alone).
    "NO_SUITABLE_SIGNATURE_ALGORITHM": (
        "no certificate in the sink's tls_context (or the one its "
        "sni_callback picks) that the client's signature algorithms accept"
    ),
    "UNSUPPORTED_PROTOCOL": "no TLS version in common with the client",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the client",
}


#: Added when a client left an implicit-TLS handshake: the usual cause.
_IMPLICIT_HINT = (
    " (a plain client on an implicit-TLS port waits for a greeting that never "
    "comes: connect with TLS from the start, e.g. smtplib.SMTP_SSL, "
    "poplib.POP3_SSL, imaplib.IMAP4_SSL)"
)

#: Added when a client closed the connection during a handshake: Python's
#: ssl module sends an alert that names a certificate it rejects (see
#: _REJECTED_CERTIFICATE), but asyncio's TLS layer (aiosmtplib, aioimaplib)
#: closes without one, so the sink sees only the connection go.
_SILENT_REJECTION = (
    " (a client that rejects the sink's certificate may close without saying "
    f"why, as asyncio clients such as aiosmtplib do: does it trust the sink's CA? "
    f"{TRUST_HINT})"
)


#: The words of the API in a session's `Session.tls_error`, as the smtpsink
#: command says them to its user, who has no ssl_context() or tls= to give:
#: its terminal and its live view alike.
_STANDALONE_WORDS = {
    TRUST_HINT: "the banner names its CA file",
    "tls='implicit'": "--tls implicit",
    "tls='starttls'": "--tls starttls",
}


def standalone_spelling(text: str) -> str:
    """``text`` (a session's summary or `Session.tls_error`) in the
    smtpsink command's words (``--tls implicit``, not ``tls='implicit'``)."""
    for api, command in _STANDALONE_WORDS.items():
        text = text.replace(api, command)
    return text


#: The clients of each protocol that speak TLS from the first byte, that
#: connect in plain text, and that do so and then start TLS, as the hint for
#: a TLS handshake on a plain-text port names them.
_TLS_CLIENT = {
    "SMTP": "smtplib.SMTP_SSL",
    "POP3": "poplib.POP3_SSL",
    "IMAP": "imaplib.IMAP4_SSL",
}
_PLAIN_CLIENT = {
    "SMTP": "smtplib.SMTP",
    "POP3": "poplib.POP3",
    "IMAP": "imaplib.IMAP4 or imap_tools.MailBoxUnencrypted",
}
_STARTTLS_CLIENT = {
    "SMTP": "smtplib.SMTP and starttls()",
    "POP3": "poplib.POP3 and stls()",
    "IMAP": "imaplib.IMAP4 and starttls(), or imap_tools.MailBoxStartTls",
}


def starts_tls_handshake(data: bytes) -> bool:
    """Whether ``data``, the first bytes of a connection, begin a TLS
    handshake record (content type 22, record version 3.0 to 3.4): what a
    client that speaks TLS from the start sends first, its ClientHello. No
    command of a text protocol starts with that control character."""
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04


def tls_handshake_note(data: bytes) -> str:
    """The transcript's line for a TLS handshake on a plain-text port: in
    brackets, as a note where a command would be (`Exchange.command` is
    None), and its size instead of its bytes, which say nothing to a reader
    (``"[a TLS handshake (ClientHello), 517 bytes, on a plain-text port]"``)."""
    # Byte 5 is the handshake message's type: 1 for a ClientHello.
    what = " (ClientHello)" if data[5:6] == b"\x01" else ""
    return f"[a TLS handshake{what}, {len(data)} bytes, on a plain-text port]"


def describe_tls_on_plain_port(protocol: str, tls: str | None) -> str:
    """Why a session ended that began with a TLS handshake on a plain-text
    port, with what to do (for `Session.tls_error`): the client's own error,
    WRONG_VERSION_NUMBER (it read the plain greeting as TLS), does not say.
    ``tls`` is the sink's setting: STARTTLS is named where the sink offers
    it."""
    if tls in ("starttls", "starttls-required"):
        plain = f"connect without TLS and start it, e.g. {_STARTTLS_CLIENT[protocol]}"
    else:
        plain = (
            f"connect without TLS, e.g. {_PLAIN_CLIENT[protocol]} (tls='starttls' "
            f"to offer {_STARTTLS_COMMAND[protocol]})"
        )
    return (
        "the client started TLS on a plain-text port (a client that speaks TLS "
        f"from the start, e.g. {_TLS_CLIENT[protocol]}, reads the plain greeting "
        f"as TLS and fails with WRONG_VERSION_NUMBER: {plain}, or give the sink "
        "tls='implicit')"
    )


def describe_handshake_failure(
    error: BaseException | None, implicit: bool = False, protocol: str = "SMTP"
) -> str:
    """Why a server-side TLS handshake failed, in a line (for
    `Session.tls_error`); ``implicit`` for a handshake that starts the
    connection (SMTPS, POP3S, IMAPS). Server thread."""
    if isinstance(error, ssl.SSLError) and error.reason:
        hint = _HANDSHAKE_HINTS.get(error.reason)
        if hint == _NOT_TLS:
            hint = (
                f"{_NOT_TLS} (plain {protocol} on an implicit-TLS port?)"
                if implicit
                # After the server's go-ahead: the client sent its next
                # command in plain text (a client that ignores the reply).
                else f"the client sent plain text after "
                f"{_STARTTLS_COMMAND[protocol]} instead of starting TLS"
            )
        return f"{error.reason}: {hint}" if hint else f"{error.reason}: {error}"
    if isinstance(error, (ConnectionAbortedError, TimeoutError)) and (
        "longer than" in str(error) or isinstance(error, TimeoutError)
    ):
        return (
            f"the client did not finish the handshake within {HANDSHAKE_TIMEOUT:g} s"
            + (_IMPLICIT_HINT if implicit else "")
        )
    if error is None or isinstance(error, (ConnectionError, EOFError)):
        if implicit:
            # Either cause, in one bracket: "...IMAP4_SSL; or a client..."
            return (
                "the client closed the connection during the handshake"
                + _IMPLICIT_HINT[:-1]
                + "; or"
                + _SILENT_REJECTION.replace(" (a client", " a client", 1)
            )
        return "the client closed the connection during the handshake" + (
            _SILENT_REJECTION
        )
    return f"{type(error).__name__}: {error}"


# Server contexts whose probe handshake went through (see lacks_certificate):
# a certificate once loaded cannot be taken out of a context, so a context
# is probed once however often settings holding it are made (every test
# with the marker makes them anew). Weak: the user's contexts are theirs.
_SERVING: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def lacks_certificate(context: ssl.SSLContext) -> bool:
    """Whether a server ``context`` fails every handshake for want of a
    certificate (``ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)`` without
    ``load_cert_chain()``), found by one handshake in memory.

    The client of that handshake verifies nothing and offers every cipher
    suite and TLS version OpenSSL has, so "no shared cipher" on the server's
    side is the server's own lack: no certificate, or none its cipher suites
    can use; no client could connect. A server limited to TLS 1.3 says
    "unsupported protocol" instead: without a certificate OpenSSL leaves it
    no version to speak (with one, this client's TLS 1.3 handshake goes
    through). Any other outcome (client certificates required, versions or
    suites no client offers, anonymous suites that succeed) is False: the
    handshakes of real clients will tell. About 0.4 ms without a
    certificate, 1.2 ms with trustme's (measured, 2 cores)."""
    if context in _SERVING:
        return False
    if context.sni_callback is not None:
        # It may switch, per name asked for, to a context that holds the
        # certificate; a probe without that name would blame this one.
        return False
    try:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.set_ciphers("ALL:@SECLEVEL=0")
        client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        client_side = client.wrap_bio(to_client, to_server)
        server_side = context.wrap_bio(to_server, to_client, server_side=True)
        for _ in range(8):  # a full handshake takes 2 or 3 rounds
            with contextlib.suppress(ssl.SSLWantReadError):
                client_side.do_handshake()
            try:
                server_side.do_handshake()
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLError as error:
                return error.reason == "NO_SHARED_CIPHER" or (
                    error.reason == "UNSUPPORTED_PROTOCOL"
                    and context.minimum_version >= ssl.TLSVersion.TLSv1_3
                )
            _SERVING.add(context)
            return False
    except Exception:  # the client's own trouble (an odd OpenSSL build): not ours
        return False
    return False


_LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


def _issue(ca: trustme.CA, names: tuple[str, ...]) -> trustme.LeafCert:
    """A leaf for ``names``, its subject's common name the first (the host
    clients are told to connect to). Python reads only the alternative
    names, but fetchmail, mbsync and offlineimap's implicit TLS refuse a
    certificate without a common name ("cannot get certificate common
    name"), as no real server's lacks one. A name over X.509's 64
    characters is left to the alternative names: the next that fits."""
    common = next((name for name in names if len(name) <= 64), None)
    return ca.issue_cert(*names, common_name=common)


class _Authority:
    def __init__(self) -> None:
        import trustme  # imported lazily: plain sinks never pay for it

        self.ca: trustme.CA = trustme.CA(organization_name="pytest-smtpsink")
        self.leaf = _issue(self.ca, _LOOPBACK_NAMES)
        self._leaves: dict[str, trustme.LeafCert] = {}
        # Applications configured by path (SSL_CERT_FILE, Django settings,
        # curl --cacert) need the CA as a file.
        self._dir = tempfile.mkdtemp(prefix="smtpsink-ca-")
        # Before the write: a write that fails leaves no directory behind.
        atexit.register(shutil.rmtree, self._dir, True)
        self._ca_file = os.path.join(self._dir, "smtpsink-ca.pem")
        self.ca.cert_pem.write_to_path(self._ca_file)

    @property
    def ca_path(self) -> str:
        """The CA as a PEM file, written again if something removed it
        meanwhile (a /tmp cleaner, during a long run): a client given the
        path must find the file."""
        if not os.path.isfile(self._ca_file):
            with _lock:
                os.makedirs(self._dir, exist_ok=True)
                self.ca.cert_pem.write_to_path(self._ca_file)
        return self._ca_file

    def server_context(
        self, host: str = "127.0.0.1", names: tuple[str, ...] = ()
    ) -> ssl.SSLContext:
        """A server context with a certificate that covers ``host``, the
        address clients are told to connect to, and ``names`` (those of a
        sink the network reaches), as well as loopback."""
        leaf = self.leaf
        covered = tuple(
            dict.fromkeys(n for n in (host, *names) if n not in _LOOPBACK_NAMES)
        )
        if covered:
            key = " ".join(covered)
            with _lock:
                leaf = self._leaves.get(key) or _issue(
                    self.ca, (*covered, *_LOOPBACK_NAMES)
                )
                self._leaves[key] = leaf
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        # PROTOCOL_TLS_CLIENT verifies the certificate and the host name, like
        # create_default_context(), without loading the system's CA store:
        # only our CA is trusted, and building the context stays cheap.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(context)
        return context


def discard_ca_file() -> None:
    """Remove the CA's file now, if there is one: for a process that is
    about to end without running its exit functions."""
    if _the_authority.cache_info().currsize:
        shutil.rmtree(_the_authority()._dir, ignore_errors=True)


def authority() -> _Authority:
    """The process-wide test CA, created on first use."""
    # The lock makes it one: concurrent first calls would each make an
    # authority, as functools.cache does not hold a lock while it calls.
    with _lock:
        return _the_authority()


@functools.cache
def _the_authority() -> _Authority:
    return _Authority()
