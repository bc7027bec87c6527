"""Sending captured mail on to another SMTP server: `release` and the relay.

Two users, two threads:

- `deliver` runs in the caller's thread. `Mailbox.release` calls it from the
  test's thread; it blocks for one SMTP transaction with the upstream.
- `Relayer` owns one thread per relaying sink. The sink's loop thread only
  calls `Relayer.take` (a regex match per recipient and a queue put) after it
  stored the message, so neither the loop nor the client's transaction ever
  waits for the upstream; the relay thread talks to the upstream with
  smtplib and records the outcome on the message.

The client is the standard library's smtplib, subclassed only to record the
conversation (its documented ``putcmd``/``getreply`` pair) and to bound each
reply as a whole (`_ReplyReader`), so the upstream sees the same client as
applications use. Credentials never reach a
transcript, an outcome, a repr or an error message.

Importing this module stays cheap (settings validation uses `parse_upstream`):
smtplib and ssl are imported on first delivery.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import functools
import hmac
import io
import ipaddress
import logging
import os
import queue
import re
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._content import dot_stuffed
from ._credentials import (
    RELAY_PASSWORD_VARIABLE,
    credential_forms,
    has_utf8_form,
    mask_anywhere,
    word_masker,
)
from ._listening import looks, not_yet_taken
from ._session import Exchange, _lines
from ._text import format_address, printable, unicode_domain

if TYPE_CHECKING:
    import datetime
    import ssl

    from ._message import Envelope, Message, RecipientDSN
    from ._settings import SinkSettings
    from ._store import Store

UpstreamTLS = Literal["starttls", "implicit"]
RelayStatus = Literal["pending", "relayed", "refused", "failed", "not-matched"]

#: Seconds the relay thread keeps an idle upstream connection open for the
#: next message before it says QUIT: a burst of mail shares one connection,
#: and a test's upstream session still ends soon after its last message.
_LINGER = 0.2
#: Seconds the relay thread holds a message's content, the upstream's 354
#: in hand, for the next message: then both go in one write (RFC 2920 lets
#: the content start a pipelined group), and one wait reads the reply to the
#: content with the next message's replies. A burst costs the upstream one
#: wake-up per message; a lone message is sent this much later.
_PIPELINE_WAIT = 0.005
LOG = logging.getLogger("pytest_smtpsink")

_SCHEMES: dict[str, tuple[UpstreamTLS | None, int]] = {
    "smtp": (None, 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("implicit", 465),
}


class RelayError(Exception):
    """The upstream server refused the message, or could not be reached.

    ``code`` is the upstream's refusal code, 4xx or 5xx (None when there was
    no refusal: the connection failed, timed out or TLS failed, or the
    upstream's answer was no SMTP reply, or a success where another reply
    was due, which ``reply`` then names), ``reply`` its text,
    ``stage`` the step that failed (``connect``, ``EHLO``, ``STARTTLS``,
    ``AUTH``, ``MAIL``, ``RCPT`` or ``DATA``: the ``DATA`` command, or the
    message content after it, which ``transcript`` tells apart) and
    ``transcript`` the conversation up to the failure (AUTH secrets
    masked).
    """

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"

    def __init__(
        self,
        upstream: str,
        stage: str,
        code: int | None,
        reply: str,
        transcript: Sequence[Exchange] = (),
    ) -> None:
        if code is not None and code < 400:
            # A 250 to STARTTLS, AUTH or DATA, where 220, 235 or 354 is due:
            # no refusal, but no going on either.
            reply = (
                f"the upstream answered {stage} with {code} {reply}, which is "
                f"not the reply {stage} needs"
            )
            code = None
        self.upstream = upstream
        self.stage = stage
        self.code = code
        self.reply = reply
        self.transcript = tuple(transcript)
        # The upstream's text (which may quote what the client sent) is
        # shown escaped, as transcript lines are: no ESC reaches a terminal.
        # ``reply`` keeps it as received.
        answer = printable(f"{code} {reply}" if code is not None else reply)
        text = f"{upstream} refused the message at {stage}: {answer}"
        if code is None:
            text = f"could not deliver to {upstream} ({stage}): {printable(reply)}"
        if self.transcript:
            text += "\nConversation with the upstream:\n" + "\n".join(
                "  " + line for line in _lines(self.transcript)
            )
        super().__init__(text)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """Where relayed mail goes. The password never appears in a repr."""

    host: str
    port: int
    tls: UpstreamTLS | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_file: str | None = None

    @functools.cached_property  # read for every message relayed
    def url(self) -> str:
        """The upstream as a URL, without any password."""
        scheme = {None: "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}
        user = f"{urllib.parse.quote(self.username)}@" if self.username else ""
        if self.username and self.password and self.password in self.username:
            # A service's token as user name and password both (Postmark's
            # server token): the name is the secret.
            user = "****@"
        return f"{scheme[self.tls]}://{user}{format_address(self.host, self.port)}"

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``. Other names
    count as remote: a name is not resolved to decide what is safe."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 (loopback from 3.13 on)
    return address.is_loopback


#: Not quoted: without an "@", what is read as the host may be a password.
_NOT_IN_BRACKETS = (
    "the URL's host has a '[' or ']' out of place: only an IPv6 address "
    "goes in brackets, as in smtp://[::1]:2525"
)


def _brackets_out_of_place(url: str) -> str:
    """What a ``[`` or ``]`` urllib cannot place is: one typed as it is in
    the user name or password (before the host's ``@``), or a host's."""
    authority = url.strip().partition("://")[2]
    for end in "/?#":
        authority = authority.partition(end)[0]
    userinfo = authority.rpartition("@")[0]
    return (
        _BRACKET_IN_USERINFO if "[" in userinfo or "]" in userinfo else _NOT_IN_BRACKETS
    )


_BRACKET_IN_USERINFO = (
    "the URL has a '[' or ']' in its user name or password: there they must "
    "be percent-encoded (%5B, %5D)"
)


def _bracketed_ipv6(host_port: str) -> bool:
    """Whether ``host_port`` is ``[IPv6]`` or ``[IPv6]:port``."""
    inside, bracket, rest = host_port.removeprefix("[").partition("]")
    if not host_port.startswith("[") or not bracket or rest[:1] not in ("", ":"):
        return False
    try:
        ipaddress.IPv6Address(inside)
    except ValueError:
        return False
    return "[" not in rest and "]" not in rest


#: A "%" that is no percent escape (RFC 3986 2.1).
_NO_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def parse_upstream(url: str) -> Upstream:
    """``smtp://host:port``, ``smtp+starttls://user:password@host:port`` or
    ``smtps://host:port``, with an optional ``?cafile=PATH`` to trust.

    Raises ValueError with a message that never repeats a password.
    """
    if not isinstance(url, str):
        raise ValueError(f"must be a URL string, got a {type(url).__name__}")
    if _CONTROL.search(url.strip()):
        # urllib drops a tab, CR or LF anywhere in a URL (as WHATWG says
        # browsers do): "an\r\nn" logged in as "ann". Not quoted: it may
        # be in the password.
        raise ValueError(
            "the URL has a control character (urllib would drop a tab or a "
            "line break): percent-encode it where it belongs"
        )
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        # urllib's "Invalid IPv6 URL" for a "[" without its "]" (or a "]"
        # alone), and from 3.11 on its own words for "[name]".
        raise ValueError(_brackets_out_of_place(url)) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"the URL must start with smtp://, smtp+starttls:// or smtps://, "
            f"got {scheme + '://' if scheme else 'no scheme'}"
        )
    tls, default_port = _SCHEMES[scheme]
    # URL decoding, not a form's: a "+" in a path ("c++/ca.pem") stays "+".
    query = urllib.parse.parse_qs(
        parts.query.replace("+", "%2B"), keep_blank_values=True
    )
    if "@" in parts.path + parts.fragment or any(
        "@" in key or (key != "cafile" and any("@" in v for v in values))
        for key, values in query.items()
    ):
        # A "/", "?" or "#" in the user name or password ended the host
        # part early: what follows would read as a port, a path or a query
        # key, and an error quoting a query key would show the password.
        raise ValueError(
            "the URL has an '@' after its host: a '/', '?' or '#' in the user "
            "name or password must be percent-encoded (%2F, %3F, %23)"
        )
    host_port = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc.rpartition("@")[0]
    if "[" in userinfo or "]" in userinfo:
        raise ValueError(_BRACKET_IN_USERINFO)
    if _NO_ESCAPE.search(userinfo):
        # unquote() keeps such a "%" as it is, while "50%41" would become
        # "50A": a password typed with a bare "%" works or fails to log in
        # by what follows it. Not quoted: it is the password.
        raise ValueError(
            "the URL's user name or password has a '%' that starts no %XX "
            "escape: a '%' itself is written %25"
        )
    if _CONTROL.search(urllib.parse.unquote(userinfo.partition(":")[0])):
        # An encoded CR LF in a user name is a mistake, never a login.
        raise ValueError("the URL's user name has a control character")
    if ("[" in host_port or "]" in host_port) and not _bracketed_ipv6(host_port):
        # urllib read "[::1]x:25" as ::1 port 25, and "[name]" as a host
        # name before 3.11.
        raise ValueError(_NOT_IN_BRACKETS)
    after_host = (
        host_port.rpartition("]")[2] if host_port.startswith("[") else host_port
    )
    if after_host.count(":") > 1:
        # "host:2525:25": urllib reads the last part as the port, and the
        # error would call a good port out of range. Not quoted: with ":"
        # typed for "@" ("user:pw:host:25") it holds the password.
        raise ValueError(
            "the URL's host:port has more than one ':' (an IPv6 address goes "
            f"in brackets: {scheme}://[::1]:2525"
            + (
                ""
                if "@" in parts.netloc
                else "; a user:password, if that is one, goes before an '@'"
            )
            + ")"
        )
    given = host_port.rpartition(":")[2]
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not given.isascii():
        port = -1  # full-width digits: some Pythons' urllib reads them
    if port is not None and not 0 < port < 65536:
        # "smtp://user:password" (no "@host") puts the password where the
        # port goes: quoted only when it is digits that a port may be (0)
        # or after an "@" (a PIN of six digits was shown).
        raise ValueError(
            f"the URL's port must be a number from 1 to 65535, got {given!r}"
            if given.isdigit() and (int(given) <= 65535 or "@" in parts.netloc)
            else "the URL's port must be a number from 1 to 65535, got something "
            "else (not shown: a user:password goes before an '@', as in "
            f"{scheme}://user:password@host:port)"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"the URL names no host (e.g. {scheme}://127.0.0.1:2525)")
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError(f"the URL's host {host!r} is no host name")
    if parts.fragment or url.rstrip().endswith("#"):
        # Not quoted: a "#" in a password typed as it is starts it.
        raise ValueError(
            "the URL has a '#' part, which an SMTP URL has no use for (a '#' "
            "in the user name, the password or the cafile= path must be "
            "percent-encoded: %23)"
        )
    unknown = sorted(set(query) - {"cafile"})
    if unknown or parts.path not in ("", "/"):
        raise ValueError(
            "the URL may only carry ?cafile=PATH after host:port"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    ca_file = query["cafile"][-1] if "cafile" in query else None
    if ca_file is not None and tls is None:
        raise ValueError("cafile= is for smtp+starttls:// and smtps:// upstreams")
    username = parts.username
    password = parts.password
    if password is not None and not username:
        # AUTH needs a user name: the password would be kept, never used.
        raise ValueError(
            "the URL has a password but no user name (smtp://user:password@host)"
        )
    if username and password is None:
        # A command line (--relay, --smtpsink-relay) is visible to every
        # user of the machine in its process list, and often in CI logs.
        password = os.environ.get(RELAY_PASSWORD_VARIABLE)
        if password is None:
            raise ValueError(
                f"the URL names the user {urllib.parse.unquote(username)!r} but "
                "no password: write it in the URL (smtp://user:password@host) "
                f"or, to keep it off command lines, set {RELAY_PASSWORD_VARIABLE}"
            )
    else:
        password = urllib.parse.unquote(password) if password is not None else None
    if username and not has_utf8_form(urllib.parse.unquote(username)):
        raise ValueError(
            "the URL's user name is not valid Unicode text (a lone surrogate)"
        )
    if password is not None and not has_utf8_form(password):
        # AUTH could not send it, nor could its masks be made.
        raise ValueError(
            f"the relay's password ({'in' if parts.password is not None else 'from'} "
            f"{'the URL' if parts.password is not None else RELAY_PASSWORD_VARIABLE}) "
            "is not valid Unicode text (a lone surrogate, such as os.environ "
            "gives for a byte that is not UTF-8)"
        )
    return Upstream(
        host=host,
        port=port if port is not None else default_port,
        tls=tls,
        username=urllib.parse.unquote(username) if username else None,
        password=password,
        ca_file=ca_file,
    )


def masked_url(url: str) -> str:
    """``url`` for reports: without the password, if it has one."""
    try:
        return parse_upstream(url).url
    except ValueError:
        return "<invalid relay URL>"


# -- results -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One transaction with an upstream server, as `Mailbox.release` returns it."""

    upstream: str
    """The upstream as a URL (never with a password)."""
    mail_from: str
    accepted: tuple[str, ...]
    """Recipients the upstream accepted."""
    refused: tuple[tuple[str, int, str], ...]
    """``(recipient, code, reply)`` for each recipient it refused while
    accepting others."""
    code: int
    """The upstream's reply code to the end of the content (e.g. 250)."""
    reply: str
    transcript: tuple[Exchange, ...]
    """The conversation with the upstream (AUTH secrets masked)."""

    def format_transcript(self) -> str:
        """The conversation as ``C:``/``S:`` lines."""
        return "\n".join(_lines(self.transcript))


@dataclasses.dataclass(frozen=True)
class RelayOutcome:
    """What became of a message on a relaying sink (`Message.relay`)."""

    status: RelayStatus
    """``pending`` (queued or being sent), ``relayed`` (the upstream took it),
    ``refused`` (the upstream answered with an error), ``failed`` (no answer:
    unreachable, timed out, closed, TLS failed, no SMTP reply, an extension
    the message needs missing, larger than the upstream's SIZE, or the sink
    stopped first) or
    ``not-matched`` (no recipient matched ``relay_to``: nothing was sent)."""
    upstream: str
    recipients: tuple[str, ...] = ()
    """The envelope recipients that matched ``relay_to`` (those sent to the
    upstream; `Delivery.accepted` and `Delivery.refused` say which it took)."""
    code: int | None = None
    """The upstream's final reply code, or None without one."""
    reply: str = ""
    delivery: Delivery | None = None
    """The whole transaction, once the upstream accepted the message."""
    error: RelayError | None = dataclasses.field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """True once the relay is over, whatever its outcome."""
        return self.status != "pending"

    def __str__(self) -> str:
        if self.status == "not-matched":
            why = f": {self.reply}" if self.reply else ""
            return printable(f"not relayed (no recipient matches relay_to){why}")
        if self.status == "pending":
            return f"relay to {self.upstream} pending"
        # The upstream's text (its reply, a refused recipient's), escaped
        # (`printable`): the standalone sink prints this line as it is.
        # ``reply`` keeps it as received.
        if self.status == "failed":
            return printable(f"relay to {self.upstream} failed: {self.reply}")
        text = f"{self.status} by {self.upstream}: {self.code} {self.reply}".rstrip()
        refused = self.delivery.refused if self.delivery is not None else ()
        if refused:
            # "relayed" alone would read as every recipient having it.
            first, code, reply = refused[0]
            more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
            text += (
                f"; {len(refused)} of {len(self.recipients)} recipients refused: "
                f"{first} ({code} {reply}){more}"
            )
        return printable(text)


# -- the Received: header ---------------------------------------------------------------

# Printable ASCII but ( ) ; and space: a comment, or the end of the
# header's tokens (RFC 5322 3.6.7: the date-time follows the ";").
_UNSAFE = re.compile(r"[^\x21-\x27\x2a-\x3a\x3c-\x7e]")


def received_header(
    message: Message, by: str, recipients: Sequence[str] | None = None
) -> bytes:
    """The ``Received:`` trace header (RFC 5321 section 4.4) a relay adds.

    ``from`` is the client's EHLO name and address (``[IPv6:::1]`` for
    IPv6, RFC 5321 4.1.3), ``with`` the protocol in RFC 3848's words (SMTP,
    ESMTP, ESMTPS, ESMTPA, ESMTPSA), ``id`` the message's number in the
    sink. A message put in without SMTP (`Mailbox.deliver`, IMAP APPEND)
    has no ``from`` or ``with``, and no ``id`` (it has no number). The EHLO
    name is the client's text: anything but printable ASCII (and ``( ) ;``)
    becomes ``?``, so it cannot break the header. ``for`` names the one
    recipient of ``recipients`` (the envelope the copy goes with; by
    default the captured one): a copy sent to others must not name a
    captured Bcc recipient.
    """
    session = message.session
    # The sink that received it, not the one a test released it through.
    by = _UNSAFE.sub("?", session._served_by or by)
    rcpt = message.envelope.rcpt_to if recipients is None else recipients
    recipient = f"\r\n\tfor <{_UNSAFE.sub('?', rcpt[0])}>" if len(rcpt) == 1 else ""
    date = _header_date(message.received_at.replace(microsecond=0))
    if session.protocol != "SMTP":  # deliver(), or an IMAP APPEND
        number = f" id {message.number}" if message.number else ""
        return (
            f"Received: by {by} (pytest-smtpsink){number}{recipient}; {date}\r\n"
        ).encode("ascii", "replace")
    helo = _UNSAFE.sub("?", session.ehlo or "unknown")[:255] or "unknown"
    peer = session.peer[0]
    if ":" in peer:
        peer = f"IPv6:{peer}"
    protocol = "ESMTP" if session.esmtp else "SMTP"
    if session.esmtp and message.envelope.smtputf8:
        protocol = "UTF8SMTP"  # RFC 6531 3.7.3, with its S and A as below
    if session.esmtp:
        protocol += ("S" if session.tls else "") + (
            "A" if session.authenticated_as is not None else ""
        )
    return (
        f"Received: from {helo} ([{peer}])\r\n\tby {by} (pytest-smtpsink) "
        f"with {protocol} id {message.number}{recipient}; {date}\r\n"
    ).encode("ascii", "replace")


@functools.lru_cache(maxsize=4)  # the messages of one second share it
def _header_date(moment: datetime.datetime) -> str:
    import email.utils

    return email.utils.format_datetime(moment)


#: A message with this many ``Received:`` headers is in a mail loop and is
#: not relayed (RFC 5321 6.3 suggests about 100).
MAX_HOPS = 100
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _received_headers(raw: bytes) -> int:
    """How many ``Received:`` fields the header block of ``raw`` has, when
    it could have `MAX_HOPS`; else 0. Runs on the sink's loop for every
    relayed message: a header of fewer lines is not even lower-cased."""
    end = _HEADER_END.search(raw)
    head = raw if end is None else raw[: end.start()]
    if head.count(b"\n") + 1 < MAX_HOPS:
        return 0
    head = head.lower()
    return head.count(b"\nreceived:") + head.startswith(b"received:")


# -- the client ------------------------------------------------------------------------


#: AUTH challenges answered before giving up on an upstream that keeps
#: asking (smtplib's own bound).
_MAX_CHALLENGES = 5


#: The length from which the relay's password is masked inside words too.
_MASKED_INSIDE_WORDS_FROM = 4


def _echoed_forms(password: str) -> list[str]:
    """``password`` as a reply read with ``surrogateescape`` holds it when
    the upstream wrote it in Latin-1 or cp1252 rather than UTF-8."""
    forms = []
    for encoding in ("latin-1", "cp1252"):
        with contextlib.suppress(UnicodeEncodeError):
            echoed = password.encode(encoding).decode("utf-8", "surrogateescape")
            if echoed != password:
                forms.append(echoed)
    return forms


def _client_class(implicit: bool) -> Any:
    """smtplib's SMTP (or SMTP_SSL) recording every exchange."""
    import smtplib

    base = smtplib.SMTP_SSL if implicit else smtplib.SMTP

    class Recording(base):  # type: ignore[valid-type,misc]
        file: Any  # smtplib's reply reader, None until the first reply

        def __init__(self, **kwargs: Any) -> None:
            self.exchanges: list[Exchange] = []
            self._in_auth = False
            # Set once a message's content is written: its reply may wait
            # on the upstream still taking it (`_SendQueue`).
            self.content_written = False
            self.reader: object = None  # the last reply's reader (read_reply)
            # Whether the sink is stopping (`_Connection.stopping`): an
            # upstream still taking the content is then given up on.
            self.stopping: Callable[[], bool] = _never
            # Masks every form of the password once a login gives it: an
            # upstream may quote it in a reply ("535 wrong password ..."),
            # which goes into outcomes, errors, transcripts, the CLI's output.
            self._mask: Callable[[str], str] | None = None
            # For a reply that accepts, with a short password (login).
            self._word_mask: Callable[[str], str] | None = None
            # Whether `Mailbox.release` sent it (else the automatic relay):
            # the advice for a refusal names what the user gave.
            self.released = False
            super().__init__(**kwargs)

        def putcmd(self, cmd: str, args: str = "") -> None:
            kind = "command"
            if self._in_auth:  # a continuation of AUTH: a secret
                # **** as in the sink's own transcripts.
                kind, shown = "auth-response", "****"
            elif cmd.lower() == "auth":
                self._in_auth = True
                mechanism = args.split(" ", 1)[0]
                shown = f"AUTH {mechanism}" + (" ****" if " " in args else "")
            else:
                shown = f"{cmd.upper()} {args}".rstrip()
            self.exchanges.append(Exchange(kind, shown, time.time()))  # type: ignore[arg-type]
            super().putcmd(cmd, args)

        def login(
            self, user: str, password: str, *, initial_response_ok: bool = True
        ) -> tuple[int, bytes]:
            """smtplib's login, with two differences: after a refusal other
            than 504 (mechanism not available) or 534 (too weak for this
            user), it stops. smtplib tries each other mechanism with the same
            password: three failed logins per message, which an upstream
            counts against the account. And PLAIN and LOGIN come before
            CRAM-MD5, not after: CRAM-MD5 needs the password as the upstream
            stores it, so an upstream that offers it refuses it (535, not
            534) for an account whose password it keeps hashed, and with no
            other mechanism tried after that refusal, the right password
            would fail. The password never crosses the network in the clear
            (`Mailbox.release` and the relay settings refuse AUTH without TLS
            off loopback), so CRAM-MD5 would protect nothing."""
            self.ehlo_or_helo_if_needed()
            if not self.has_extn("auth") and self.has_extn("starttls"):
                # Most submission servers (and a sink by default) offer
                # AUTH only once TLS is on: logging in without it is wrong.
                raise _NotOffered(
                    "a login was asked for, but the upstream offers AUTH only "
                    "after STARTTLS, it seems (its EHLO reply lists STARTTLS "
                    "and no AUTH): "
                    + (
                        "give tls='starttls' to release()"
                        if self.released
                        else "use smtp+starttls:// in the relay URL"
                    )
                )
            if not self.has_extn("auth"):
                raise _NotOffered(
                    "a login was asked for, but the upstream offers no AUTH "
                    "(its EHLO reply lists none): "
                    + (
                        "give no auth= to release()"
                        if self.released
                        else "put no user in the relay URL"
                    )
                )
            offered = self.esmtp_features["auth"].upper().split()
            mechanisms = [m for m in _LOGIN_ORDER if m in offered]
            if not mechanisms:
                raise _NotOffered(
                    f"the upstream offers AUTH {' '.join(offered) or '(nothing)'}, "
                    f"none of which the relay logs in with ({', '.join(_LOGIN_ORDER)})"
                )
            self.user, self.password = user, password
            # Anywhere, inside a word too: a reply is free text, quoted in
            # the relay's error ("535 bad login user=ann;pass<password>"
            # showed it). Also as an upstream that echoes it in Latin-1 or
            # cp1252 writes it, read here as undecodable bytes.
            secrets = credential_forms({user: password}, None)
            secrets += _echoed_forms(password)
            # Base64 without its "=" padding, as a server may echo what it
            # could not decode.
            secrets += [form.rstrip("=") for form in secrets if form.endswith("=")]
            self._mask = functools.partial(mask_anywhere, secrets=secrets)
            if len(password) < _MASKED_INSIDE_WORDS_FROM:
                # One of a few characters, cut out of every word, garbled
                # every reply ("250 2.0.0 OK: qu****u****d as #1"): in one
                # that accepts, as a word, as the sink masks its own lines;
                # a refusal, where an upstream echoes it, anywhere still.
                self._word_mask = word_masker({user: password}, None)
            for mechanism in mechanisms:
                method = getattr(self, "auth_" + mechanism.lower().replace("-", "_"))
                try:
                    code, text = self.auth(
                        mechanism, method, initial_response_ok=initial_response_ok
                    )
                except smtplib.SMTPAuthenticationError as error:
                    if error.smtp_code not in (504, 534) or mechanism == mechanisms[-1]:
                        raise
                    continue
                if code in (235, 503):
                    return code, text
            raise smtplib.SMTPException("No suitable authentication method found.")

        def auth(
            self,
            mechanism: str,
            authobject: Callable[..., str],
            *,
            initial_response_ok: bool = True,
        ) -> tuple[int, bytes]:
            """smtplib's auth, with the responses in UTF-8: SASL's PLAIN
            (RFC 4616) and LOGIN carry UTF-8, which the sink's own AUTH
            takes, where smtplib's ASCII failed on a password such as
            "pässwort" (with the password in its error, a chained
            exception). CRAM-MD5's key is UTF-8 too (`auth_cram_md5`)."""
            import base64

            def encoded(response: str) -> str:
                return base64.b64encode(response.encode("utf-8")).decode("ascii")

            initial = authobject() if initial_response_ok else None
            # smtplib's auth_login reads this count to answer the user name
            # or the password.
            if initial is not None:
                self._auth_challenge_count = 1
                code, text = self.docmd(
                    "AUTH", f"{mechanism.upper()} {encoded(initial)}"
                )
            else:
                self._auth_challenge_count = 0
                code, text = self.docmd("AUTH", mechanism.upper())
            while code == 334:
                self._auth_challenge_count += 1
                if self._auth_challenge_count > _MAX_CHALLENGES:
                    raise smtplib.SMTPException(
                        f"the upstream asked for more than {_MAX_CHALLENGES} "
                        "AUTH responses"
                    )
                challenge = base64.decodebytes(text)
                code, text = self.docmd(encoded(authobject(challenge)))
            if code in (235, 503):
                return code, text
            raise smtplib.SMTPAuthenticationError(code, text)

        def auth_login(self, challenge: bytes | None = None) -> str:
            """smtplib answers LOGIN's prompts by their count: an upstream
            that ignored the user name sent with AUTH LOGIN and asked
            "Username:" got the password, into its log of failed user
            names. A prompt that says which it asks is answered so."""
            if challenge is not None:
                asked = challenge.strip().lower()
                if asked.startswith(b"user"):
                    return str(self.user)
                if asked.startswith(b"pass"):
                    return str(self.password)
            return str(super().auth_login(challenge))

        def auth_cram_md5(self, challenge: bytes | None = None) -> str | None:
            """smtplib's CRAM-MD5 keys its digest with the password in
            ASCII, and failed on "pässwort" with the password in a chained
            exception. RFC 2195 names no charset; the key is the password
            in UTF-8 here, as the sink's own CRAM-MD5 takes it."""
            if challenge is None:
                return None
            key = self.password.encode("utf-8")
            return f"{self.user} {hmac.new(key, challenge, 'md5').hexdigest()}"

        def send(self, s: bytes | str) -> None:
            """smtplib's send, as far as the upstream takes it at a time: a
            socket's timeout bounds a whole ``sendall`` (since Python 3.5),
            so a 25 MB message to an upstream taking it at 1 MB/s failed
            after 10 s, and so did each 256 KiB piece of an upstream that
            took less than 256 KiB per timeout while it kept reading. Each
            ``send`` waits at most the timeout for the upstream to take some
            of it: it is the upstream taking nothing for that long that
            fails. Errors as smtplib's own (`SMTPServerDisconnected`, the
            socket's error as its context)."""
            sock = self.sock
            if not isinstance(s, bytes) or not sock:
                super().send(s)  # a command line, or smtplib's own error
                return
            import smtplib
            import ssl

            # A TLS socket writes a whole piece or nothing (its records):
            # one record at a time, so that it too waits only for some room.
            piece = _TLS_PIECE if isinstance(sock, ssl.SSLSocket) else _SEND_PIECE
            sys.audit("smtplib.send", self, s)
            view = memoryview(s)
            descriptor = sock.fileno()
            try:
                while view:
                    queued = not_yet_taken(descriptor)
                    try:
                        view = view[sock.send(view[:piece]) :]
                    except TimeoutError:
                        # No room for a whole timeout, and yet the upstream
                        # may have taken some: its system lets more go a
                        # window at a time, and the socket says there is
                        # room only once much of its buffer is free. Taken
                        # is taken: only a timeout without any fails.
                        now = not_yet_taken(descriptor)
                        if queued is None or now is None or now >= queued:
                            raise
                    if view and self.stopping():
                        # A stopping sink waits a timeout at most: an
                        # upstream taking a large message slowly held it.
                        raise _Reason(_STOPPED_WHILE_TAKEN)
            except OSError:
                self.close()
                raise smtplib.SMTPServerDisconnected("Server not connected") from None

        def read_reply(self) -> tuple[int, bytes]:
            """smtplib's own reader, refusing what is no SMTP reply, with
            the timeout for the whole reply (`_ReplyReader`)."""
            if self.file is None and self.sock is not None:
                self.file = _ReplyLines(_ReplyReader(self.sock, self.stopping))
            raw = getattr(self.file, "raw", None)
            # Kept past smtplib's close() on an error, which drops the file:
            # `_Connection._broken` asks it whether the upstream said a thing.
            self.reader = raw
            if not isinstance(raw, _ReplyReader):
                return self._masked(*_checked_reply(self, super().getreply))
            raw.deadline = time.monotonic() + self.timeout
            raw.budget = _MAX_REPLY + _READ_AHEAD
            if self.content_written:
                # The reply to the content: the upstream may still be
                # reading what the kernel's buffers took at once.
                raw.content_queue = _SendQueue(self.sock, self.timeout)
            try:
                return self._masked(*_checked_reply(self, super().getreply))
            finally:
                raw.deadline = raw.budget = raw.content_queue = None
                self.content_written = False
                if raw.shortened and self.sock is not None:
                    raw.shortened = False
                    self.sock.settimeout(self.timeout)

        def _masked(self, code: int, text: bytes) -> tuple[int, bytes]:
            if self._mask is None or (code == 334 and self._in_auth):
                # A challenge is decoded by the login (masked, its base64
                # lost letters and the login failed); its recorded copy is
                # masked (getreply).
                return code, text
            return code, self._shown(code, text)

        def _shown(self, code: int, text: bytes) -> bytes:
            accepts = 200 <= code < 300 or (code == 334 and self._in_auth)
            mask = self._word_mask if accepts and self._word_mask else self._mask
            if mask is None:
                return text
            shown = mask(text.decode("utf-8", "surrogateescape"))
            return shown.encode("utf-8", "surrogateescape")

        def getreply(self) -> tuple[int, bytes]:
            code, text = self.read_reply()
            exchanges = self.exchanges
            last = exchanges[-1] if exchanges else None
            if last is None:
                last = Exchange("greeting", "", time.time())
                exchanges.append(last)
            shown = self._shown(code, text) if code == 334 and self._in_auth else text
            lines = shown.decode("utf-8", "replace").split("\n") or [""]
            last.replies.extend(
                f"{code}{'-' if i < len(lines) - 1 else ' '}{line}".rstrip()
                for i, line in enumerate(lines)
            )
            if code != 334:
                self._in_auth = False
            _closing(self, code, text)
            return code, text

    return Recording


class _ReplyLines(io.BufferedReader):
    """The reply lines smtplib reads, each checked for what smtplib takes on
    trust: after the 3-digit code a space, a '-' or the line's end (RFC
    5321 4.2). It reads ``250ok`` as 250 and ``2500 ok`` as 250 "ok": an
    upstream's garbage taken for its acceptance."""

    malformed: bytes | None = None
    #: The first line without a code: smtplib keeps what follows its first
    #: four characters only ("HTTP/1.1 400" read as "/1.1 400").
    codeless: bytes | None = None

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(-1 if size is None else size)
        if line[:3].isdigit() and line[3:4] not in (b" ", b"-", b"\r", b"\n", b""):
            self.malformed = self.malformed or line
        elif not line[:3].isdigit():
            self.codeless = self.codeless or line
        return line


class _ReplyReader(io.RawIOBase):
    """The socket as smtplib reads replies from it, with a deadline.

    A socket's timeout bounds each wait for bytes, not a reply: an upstream
    sending a byte now and then would hold the relay (and a stopping sink)
    for ever. Each wait gets what is left of the reply's time.
    """

    def __init__(self, sock: Any, stopping: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.sock = sock
        self.stopping = stopping or _never
        self.deadline: float | None = None
        # `_Connection.said_something`: read only what has come, and note
        # the end of the stream.
        self.polling = False
        self.ended = False
        # Bytes a reply may still take from the socket (`_MAX_REPLY`):
        # smtplib bounds each line of a reply, not their number.
        self.budget: int | None = None
        # Whether a wait shortened the socket's timeout, to put back after
        # the reply. Most replies come in one read, right after the deadline
        # was set to the socket's timeout from now: that wait keeps the
        # timeout as it is (settimeout() is a system call each time).
        self.shortened = False
        # While the reply to a message's content is awaited: what of the
        # content the upstream has not yet taken (`_SendQueue`).
        self.content_queue: _SendQueue | None = None
        #: Bytes read in all: none when an upstream never greeted.
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.polling:
            return self._poll_into(buffer)
        while True:
            try:
                return self._read_into(buffer)
            except TimeoutError:
                now = time.monotonic()
                queue = self.content_queue
                if self.deadline is not None and now < self.deadline:
                    # A look at the queue, the deadline still ahead.
                    if queue is not None and queue.all_taken():
                        # It took the last of the content in the look just
                        # ended: its reply is due a timeout after that.
                        self.deadline = now + queue.patience
                        self.content_queue = None
                    continue
                if queue is None or not queue.shrank():
                    if queue is not None and queue.last:
                        # Its end is still in the relay's own send queue:
                        # certainly not kept ("it may have kept" said so).
                        raise _Reason(
                            "timed out: the upstream took none of the rest of "
                            f"the message content for {queue.patience:g} s "
                            f"({queue.last} bytes not taken), so its end never "
                            "reached it: the upstream does not have the message"
                        ) from None
                    raise
                if self.stopping():  # a stopping sink waits a timeout at most
                    raise _Reason(_STOPPED_WHILE_TAKEN) from None
                # Still taking the content: not late yet. (Its progress, a
                # window at a time, may pause for a while: it counts per
                # timeout, not from each step.)
                self.deadline = now + queue.patience

    def _read_into(self, buffer: Any) -> int:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            queue = self.content_queue
            if queue is not None and queue.last:
                # Look soon whether the upstream has taken all: the reply is
                # due a timeout after it took the last byte, not after the
                # deadline's look that saw it (which gave up to twice that).
                self.sock.settimeout(min(remaining, next(queue.looks)))
                self.shortened = True
                return self._recv_into(buffer)
            timeout = self.sock.gettimeout()
            # Set again if it would end the wait well after the deadline, or
            # before it (a look at the queue shortened it, and the deadline
            # moved on).
            if timeout is None or abs(timeout - remaining) > _DEADLINE_SLACK:
                self.sock.settimeout(remaining)
                self.shortened = True
        return self._recv_into(buffer)

    def _recv_into(self, buffer: Any) -> int:
        got = int(self.sock.recv_into(buffer))
        self.received += got
        if self.budget is not None:
            self.budget -= got
            if self.budget < 0:
                self.budget = None
                raise _NoReply(
                    f"the upstream's reply goes on past {_MAX_REPLY // 1024} KiB "
                    "(line after line of it): no SMTP reply is that long"
                )
        return got

    def _poll_into(self, buffer: Any) -> int | None:
        """What has arrived, without waiting: None if nothing has."""
        import ssl

        from ._listening import readable_now

        sock = self.sock
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        if not pending and not readable_now(sock):
            return None
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            got = int(sock.recv_into(buffer))
        except (BlockingIOError, ssl.SSLWantReadError):
            return None  # a TLS record not all here, or not application data
        finally:
            sock.settimeout(timeout)
        self.ended = got == 0
        return got


class _SendQueue:
    """How much of what the relay wrote the upstream has not yet taken: the
    bytes in the socket's send queue not yet acknowledged (Linux's
    SIOCOUTQ). A large message goes into the kernel's buffers at once (on
    loopback they take megabytes), so an upstream reading it slowly but
    steadily was still reading when the reply's timeout ran out: while
    this shrinks, the wait goes on. Where it cannot be read (not Linux),
    the reply has its timeout alone, as before."""

    def __init__(self, sock: Any, patience: float) -> None:
        self.fd = sock.fileno()
        self.patience = patience
        self.last = not_yet_taken(self.fd)
        # Seconds to wait for the reply before looking at the queue again:
        # the reply is given up a tenth of the timeout late at most.
        self.looks = looks(patience)

    def all_taken(self) -> bool:
        """Whether the upstream has taken all that was written."""
        return not_yet_taken(self.fd) == 0

    def shrank(self) -> bool:
        """Whether the upstream took more since the last call."""
        now, before = not_yet_taken(self.fd), self.last
        self.last = now
        return now is not None and before is not None and now < before


#: The most seconds a QUIT's reply is waited for before the close.
_QUIT_WAIT = 2.0
#: Outside tests (the standalone sink, a sink of the user's own), how long a
#: login the upstream refused for good is not tried again.
_LOGIN_RETRY_AFTER = 60.0
#: The most a reply may take from the socket, its lines together: an
#: upstream sending "250-..." lines for ever made the relay keep them all,
#: hundreds of megabytes.
_MAX_REPLY = 64 * 1024
#: What one read may bring of the replies after it, beyond `_MAX_REPLY`
#: (smtplib reads through a buffer of this size).
_READ_AHEAD = 8192
#: How far a wait may end after a reply's deadline: less than this is not
#: worth a system call to shorten the socket's timeout.
_DEADLINE_SLACK = 0.01
#: Most bytes given to one ``send`` (`Recording.send`), which waits at most
#: the timeout for the upstream to take some of them; over TLS, one record,
#: which is written whole or not at all.
_SEND_PIECE = 256 * 1024
_TLS_PIECE = 16 * 1024


def ca_file_problem(path: str) -> str | None:
    """Why the file at ``path`` cannot serve as the CA to trust, or None:
    it must exist and hold PEM certificates. Checked before anything
    connects: a key file, a DER file or an empty one given as the CA would
    otherwise fail every connection with OpenSSL's words alone."""
    if not os.path.isfile(path):
        return f"{path!r} is not a file"
    try:
        stat = os.stat(path)
    except OSError as error:
        return f"{path!r} cannot be read: {error.strerror or error}"
    # Loaded once per version of the file: settings are made for every test
    # with a marker, and a system's CA bundle takes some 20 ms to load.
    return _ca_file_problem(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _ca_file_problem(path: str, mtime_ns: int, size: int) -> str | None:
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as error:
        if error.reason:
            return f"{path!r} holds no PEM certificate ({error.reason})"
        return f"{path!r} {_pem_damage(path)}"
    except OSError as error:
        return f"{path!r} cannot be read: {error.strerror or error}"
    return None


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL
)


def _pem_damage(path: str) -> str:
    """What is wrong with a CA file OpenSSL refused without a reason (it
    says "PEM lib"): no certificate, one cut off, or which one is damaged."""
    import ssl

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    begun = data.count(b"-----BEGIN CERTIFICATE-----")
    found = _PEM_CERTIFICATE.findall(data)
    if not begun:
        return "holds no PEM certificate"
    if len(found) < begun:
        return "holds a PEM certificate with no END CERTIFICATE line (cut off?)"
    for number, block in enumerate(found, 1):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
                cadata=block.decode("ascii", "replace")
            )
        except ssl.SSLError:
            return (
                f"holds a PEM certificate that cannot be read: certificate "
                f"{number} of {len(found)} is damaged between its BEGIN and END "
                "lines"
            )
    return "holds PEM certificates that OpenSSL cannot read"


def _tls_context(
    ssl_context: ssl.SSLContext | None, ca_file: str | None
) -> ssl.SSLContext:
    import ssl

    if ssl_context is not None:
        return ssl_context
    # The system's trust store unless a CA file is given: a real upstream in
    # staging has a real certificate, a sink upstream gives its ca_path.
    return ssl.create_default_context(cafile=ca_file)


class _Connection:
    """An open, greeted (and, if asked, encrypted and authenticated)
    connection to an upstream; one transaction at a time."""

    def __init__(
        self,
        upstream: Upstream,
        timeout: float,
        hostname: str,
        ssl_context: ssl.SSLContext | None = None,
        on_client: Callable[[Any], None] | None = None,
        *,
        released: bool = False,
    ) -> None:
        """``on_client``: told the smtplib client before it connects (the
        relay thread's `Relayer.abort` closes its socket). ``released``:
        opened by `Mailbox.release`, not the automatic relay."""
        self.upstream = upstream
        # Past it a socket's timeout overflows the platform's clock: 1e10 s
        # means for ever, as it does to a wait.
        self.timeout = min(timeout, threading.TIMEOUT_MAX)
        #: The relay's test this connection was opened for (`Relayer.next_test`).
        self.test = 0
        #: Whether the sink is stopping (`Relayer`): `send_rest` then stops.
        self.stopping: Callable[[], bool] = _never
        #: Whether the upstream ended the connection (a 421, or the close
        #: alone) where a reply was awaited: not a timeout (`_broken`).
        self.ended_by_upstream = False
        self.client: Any = None
        url = upstream.url
        context = None
        if upstream.tls is not None:
            try:
                context = _tls_context(ssl_context, upstream.ca_file)
            except OSError as error:  # ssl.SSLError too
                # Checked when the settings were made; changed since.
                ca_file = upstream.ca_file
                problem = ca_file_problem(ca_file) if ca_file else None
                why = (
                    f"the CA file {problem or f'{ca_file!r} cannot be used: {error}'}"
                    if ca_file
                    else f"the system's CA certificates cannot be loaded: {error}"
                )
                raise RelayError(
                    url, "connect", None, f"{why}: nothing was sent"
                ) from None
        cls = _client_class(upstream.tls == "implicit")
        kwargs: dict[str, Any] = {"local_hostname": hostname, "timeout": self.timeout}
        if upstream.tls == "implicit":
            kwargs["context"] = context
        client = cls(**kwargs)
        # The name TLS checks the certificate against. smtplib sets it only
        # when the host is given to the constructor, which would connect
        # before anything can be recorded (tested by the STARTTLS and
        # implicit TLS release tests).
        client._host = upstream.host
        client.released = released
        self.client = client
        # Asked when needed: the Relayer sets `stopping` after this.
        client.stopping = self._is_stopping
        if on_client is not None:
            on_client(client)
        self.exchanges: list[Exchange] = client.exchanges
        # The first transaction's transcript starts with the greeting.
        self._fresh = True
        stage = "connect"
        try:
            code, text = client.connect(upstream.host, upstream.port)
            if code != 220:
                raise RelayError(url, "connect", code, _text(text), client.exchanges)
            stage = "EHLO"
            client.ehlo_or_helo_if_needed()
            if upstream.tls == "starttls":
                stage = "STARTTLS"
                if not client.has_extn("starttls"):
                    # smtplib's SMTPNotSupportedError, explained.
                    raise RelayError(
                        url,
                        "STARTTLS",
                        None,
                        "the upstream offers no STARTTLS (its EHLO reply does "
                        "not list it): nothing was sent; smtp:// is for an "
                        "upstream without TLS",
                        client.exchanges,
                    )
                client.starttls(context=context)
                # A new greeting over TLS (RFC 3207 4.2), checked as the
                # first was: ehlo() alone returns a refusal, and the relay
                # went on without one (its MAIL got "503 send HELO first").
                stage = "EHLO"
                client.ehlo_or_helo_if_needed()
            if upstream.username is not None:
                stage = "AUTH"
                client.login(upstream.username, upstream.password or "")
        except RelayError:
            # Refused with a reply (a greeting that is no 220, no STARTTLS or
            # AUTH offered): still in step, so QUIT before the close, as RFC
            # 5321 4.1.1.10 asks (an upstream logs a client that hangs up
            # without one as a suspect).
            self.close()
            raise
        except Exception as error:
            import smtplib

            # The same after a refusal (a 535 to the login, a 5xx to EHLO or
            # STARTTLS) or no AUTH offered; a 421 or a broken reply closed the
            # socket already.
            in_step = isinstance(error, (smtplib.SMTPResponseException, _NotOffered))
            raise self._broken(stage, error, client.exchanges, quit=in_step) from None

    def _is_stopping(self) -> bool:
        return self.stopping()

    def send(
        self,
        raw: bytes,
        mail_from: str,
        rcpt_to: Sequence[str],
        smtputf8: bool = False,
        body: str | None = None,
        *,
        dsn: DSN | None = None,
    ) -> Delivery:
        """One transaction, and more for recipients deferred with 452
        (`send_rest`). Raises RelayError; the connection stays usable after
        a refusal (it was reset) but not after a failure."""
        delivery = self._transaction(raw, mail_from, rcpt_to, smtputf8, body, dsn=dsn)
        return self.send_rest(delivery, raw, smtputf8, body, dsn)

    def send_rest(
        self,
        delivery: Delivery,
        raw: bytes,
        smtputf8: bool,
        body: str | None,
        dsn: DSN | None = None,
    ) -> Delivery:
        """``delivery`` with the recipients the upstream deferred with 452
        (too many recipients) sent in further transactions, as RFC 5321
        4.5.3.1.10 asks of a client, as long as each leaves fewer of them
        deferred (so this ends). A later transaction's refusal stays with
        its recipients; one that gets no reply leaves them refused with
        their 452.

        Each later transaction sends as many recipients as the one before
        took (an upstream taking one per message, and 300 recipients, were
        45,000 RCPT commands when each sent all the rest); a sink that
        stops (`stopping`) sends no more of them."""
        exchanges = self.exchanges  # kept when the connection closes
        exchanges.clear()  # what follows ``delivery.transcript``
        before = len(delivery.refused) + 1
        taken = max(len(delivery.accepted), 1)
        # Refused recipients stay in the order given, however batched.
        order = {entry[0]: i for i, entry in enumerate(delivery.refused)}
        while self.open and not self.stopping():
            rest = tuple(r for r, code, _ in delivery.refused if code == 452)
            if not rest or len(rest) >= before:
                break
            before = len(rest)
            batch = rest[:taken]
            kept = tuple(entry for entry in delivery.refused if entry[0] not in batch)
            try:
                more = self._transaction(
                    raw, delivery.mail_from, batch, smtputf8, body, dsn=dsn, rest=True
                )
            except RelayError as error:
                if error.code is not None:
                    kept += tuple((r, error.code, error.reply) for r in batch)
                    delivery = dataclasses.replace(
                        delivery, refused=tuple(sorted(kept, key=lambda e: order[e[0]]))
                    )
                break
            taken = max(len(more.accepted), 1)
            refused = sorted(kept + more.refused, key=lambda entry: order[entry[0]])
            delivery = dataclasses.replace(
                delivery,
                accepted=delivery.accepted + more.accepted,
                refused=tuple(refused),
                code=more.code if more.accepted else delivery.code,
                reply=more.reply if more.accepted else delivery.reply,
            )
        return dataclasses.replace(
            delivery, transcript=delivery.transcript + tuple(exchanges)
        )

    def _transaction(
        self,
        raw: bytes,
        mail_from: str,
        rcpt_to: Sequence[str],
        smtputf8: bool = False,
        body: str | None = None,
        *,
        dsn: DSN | None = None,
        rest: bool = False,
    ) -> Delivery:
        """One transaction. With ``rest`` (a later one of `send_rest`), the
        conversation goes on in the same transcript, and a refusal is
        returned as a Delivery that accepted no one (each recipient with the
        reply that refused it) rather than raised."""

        client = self.client
        url = self.upstream.url
        if not self._fresh and not rest:
            # This transaction's conversation only (a refusal's transcript
            # too): a long-lived relay connection must not keep them all.
            client.exchanges.clear()
        self._fresh = False

        def refusal(
            stage: str,
            code: int,
            text: bytes | str,
            taken: Sequence[str] = (),
            refused: Sequence[tuple[str, int, str]] = (),
        ) -> Delivery:
            self._reset()
            if not rest:
                raise RelayError(url, stage, code, _text(text), client.exchanges)
            gone = tuple((r, code, _text(text)) for r in taken)
            return Delivery(
                url, mail_from, (), gone + tuple(refused), code, _text(text), ()
            )

        stage = "MAIL"
        try:
            options = _mail_options(
                client,
                raw,
                mail_from=mail_from,
                rcpt_to=rcpt_to,
                smtputf8=smtputf8,
                body=body,
                dsn=dsn,
            )
            code, text = client.mail(mail_from, options)
            if code != 250:
                return refusal("MAIL", code, text, rcpt_to)
            stage = "RCPT"
            accepted: list[str] = []
            refused: list[tuple[str, int, str]] = []
            for recipient in rcpt_to:
                code, text = client.rcpt(
                    recipient, _rcpt_options(client, dsn, recipient)
                )
                if code in (250, 251):
                    accepted.append(recipient)
                else:
                    refused.append((recipient, code, _text(text)))
            if not accepted:
                _, code, reply = refused[-1]
                return refusal("RCPT", code, reply, (), refused)
            stage = "DATA"
            code, text = client.docmd("DATA")
            if code != 354:
                return refusal("DATA", code, text, accepted, refused)
            # Recorded before it goes: a failure to come shows it was sent.
            content = Exchange(
                "data", f"<message content: {len(raw)} bytes>", time.time()
            )
            client.exchanges.append(content)
            self._write_content(dot_stuffed(raw), client.exchanges, content)
            code, text = client.getreply()
            if code != 250:
                return refusal("DATA", code, text, accepted, refused)
        except RelayError:
            raise
        except _Unsendable as error:  # nothing sent: the connection stays
            raise RelayError(url, stage, None, str(error), client.exchanges) from None
        except Exception as error:
            raise self._broken(stage, error, client.exchanges) from None
        return Delivery(
            upstream=url,
            mail_from=mail_from,
            accepted=tuple(accepted),
            refused=tuple(refused),
            code=code,
            reply=_text(text),
            transcript=tuple(client.exchanges),
        )

    # -- pipelining (RFC 2920), for the relay thread --------------------------------

    @property
    def pipelining(self) -> bool:
        """Whether the upstream offered PIPELINING in its EHLO reply."""
        return bool(self.client.has_extn("pipelining"))

    def write_commands(
        self,
        raw: bytes,
        mail_from: str,
        rcpt_to: Sequence[str],
        smtputf8: bool = False,
        body: str | None = None,
        *,
        dsn: DSN | None = None,
        after: _InFlight | None = None,
    ) -> _InFlight:
        """Write MAIL, every RCPT and DATA at once, after the content of
        ``after`` (whose 354 came); `read_command_replies` reads their
        replies, after ``after``'s `read_final_reply`. Raises RelayError:
        nothing was written, or the connection is closed."""
        client = self.client
        try:
            options = _mail_options(
                client,
                raw,
                mail_from=mail_from,
                rcpt_to=rcpt_to,
                smtputf8=smtputf8,
                body=body,
                dsn=dsn,
            )
        except _Unsendable as error:
            raise RelayError(
                self.upstream.url, "MAIL", None, str(error), client.exchanges
            ) from None
        smtputf8 = "SMTPUTF8" in options
        exchanges: list[Exchange] = []
        if self._fresh:  # the first transaction's transcript has the greeting
            exchanges.extend(client.exchanges)
            client.exchanges.clear()
            self._fresh = False
        now = time.time()
        lines = [" ".join([f"MAIL FROM:<{mail_from}>", *options])]
        lines.extend(
            " ".join([f"RCPT TO:<{recipient}>", *_rcpt_options(client, dsn, recipient)])
            for recipient in rcpt_to
        )
        lines.append("DATA")
        exchanges.extend(Exchange("command", line, now) for line in lines)
        flight = _InFlight(raw, mail_from, tuple(rcpt_to), exchanges)
        text = "".join(f"{line}\r\n" for line in lines)
        # smtplib would encode commands as ASCII unless SMTPUTF8 is asked for.
        try:
            data = text.encode("utf-8" if smtputf8 else "ascii")
        except UnicodeEncodeError as error:
            raise _relay_error(
                self.upstream.url, "MAIL", error, exchanges, self.timeout
            ) from None
        if after is not None:
            if after.unsent and _peer_closed(client.sock):
                # Nothing goes: ``after`` fails with this at its final reply
                # (`read_final_reply`), this message with the connection.
                assert after.content is not None  # its 354 came
                after.lost, after.unsent = _CLOSED_AFTER_354, b""
                after.exchanges.remove(after.content)
                raise self._broken("MAIL", _Reason(_CLOSED_AFTER_354), exchanges)
            carried = bool(after.unsent)
            data, after.unsent = after.unsent + data, b""
            self._write("MAIL", data, exchanges)
            # The next reply is to ``after``'s content (`_SendQueue`).
            client.content_written = carried
            return flight
        self._write("MAIL", data, exchanges)
        return flight

    def read_command_replies(self, flight: _InFlight) -> None:
        """Read the replies to `write_commands`' lines; after 354, the
        content is ready to go (``flight.unsent``), with the next message's
        commands or by `read_final_reply`. Raises RelayError: refused (the
        transaction was reset) or failed (the connection is then closed)."""
        url = self.upstream.url
        exchanges = flight.exchanges
        commands = exchanges[-len(flight.rcpt_to) - 2 :]
        mail, data = commands[0], commands[-1]
        stage = "MAIL"
        code, text = self._reply(mail, stage, exchanges)
        refusal = None if code == 250 else (stage, code, _text(text))
        stage = "RCPT"
        for recipient, exchange in zip(flight.rcpt_to, commands[1:-1], strict=True):
            code, text = self._reply(exchange, stage, exchanges)
            if code in (250, 251):
                flight.accepted.append(recipient)
            else:
                flight.refused.append((recipient, code, _text(text)))
        if refusal is None and not flight.accepted:
            _, code, reply = flight.refused[-1]
            refusal = (stage, code, reply)
        stage = "DATA"
        code, text = self._reply(data, stage, exchanges)
        if code == 354 and refusal is not None:
            # A server that said 354 with no recipient: end the empty content.
            exchange = Exchange("data", "<message content: 0 bytes>", time.time())
            exchanges.append(exchange)
            self._write(stage, b".\r\n", exchanges)
            self._reply(exchange, stage, exchanges)
        elif code != 354 and refusal is None:
            refusal = (stage, code, _text(text))
        if refusal is not None:
            self._reset()
            stage, code, reply = refusal
            raise RelayError(url, stage, code, reply, exchanges)
        flight.content = Exchange(
            "data", f"<message content: {len(flight.raw)} bytes>", time.time()
        )
        exchanges.append(flight.content)
        flight.unsent = dot_stuffed(flight.raw)

    def read_final_reply(self, flight: _InFlight) -> Delivery:
        """The upstream's reply to the content (sent first if it is still
        held). Raises RelayError."""
        assert flight.content is not None
        if flight.lost is not None:
            raise RelayError(
                self.upstream.url, "DATA", None, flight.lost, flight.exchanges
            )
        if flight.unsent:
            data, flight.unsent = flight.unsent, b""
            self._write_content(data, flight.exchanges, flight.content)
        code, text = self._reply(flight.content, "DATA", flight.exchanges)
        if code != 250:
            raise RelayError(
                self.upstream.url, "DATA", code, _text(text), flight.exchanges
            )
        return Delivery(
            upstream=self.upstream.url,
            mail_from=flight.mail_from,
            accepted=tuple(flight.accepted),
            refused=tuple(flight.refused),
            code=code,
            reply=_text(text),
            transcript=tuple(flight.exchanges),
        )

    def _write(self, stage: str, data: bytes, exchanges: list[Exchange]) -> None:
        import smtplib

        client = self.client
        try:
            if client is None:
                raise smtplib.SMTPServerDisconnected("the connection was closed")
            client.send(data)
        except Exception as error:
            raise self._broken(stage, error, exchanges) from None

    def _write_content(
        self, data: bytes, exchanges: list[Exchange], content: Exchange
    ) -> None:
        """Write a message's content (``content`` in ``exchanges``), and
        nothing with it. Raises RelayError, saying the upstream does not
        have the message when that is certain: it closed the connection
        before the content (``content`` then leaves the transcript), or
        the write failed before the final dot went. Otherwise a failure
        to come means it may have kept it (`_relay_error`)."""
        import smtplib

        client = self.client
        if client is not None and _peer_closed(client.sock):
            exchanges.remove(content)
            raise self._broken("DATA", _Reason(_CLOSED_AFTER_354), exchanges)
        try:
            if client is None:
                raise smtplib.SMTPServerDisconnected("the connection was closed")
            client.send(data)
            client.content_written = True
        except _Reason as error:  # the sink stopped meanwhile
            raise self._broken("DATA", error, exchanges) from None
        except smtplib.SMTPServerDisconnected as error:
            cause = error.__context__
            if isinstance(cause, TimeoutError):
                # The connection is open: the upstream stopped reading.
                reason = (
                    f"timed out: the upstream took none of the message content "
                    f"for {self.timeout:g} s, so its end never went: the "
                    "upstream does not have the message"
                )
            else:
                reason = (
                    "the connection closed while the message content was being "
                    "sent, before its end: the upstream does not have the message"
                )
                if isinstance(cause, OSError):
                    reason += f" ({type(cause).__name__}: {cause})"
            raise self._broken("DATA", _Reason(reason), exchanges) from None

    def _reply(
        self, exchange: Exchange, stage: str, exchanges: list[Exchange]
    ) -> tuple[int, bytes]:
        """Read one reply (smtplib's own reader) into ``exchange``."""
        import smtplib

        client = self.client
        try:
            if client is None:
                raise smtplib.SMTPServerDisconnected("the connection was closed")
            code, text = client.read_reply()
        except Exception as error:
            raise self._broken(stage, error, exchanges) from None
        if b"\n" not in text:  # one line: most replies, four per message
            exchange.replies.append(
                f"{code} {text.decode('utf-8', 'replace')}".rstrip()
            )
        else:
            lines = text.decode("utf-8", "replace").split("\n")
            exchange.replies.extend(
                f"{code}{'-' if i < len(lines) - 1 else ' '}{line}".rstrip()
                for i, line in enumerate(lines)
            )
        try:
            _closing(client, code, text)
        except Exception as error:
            raise self._broken(stage, error, exchanges) from None
        return code, text

    def _broken(
        self,
        stage: str,
        error: BaseException,
        exchanges: Sequence[Exchange],
        quit: bool = False,
    ) -> RelayError:
        """Close the connection after ``error`` at ``stage`` (it cannot be
        trusted to go on); the RelayError that says what happened. An error
        no upstream or network causes is a bug of the sink's own: it read
        as the upstream's failure ("AttributeError: ..."), its traceback
        gone. It says so now, and its traceback is logged, the password
        masked; it is not raised as it is, as pytest's --showlocals would
        print the password of a frame that holds it (the login's)."""
        import smtplib

        reader = getattr(self.client, "reader", None)
        silent = isinstance(reader, _ReplyReader) and reader.received == 0
        self.ended_by_upstream = isinstance(error, smtplib.SMTPServerDisconnected) or (
            isinstance(error, smtplib.SMTPResponseException) and error.smtp_code == 421
        )
        self.close(quit=quit)
        if not isinstance(error, _UPSTREAMS_DOING):
            secrets = _log_bug(self.upstream, error)
            reason = mask_anywhere(
                "a bug in pytest-smtpsink's relay, not the upstream's doing: "
                f"{type(error).__name__}: {error} (its traceback is logged on "
                "the pytest_smtpsink logger: please report it)",
                secrets,
            )
            return RelayError(self.upstream.url, stage, None, reason, exchanges)
        return _relay_error(
            self.upstream.url, stage, error, exchanges, self.timeout, silent=silent
        )

    def _reset(self) -> None:
        try:
            self.client.rset()
        except _UPSTREAMS_DOING:
            # A refused or unanswered RSET: the next message goes on a new
            # connection. (A bug is raised: it was a silent reconnect.)
            self.close(quit=False)

    @property
    def open(self) -> bool:
        return self.client is not None and self.client.sock is not None

    def said_something(self) -> bool:
        """Whether the upstream sent anything, or closed the connection,
        while it was idle (no command outstanding): a 421 as it closes the
        connection (its idle timeout, RFC 5321 3.8), or the close alone.
        Either way the connection takes no more mail, and what is sent on
        it next would get that 421, or nothing, as its answer."""
        client = self.client
        reader = getattr(client, "file", None) if client is not None else None
        raw = getattr(reader, "raw", None)
        if client is None or client.sock is None or not isinstance(raw, _ReplyReader):
            return _peer_closed(client.sock if client is not None else None)
        assert reader is not None
        raw.polling = True
        try:
            return bool(reader.peek(1)) or raw.ended
        except OSError:  # reset
            return True
        finally:
            raw.polling = False

    def close(self, quit: bool = True) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        if quit and client.sock is not None:
            # The upstream may have gone first: nothing left to close politely.
            with contextlib.suppress(Exception):
                # Its reply waited for briefly: one that refused the login
                # and then said nothing held the relay (every message queued
                # behind) for the whole timeout.
                client.timeout = min(client.timeout, _QUIT_WAIT)
                client.quit()
        client.close()


@dataclasses.dataclass
class _InFlight:
    """A pipelined transaction: its commands written, its replies to come."""

    raw: bytes
    mail_from: str
    rcpt_to: tuple[str, ...]
    exchanges: list[Exchange]
    accepted: list[str] = dataclasses.field(default_factory=list)
    refused: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    content: Exchange | None = None
    """The content's exchange, once the 354 came: the final reply goes there."""
    unsent: bytes = b""
    """The content (dot-stuffed) while it waits to be written."""
    lost: str | None = None
    """Why the content was never written, when the upstream closed the
    connection before it (`read_final_reply` raises it)."""


_CLOSED_AFTER_354 = (
    "the upstream closed the connection after its 354, before the message "
    "content was sent: it does not have the message"
)


def _never() -> bool:
    return False


def _peer_closed(sock: Any) -> bool:
    """Whether the upstream has closed the connection, as far as can be
    seen without waiting: a plain socket at its end, or reset. Checked
    before a message's content goes, so that an upstream that hung up
    after its 354 is not reported as one that may have kept the message.
    A TLS socket's end cannot be peeked at through its records: False."""
    import socket
    import ssl

    from ._listening import readable_now

    if sock is None or isinstance(sock, ssl.SSLSocket):
        return False
    try:
        return readable_now(sock) and sock.recv(1, socket.MSG_PEEK) == b""
    except ValueError:  # closed already
        return False
    except OSError:  # reset
        return True


def _deferred(flight: _InFlight) -> bool:
    """Whether recipients of an accepted transaction got 452 (too many
    recipients): `_Connection.send_rest` sends them on."""
    return bool(flight.accepted) and any(code == 452 for _, code, _ in flight.refused)


def _content_size(raw: bytes) -> int:
    """The size SIZE= declares (RFC 1870): the content as `dot_stuffed`
    sends it, but without the stuffed dots and the final dot."""
    return len(raw) + (2 if raw and not raw.endswith(b"\r\n") else 0)


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return reply.replace("\n", " / ")


#: smtplib's limit on a reply line (its private ``_MAXLINE``).
_MAXLINE = 8192


#: The mechanisms the relay logs in with, in the order it tries them (see
#: the relay client's ``login`` for why PLAIN comes first).
_LOGIN_ORDER = ("PLAIN", "LOGIN", "CRAM-MD5")


class _Reason(Exception):
    """A failure whose text is the whole reason (no exception name)."""


def _quoted_forms(text: str) -> set[str]:
    """``text`` as reprs write it, inside a longer text, one repr or two deep:
    backslashes doubled, either quote escaped or not (a repr picks its quote
    by the whole text), other characters escaped as `repr`, `ascii` and a
    bytes repr do."""
    forms = {text}
    for _ in range(2):
        for form in list(forms):
            slashed = form.replace("\\", "\\\\")
            forms.update(
                {
                    slashed,
                    slashed.replace("'", "\\'"),
                    slashed.replace('"', '\\"'),
                    repr(form)[1:-1],
                    ascii(form)[1:-1],
                    repr(form.encode("utf-8", "surrogateescape"))[2:-1],
                }
            )
    return forms


def _log_bug(upstream: Upstream, error: BaseException) -> list[str]:
    """Log ``error``'s traceback for a bug report, the upstream's password
    masked should a bug put it in a message (a log shows no frame's
    locals); returns every form of that password, to mask other text."""
    # As given, in base64, and as a PLAIN response; and as a bug's message
    # may quote it, in a repr of a repr (a KeyError's of a text that holds
    # it, then the outcome's of the error).
    password = upstream.password
    secrets = (
        [
            *credential_forms({upstream.username or "": password}, None),
            *_quoted_forms(password),
        ]
        if password
        else []
    )
    LOG.error(
        "the relay to %s failed; please report this bug in pytest-smtpsink:\n%s",
        upstream.url,
        mask_anywhere("".join(traceback.format_exception(error)), secrets),
    )
    return secrets


class _NotOffered(_Reason):
    """What the relay needs is not offered (the login's mechanisms): found
    before anything was sent for it, so the connection is still in step."""


#: What an upstream, or the network, makes the relay's client raise (smtplib's
#: errors are OSErrors, as are ssl's and timeouts; UnicodeError: text the
#: upstream's reply or the envelope holds that cannot be encoded;
#: binascii.Error: an AUTH challenge that is no base64), which
#: `_relay_error` explains; anything else is a bug (`Connection._broken`).
_UPSTREAMS_DOING = (OSError, UnicodeError, binascii.Error, _Reason)


_STOPPED_WHILE_TAKEN = (
    "the sink stopped while the upstream was still taking the message "
    "content: the upstream does not have the message"
)


class _NoReply(_Reason):
    """What the upstream sent is no SMTP reply (RFC 5321 4.2): the
    conversation cannot go on, whatever else arrives."""


class _Unsendable(_Reason):
    """The upstream lacks an extension the message needs, or takes no
    message this large: nothing is sent, the connection stays usable."""


def _mail_options(
    client: Any,
    raw: bytes,
    *,
    mail_from: str,
    rcpt_to: Sequence[str],
    smtputf8: bool,
    body: str | None,
    dsn: DSN | None = None,
) -> list[str]:
    """MAIL's parameters for this upstream; `_Unsendable` if it cannot take
    the message as it is.

    SMTPUTF8 goes when the message asked for it or an address needs it and
    the upstream offers it; a message that asked but is ASCII in its
    envelope and header goes without it (RFC 6531 3.2 ties the need to
    those). 8-bit content needs 8BITMIME (RFC 6152 3), declared with
    ``BODY=8BITMIME`` even when the captured MAIL did not declare it, or
    said 7BIT (the relay is a client of its own, bound by the RFC): to an
    upstream without it, converting it to 7 bits would change the captured
    bytes, so it is not sent.

    SIZE (RFC 1870) declares the content's size; over the maximum the
    upstream's EHLO gives, the message is not sent at all: the upstream
    would refuse it only after reading all of it.

    The captured DSN requests (RFC 3461: RET, ENVID here, NOTIFY and ORCPT
    in `_rcpt_options`) go on to an upstream that offers DSN (5.2.1); one
    without it gets the message without them (5.2.2), as the sink sends no
    DSN of its own.
    """
    # Looked for only where a line starts with a dot at all: the pattern's
    # lookbehind made a search of 20 MB take 0.4 s.
    smuggled = (
        _DOT_LINE_AFTER_BARE_END.search(raw) if b"\n." in raw or b"\r." in raw else None
    )
    if smuggled is not None:
        # The sink ends DATA at <CRLF>.<CRLF> only, and keeps such a line
        # as content; the relay stuffs dots after a CRLF only (the bytes
        # stay the captured ones), so this one would go as it is.
        bare = "LF" if raw[smuggled.start() : smuggled.start() + 1] == b"\n" else "CR"
        # Where, by the bytes around it: the relayed bytes start with a
        # Received header of the relay's, so a position would not be the
        # captured message's.
        around = raw[max(0, smuggled.start() - 12) : smuggled.end()]
        raise _Unsendable(
            f"the content has a line of only a dot after a bare {bare} "
            f"({around!r}): an upstream that takes a bare {bare} for a "
            "line end would read it as the end of the message, and what follows "
            "as SMTP commands of its own (SMTP smuggling): not sent"
        )
    options: list[str] = []
    if client.has_extn("size"):
        size = _content_size(raw)
        limit = client.esmtp_features["size"].strip()
        # "SIZE" alone or "SIZE 0": no fixed maximum (RFC 1870). A value
        # that is no number is none either: isdigit() alone takes "²",
        # which int() refuses.
        if limit.isascii() and limit.isdigit() and 0 < int(limit) < size:
            raise _Unsendable(
                f"the message is {size} bytes, more than the {int(limit)} bytes "
                f"the upstream takes (its EHLO says SIZE {limit}): not sent"
            )
        options.append(f"SIZE={size}")
    wide = next((a for a in (mail_from, *rcpt_to) if not a.isascii()), None)
    if (smtputf8 or wide is not None) and client.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    elif smtputf8 or wide is not None:
        lacking = "the upstream does not offer SMTPUTF8, which the message needs"
        if wide is not None:
            raise _Unsendable(f"{lacking}: its envelope has the address {wide}")
        header = raw.split(b"\r\n\r\n", 1)[0]
        if not header.isascii():
            raise _Unsendable(f"{lacking}: its header has non-ASCII text")
    if client.has_extn("8bitmime"):
        if not raw.isascii():
            body = "8BITMIME"  # a captured BODY=7BIT was not true either
        if body is not None:
            options.append(f"BODY={body}")
    elif not raw.isascii() and "SMTPUTF8" not in options:  # it carries 8-bit text
        raise _Unsendable(
            "the upstream does not offer 8BITMIME, and the content has 8-bit "
            "bytes: not sent (made 7-bit, it would not be the captured bytes)"
        )
    if dsn is not None and client.has_extn("dsn"):
        if dsn.ret is not None:
            options.append(f"RET={dsn.ret}")
        if dsn.envid is not None:
            options.append(f"ENVID={_xtext(dsn.envid)}")
    return options


#: A line of only a dot that starts after a bare LF or CR (not stuffed:
#: `_content.dot_stuffed_parts` stuffs after a CRLF), and ends with a line
#: break of any kind or the content's end.
_DOT_LINE_AFTER_BARE_END = re.compile(rb"(?:(?<!\r)\n|\r(?!\n))\.(?:[\r\n]|\Z)")


def _rcpt_options(client: Any, dsn: DSN | None, recipient: str) -> list[str]:
    """RCPT's parameters for ``recipient``: its captured NOTIFY and ORCPT,
    to an upstream that offers DSN (see `_mail_options`)."""
    wanted = dsn.recipients.get(recipient) if dsn is not None else None
    if wanted is None or not client.has_extn("dsn"):
        return []
    options = [f"NOTIFY={','.join(wanted.notify)}"] if wanted.notify else []
    if wanted.orcpt is not None:
        kind, _, address = wanted.orcpt.partition(";")
        options.append(f"ORCPT={kind};{_xtext(address)}")
    return options


def _xtext(text: str) -> str:
    """``text`` as RFC 3461 xtext: "+" and two hex digits for "+", "=",
    and each octet of anything but printable ASCII in UTF-8 (the sink keeps
    the values decoded as UTF-8, octets that were not with surrogateescape:
    they go back as they came)."""
    return "".join(
        char
        if "!" <= char <= "~" and char not in "+="
        else "".join(f"+{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
        for char in text
    )


def _checked_reply(
    client: Any, read: Callable[[], tuple[int, bytes]]
) -> tuple[int, bytes]:
    """``read()``'s reply, or `_NoReply` (the connection closed).

    smtplib's reader answers a line without a number with code -1, and a
    line over 8192 bytes by raising a 500 of its own: taken as replies,
    they would read as the upstream's refusal, and a -1 to MAIL in a
    pipelined group sent an empty message on after the 354 to DATA.
    """
    import smtplib

    lines = client.file
    if isinstance(lines, _ReplyLines):
        lines.malformed = lines.codeless = None
    try:
        code, text = read()
    except smtplib.SMTPResponseException:  # raised by the reader, not sent
        client.close()
        raise _NoReply(
            f"the upstream sent a reply line longer than {_MAXLINE} bytes"
        ) from None
    # Quoted in the outcome, a report and saved files: masked as replies
    # are (`_masked`), whole and then cut, so that no piece of a password
    # that an upstream echoed in a broken line is kept.
    mask: Callable[[str], str] = getattr(client, "_mask", None) or str
    if isinstance(lines, _ReplyLines) and lines.malformed is not None:
        client.close()
        shown = mask(_text(lines.malformed.rstrip(b"\r\n")))[:200]
        raise _NoReply(
            "the upstream's answer is no SMTP reply: its code is followed by "
            f"neither a space nor '-' ({shown!r})"
        )
    if not 200 <= code <= 599:
        client.close()
        shown = mask(_text(text))[:200]
        if code < 0 and isinstance(lines, _ReplyLines) and lines.codeless:
            whole = mask(_text(lines.codeless.rstrip(b"\r\n")))[:200]
            raise _NoReply(
                "the upstream's answer is no SMTP reply: it does not start "
                f"with a 3-digit code ({whole!r})"
            )
        if code < 0:  # smtplib keeps only what follows the first 4 characters
            raise _NoReply(
                "the upstream's answer is no SMTP reply: it does not start "
                f"with a 3-digit code (the rest of the line: {shown!r})"
            )
        raise _NoReply(
            f"the upstream's answer is no SMTP reply: {code} is no reply code "
            f"(2xx to 5xx): {code} {shown}"
        )
    return code, text


def _closing(client: Any, code: int, text: bytes) -> None:
    """A 421 reply is the upstream closing the connection (RFC 5321 3.8),
    whatever the command: raise it as the answer, before anything more is
    sent or read on a connection that is gone (which would fail with a
    disconnection instead, and the 421 would be lost)."""
    import smtplib

    if code == 421:
        client.close()
        raise smtplib.SMTPResponseException(code, text)


#: OpenSSL's verify codes for a certificate no trusted CA signed:
#: DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
#: UNABLE_TO_GET_ISSUER_CERT_LOCALLY.
_UNTRUSTED = frozenset({18, 19, 20})
#: Global inline flags at the front of a pattern ("(?i)", "(?aiLmsux)").
_INLINE_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))+")
#: What OpenSSL says when the first bytes back are no TLS record.
_PLAIN_ANSWER = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"}
)


def _relay_error(
    url: str,
    stage: str,
    error: BaseException,
    exchanges: Sequence[Exchange],
    timeout: float | None = None,
    *,
    silent: bool = False,
) -> RelayError:
    """``error`` at ``stage`` as a RelayError that says what happened;
    ``silent``: the upstream sent not a byte on the connection."""
    import smtplib
    import ssl

    if isinstance(error, _Reason):
        return RelayError(url, stage, None, str(error), exchanges)
    if isinstance(error, smtplib.SMTPResponseException):
        return RelayError(
            url, stage, error.smtp_code, _text(error.smtp_error), exchanges
        )
    last = exchanges[-1] if exchanges else None
    # The content went and no reply came: the upstream may have kept it (a
    # retry could deliver it twice, RFC 5321 6.1), unlike any earlier failure.
    unanswered = last is not None and last.kind == "data" and not last.replies
    after = " to the message content" if unanswered else ""
    maybe = " (it may have kept the message)" if unanswered else ""
    # smtplib's reader wraps a timeout as "Connection unexpectedly closed:
    # timed out", which reads as the upstream closing: say what happened.
    if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
        within = f" within {timeout:g} s" if timeout is not None else ""
        handshake = isinstance(error, TimeoutError) and "handshake" in str(error)
        if handshake and stage in ("connect", "STARTTLS"):
            # ssl's: connected (or STARTTLS answered), no TLS reply. A port
            # that greets in plain text answers the hello at once (an
            # SSLError, below): this one sent nothing back.
            reason = (
                f"timed out: the TLS handshake did not finish{within} (no "
                "answer to the TLS hello)"
            )
        elif isinstance(error, TimeoutError) and stage == "connect":
            reason = f"timed out: could not connect{within}"
        elif stage == "connect":
            reason = f"timed out: no greeting{within}"
            if silent and not url.startswith("smtps://"):
                reason += (
                    " (not a byte came: an implicit-TLS port greets only after "
                    "a TLS handshake, smtps://, tls='implicit')"
                )
        else:
            reason = f"timed out: no reply{after}{within}{maybe}"
        return RelayError(url, stage, None, reason, exchanges)
    if (
        isinstance(error, ssl.SSLError)
        and stage == "connect"
        and url.startswith("smtps://")
        and error.reason in _PLAIN_ANSWER
    ):
        # The upstream answered the TLS hello at once, in plain text (its
        # 220 greeting, or a 500 to the hello): OpenSSL's words for that
        # name no cause.
        reason = (
            f"{type(error).__name__}: {error} (the upstream answered in plain "
            "text: a port that greets in plain text takes smtp+starttls://, "
            "tls='starttls', or smtp:// if it offers no STARTTLS)"
        )
        return RelayError(url, stage, None, reason, exchanges)
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"{type(error).__name__}: {error}"
        # Self-signed, or signed by no CA in the trust store: the usual
        # cause is a test CA the relay was not told about.
        if error.verify_code in _UNTRUSTED:
            reason += (
                " (trust the upstream's CA with ca_file= for release, "
                "?cafile= in the relay URL)"
            )
        return RelayError(url, stage, None, reason, exchanges)
    if isinstance(error, smtplib.SMTPServerDisconnected):
        # smtplib's "Connection unexpectedly closed" names neither side.
        reason = "the upstream closed the connection without a reply"
        if unanswered:
            reason = (
                "the connection closed after the message content, before the "
                f"upstream's reply{maybe}"
            )
        cause = error.__context__
        if isinstance(cause, OSError):  # a reset, rather than an orderly close
            reason += f" ({type(cause).__name__}: {cause})"
        if stage == "connect" and silent and not url.startswith("smtps://"):
            # A sink with tls='implicit' waits 2 s for a TLS hello and
            # closes: before the greeting's timeout, so the hint that
            # goes with a silent port's timeout never came.
            reason += (
                " and without a byte (an implicit-TLS port closes on a client "
                "that starts no TLS handshake: smtps://, tls='implicit')"
            )
        return RelayError(url, stage, None, reason, exchanges)
    if isinstance(error, binascii.Error):
        # smtplib decodes the upstream's AUTH challenge: "Error: Incorrect
        # padding" named neither.
        reason = f"the upstream's AUTH challenge is not base64 ({error})"
        return RelayError(url, stage, None, reason, exchanges)
    if isinstance(error, UnicodeError) and stage == "AUTH":
        # Its text quotes the character and where it is in the string,
        # which at this stage may be the password.
        reason = "a user name or password the relay could not encode"
        return RelayError(url, stage, None, reason, exchanges)
    reason = str(error) or type(error).__name__
    return RelayError(url, stage, None, f"{type(error).__name__}: {reason}", exchanges)


def deliver(
    raw: bytes,
    mail_from: str,
    rcpt_to: Sequence[str],
    upstream: Upstream,
    *,
    hostname: str,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    smtputf8: bool = False,
    body: str | None = None,
    dsn: DSN | None = None,
) -> Delivery:
    """One connection, one transaction, QUIT. Raises `RelayError`."""
    connection = _Connection(upstream, timeout, hostname, ssl_context, released=True)
    try:
        delivery = connection.send(raw, mail_from, rcpt_to, smtputf8, body, dsn=dsn)
        said = len(connection.exchanges)
    finally:
        connection.close()
    # The whole conversation, QUIT included.
    quit = tuple(connection.exchanges[said:])
    return dataclasses.replace(delivery, transcript=delivery.transcript + quit)


@dataclasses.dataclass(frozen=True)
class DSN:
    """A captured message's DSN requests (RFC 3461), to pass on."""

    ret: str | None
    envid: str | None
    recipients: dict[str, RecipientDSN]
    """Each captured recipient's NOTIFY and ORCPT, by address."""

    @classmethod
    def of(cls, envelope: Envelope) -> DSN | None:
        """The requests of ``envelope``; None when it made none."""
        recipients: dict[str, RecipientDSN] = {}
        for address, wanted in zip(envelope.rcpt_to, envelope.rcpt_dsn, strict=False):
            if (
                wanted.notify or wanted.orcpt is not None
            ) and address not in recipients:
                recipients[address] = wanted
        if envelope.dsn_ret is None and envelope.dsn_envid is None and not recipients:
            return None
        return cls(envelope.dsn_ret, envelope.dsn_envid, recipients)


def body_option(options: Sequence[str]) -> str | None:
    """The BODY= value of a MAIL FROM's parameters, if any."""
    for option in options:
        if option.upper().startswith("BODY="):
            return option.split("=", 1)[1].upper()
    return None


# -- the automatic relay ---------------------------------------------------------------

#: A pipelined message awaiting its final reply: the message, the recipients
#: relayed, the connection and the transaction.
_Flight = tuple["Message", tuple[str, ...], _Connection, _InFlight]


def _a_label(label: str) -> str:
    """A Unicode label's A-label (Punycode alone, as `unicode_domain` reads
    them back: ``straße`` is ``xn--strae-oqa``, as IDNA 2008 writes it, not
    IDNA 2003's ``strasse``)."""
    if label.isascii():
        return label
    try:
        return "xn--" + label.encode("punycode").decode("ascii")
    except UnicodeError:
        return label


class Relayer:
    """The relay of one sink: `take` on the loop thread, sending on its own."""

    def __init__(self, settings: SinkSettings, store: Store, name: str) -> None:
        assert settings.relay is not None
        assert settings.relay_to is not None
        self.upstream = parse_upstream(settings.relay)
        self.pattern = re.compile(settings.relay_to, re.IGNORECASE)
        self.timeout = settings.relay_timeout
        self.hostname = settings.hostname
        self._store = store
        self._queue: queue.SimpleQueue[tuple[Message, tuple[str, ...], int] | None] = (
            queue.SimpleQueue()
        )
        self._stopping = False
        # Whether `abort` cut the message in flight, and the client of the
        # connection it would cut (the relay thread's latest).
        self._aborted = False
        self._client: Any = None
        # Bumped when a test begins (`next_test`): a connection opened for
        # an earlier test is not used for its mail (see _step).
        self._test = 0
        # Bumped when a test ends (`end_of_test`): mail queued before that
        # and not yet on its way is not relayed (`_test_ended`). Apart from
        # `_test`: mail a fixture sends before the test's first mailbox is
        # made (a session fixture that seeds data) is the test's to relay.
        self._era = 0
        # The login the upstream refused for good (5xx): in which test (0:
        # no test began, the standalone sink or a sink of the user's own),
        # when, and why; not tried again in that test, or for
        # `_LOGIN_RETRY_AFTER` seconds outside tests (`_refused_login`).
        self._login_refused: tuple[int, float, RelayError] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the sink's loop thread: never blocks ------------------------------------

    def take(self, message: Message) -> None:
        """Decide and queue; called before the message is made visible."""
        url = self.upstream.url
        matched = tuple(r for r in message.envelope.rcpt_to if self._matches(r))
        if not matched:
            message.relay = RelayOutcome(
                "not-matched", url, reply=self._near_miss_hint(message)
            )
            return
        hops = _received_headers(message.raw)
        if hops >= MAX_HOPS:
            # Sinks relaying to each other (or a chain back to this one):
            # each hop adds a Received: header, as RFC 5321 6.3 counts them.
            message.relay = RelayOutcome(
                "failed",
                url,
                matched,
                reply=f"not relayed: a mail loop ({hops} Received: headers, at most "
                f"{MAX_HOPS - 1} relayed on)",
            )
            return
        message.relay = RelayOutcome("pending", url, matched)
        self._queue.put((message, matched, self._era))

    def _near_miss_hint(self, message: Message) -> str:
        """`_near_miss`, or nothing if the pattern cannot be widened: a
        hint, on the SMTP path, must never refuse the mail it is about (a
        verbose pattern's "# comment" swallowed the wrapping's ")", and
        the message was refused with a 500 and lost)."""
        try:
            return self._near_miss(message)
        except re.error:
            return ""

    def _near_miss(self, message: Message) -> str:
        """Why a recipient the pattern is found in was not relayed: it must
        match the whole address (a domain's pattern alone never does)."""
        given = self.pattern.pattern
        # Inline flags stay in front ("(?i)partner\.example"): ".*(?i)..."
        # is no regular expression. On the SMTP path: never an error.
        flags = _INLINE_FLAGS.match(given)
        head = flags.group() if flags else ""
        body = given[len(head) :]
        for recipient in message.envelope.rcpt_to:
            found = self.pattern.search(recipient)
            if not found:
                continue
            at = recipient.rfind("@")
            widened: tuple[str, ...] = (
                f".*(?:{body})",
                f"(?:{body}).*",
                f".*(?:{body}).*",
            )
            matched_domain = recipient[max(at + 1, found.start()) : found.end()]
            # The domain goes on past a match that names a whole domain
            # (partner.example.evil for partner\.example): another domain,
            # which the allowlist rightly leaves out; "add .*" would let the
            # look-alike in. A label alone ("@partner") is the start of a
            # domain the user has yet to write out.
            if (
                at < found.end() < len(recipient)
                and "." in matched_domain
                and not re.fullmatch(head + widened[0], recipient, re.IGNORECASE)
            ):
                return (
                    f'relay_to "{given}" is found in {recipient}, but its '
                    f"domain goes on past the match ({recipient[at + 1 :]}): "
                    "another domain, not relayed"
                )
            if (
                at + 1 < found.start()
                and recipient[found.start() - 1] != "."
                and "." in matched_domain
            ):
                # The mirror case: a domain's pattern found inside a label
                # (partner\.example in evilpartner.example), the look-alike
                # the docs warn of. Said first, then the pattern for that
                # domain, for a pattern cut short (artner\.example).
                domain = recipient[at + 1 :]
                return (
                    f'relay_to "{given}" is found in {recipient}, but its '
                    f"domain starts before the match ({domain}): another "
                    f'domain, not relayed; if {domain} is meant, "{head}.*@'
                    f'{_domain_pattern(domain)}" would'
                )
            if at >= 0 and found.end() > at + 1:
                # The match reaches into the domain: the advice keeps the
                # domain whole, after its "@" (".*partner\.example" let in
                # evilpartner.example and sub.notpartner.example), the rest
                # of it written out ("@partner": ".*@partner\.example").
                rest = _domain_pattern(recipient[found.end() :])
                if found.start() > at + 1:  # inside a label: this domain
                    widened = (".*@" + _domain_pattern(recipient[at + 1 :]),)
                else:
                    lead = ".*@" if found.start() == at + 1 else ".*"
                    widened = ((lead if found.start() else "") + f"(?:{body}){rest}",)
            for wider in widened:
                try:
                    matches = re.fullmatch(head + wider, recipient, re.IGNORECASE)
                except re.error:
                    return ""
                if matches:
                    # Shown as written (a --smtpsink-relay-to, an ini file),
                    # not as a Python repr with its backslashes doubled.
                    # The group only where it changes the meaning ("a|b").
                    shown = head + (
                        wider if "|" in body else wider.replace(f"(?:{body})", body)
                    )
                    return (
                        f'relay_to "{given}" is found in {recipient} but must '
                        f'match the whole address: "{shown}" would'
                    )
        return ""

    def _matches(self, recipient: str) -> bool:
        """Whether ``recipient`` matches ``relay_to`` in either spelling of
        its domain: ``straße.de`` or its A-labels ``xn--strae-oqa.de``, as
        mailboxes take them for one (an application may send either)."""
        if self.pattern.fullmatch(recipient):
            return True
        local, at, domain = recipient.rpartition("@")
        if not at:
            return False
        domain = domain.lower()
        other = unicode_domain(domain)
        if other == domain:  # no A-label to read: write the Unicode ones so
            other = ".".join(map(_a_label, domain.split(".")))
        return other != domain and bool(self.pattern.fullmatch(f"{local}@{other}"))

    def next_test(self) -> None:
        """A new test begins: its mail goes on a connection of its own, so
        that the upstream's session is in that test's view of the upstream
        (and a rule the test sets on the upstream, hide("PIPELINING") say,
        meets the relay's EHLO), not on a connection still open from the
        test before."""
        self._test += 1

    def end_of_test(self) -> None:
        """A test ends: its mail not yet on its way is not relayed
        (`_test_ended`); sent later, it reached the upstream in the next
        test, whose view of the upstream listed it as that test's."""
        self._era += 1

    # -- the relay thread -------------------------------------------------------------

    def _run(self) -> None:
        connection: _Connection | None = None
        # With PIPELINING, the message whose final reply is still to come:
        # it is read together with the next message's command replies, one
        # wait for both, or at once when nothing else is queued.
        flight: _Flight | None = None
        while True:
            idle = False
            try:
                if flight is not None:
                    item = self._queue.get(timeout=_PIPELINE_WAIT)
                else:
                    item = self._queue.get(timeout=_LINGER if connection else None)
            except queue.Empty:
                idle, item = True, None
            if item is None and not idle:
                break
            connection, flight = self._turn(item, connection, flight)
        if flight is not None:  # stopping: its final reply, as when idle
            connection, flight = self._turn(None, connection, flight)
        if connection is not None:
            connection.close()

    def _turn(
        self,
        item: tuple[Message, tuple[str, ...], int] | None,
        connection: _Connection | None,
        flight: _Flight | None,
    ) -> tuple[_Connection | None, _Flight | None]:
        """Relay the queued ``item``, or, if None (the queue stayed empty),
        settle what is in flight or let the connection go."""
        try:
            if item is None:
                return self._idle(connection, flight)
            message, matched, era = item
            if era != self._era:
                # Queued in a test that has ended (a slow upstream): relayed
                # now, it reached the upstream in the next test, whose view
                # of the upstream listed it as that test's mail.
                self._test_ended(message, matched)
                return connection, flight
            return self._step(message, matched, connection, flight, era)
        except Exception as error:
            # A bug, not the upstream's doing (that is a RelayError): the
            # messages in hand fail saying so, and the thread lives on for
            # the rest, instead of leaving every later message pending for
            # ever.
            in_hand = [] if item is None else [item[:2]]
            if flight is not None:
                in_hand.append(flight[:2])
            self._bug(error, in_hand)
            if connection is not None:
                connection.close(quit=False)
            return None, None

    def _bug(
        self, error: Exception, in_hand: list[tuple[Message, tuple[str, ...]]]
    ) -> None:
        """Fail the messages in hand with ``error``, and log its traceback
        for a bug report (the upstream's password masked, should a bug put
        it in a message)."""
        secrets = _log_bug(self.upstream, error)
        for message, matched in in_hand:
            if message.relay is None or not message.relay.done:
                reply = mask_anywhere(f"the relay failed: {error!r}", secrets)
                self._finish(
                    message,
                    RelayOutcome("failed", self.upstream.url, matched, reply=reply),
                )

    def _idle(
        self, connection: _Connection | None, flight: _Flight | None
    ) -> tuple[_Connection | None, _Flight | None]:
        """The queue stayed empty for a while (see _LINGER and
        _PIPELINE_WAIT): settle the message in flight, else let the idle
        connection go."""
        if flight is not None:
            self._settle(flight)
            return connection, None
        assert connection is not None
        connection.close()
        return None, None

    def _step(
        self,
        message: Message,
        matched: tuple[str, ...],
        connection: _Connection | None,
        flight: _Flight | None,
        era: int,
    ) -> tuple[_Connection | None, _Flight | None]:
        """Relay ``message`` (pipelined behind ``flight`` if it can be)."""
        if connection is not None and connection.test != self._test:
            if flight is not None:
                self._settle(flight)
                flight = None
            connection.close()
            connection = None
        if self._stopping:
            self._stopped(message, matched)
            return connection, flight
        if (
            connection is not None
            and connection.open
            and flight is not None
            and connection.pipelining
        ):
            return self._pipelined(message, matched, connection, flight, era)
        if flight is not None:
            self._settle(flight)
        return self._relay(message, matched, connection, era)

    def _settle(self, flight: _Flight) -> None:
        """Read a pipelined message's final reply; record its outcome."""
        message, matched, connection, transaction = flight
        try:
            delivery = connection.read_final_reply(transaction)
            if _deferred(transaction) and connection.open:
                delivery = connection.send_rest(
                    delivery,
                    transaction.raw,
                    message.envelope.smtputf8,
                    body_option(message.envelope.mail_options),
                    DSN.of(message.envelope),
                )
        except RelayError as error:
            self._failed(message, matched, error)
        else:
            self._relayed(message, matched, delivery)

    def _pipelined(
        self,
        message: Message,
        matched: tuple[str, ...],
        connection: _Connection,
        previous: _Flight,
        era: int,
    ) -> tuple[_Connection | None, _Flight | None]:
        """Send ``message`` while ``previous`` awaits its final reply: write
        that content and these commands, read that reply, then this
        message's."""
        try:
            transaction = connection.write_commands(
                received_header(message, self.hostname, matched) + message.raw,
                message.envelope.mail_from,
                matched,
                message.envelope.smtputf8,
                body_option(message.envelope.mail_options),
                dsn=DSN.of(message.envelope),
                after=previous[3],
            )
        except RelayError:
            transaction = None  # not written, or the connection is closed
        self._settle(previous)
        if transaction is None or not connection.open:
            # Not taken: this message could not be written, or the previous
            # reply closed the connection (421, or it dropped). Once more on
            # its own, on a new connection if need be, unless the sink is
            # stopping: that would wait for the upstream all over again.
            if self._stopping:
                self._stopped(message, matched)
                return (connection if connection.open else None), None
            return self._relay(
                message, matched, connection if connection.open else None, era
            )
        try:
            connection.read_command_replies(transaction)
        except RelayError as error:
            if (
                error.stage == "MAIL"
                and connection.ended_by_upstream
                and not self._stopping
            ):
                # The upstream ended the connection after the previous
                # message's 250 (a 421, its limit of messages a connection,
                # or the close alone), before this one's MAIL: it never
                # took any of it. Once more, on a new connection, as a
                # message sent alone goes (`_relay`: said_something).
                return self._relay(message, matched, None, era)
            self._failed(message, matched, error)
            return (connection if connection.open else None), None
        if _deferred(transaction):
            self._settle((message, matched, connection, transaction))
            return (connection if connection.open else None), None
        return connection, (message, matched, connection, transaction)

    def _relay(
        self,
        message: Message,
        matched: tuple[str, ...],
        connection: _Connection | None,
        era: int,
    ) -> tuple[_Connection | None, _Flight | None]:
        """Send ``message``, queued in ``era`` (`end_of_test`; connecting
        first if need be). With PIPELINING, returns it in flight: its final
        reply is read later (`_settle`)."""
        if era != self._era:
            # Its test ended while it waited (behind a slow message): sent
            # now, it would reach the upstream in the next test.
            self._test_ended(message, matched)
            return connection, None
        # "for" names the one recipient the copy goes to, if one: never a
        # captured recipient relay_to left out (a Bcc, say).
        raw = received_header(message, self.hostname, matched) + message.raw
        envelope = message.envelope
        body = body_option(envelope.mail_options)
        dsn = DSN.of(envelope)
        # The test this message is sent for, taken before the connection is
        # made: a login refused late (Dovecot waits 2 s before it answers a
        # failed AUTH) may come after the next test began, which it must not
        # be held against.
        sending_for = self._test
        refused = self._login_refused
        if refused is not None and (connection is None or not connection.open):
            test, at, error = refused
            if test != sending_for:
                self._login_refused = None
            elif test or time.monotonic() - at < _LOGIN_RETRY_AFTER:
                self._refused_login(message, matched, error, test)
                return None, None
        try:
            if (
                connection is not None
                and connection.open
                and connection.said_something()
            ):
                # Gone while it lingered: this message goes on a new
                # connection, rather than take the close as its answer.
                connection.close(quit=False)
            if connection is None or not connection.open:
                connection = _Connection(
                    self.upstream, self.timeout, self.hostname, on_client=self._using
                )
                connection.test = sending_for
                connection.stopping = lambda: self._stopping
            if connection.pipelining:
                transaction = connection.write_commands(
                    raw, envelope.mail_from, matched, envelope.smtputf8, body, dsn=dsn
                )
                connection.read_command_replies(transaction)
                if _deferred(transaction):
                    # The rest goes in a new transaction, before the next
                    # message's: this one's content cannot wait for it.
                    self._settle((message, matched, connection, transaction))
                    return (connection if connection.open else None), None
                return connection, (message, matched, connection, transaction)
            delivery = connection.send(
                raw, envelope.mail_from, matched, envelope.smtputf8, body, dsn=dsn
            )
        except RelayError as error:
            if error.stage == "AUTH" and error.code is not None and error.code >= 500:
                self._login_refused = (sending_for, time.monotonic(), error)
            self._failed(message, matched, error)
            if connection is not None and not connection.open:
                connection = None
            return connection, None
        except Exception:  # a bug (see _turn): maybe on a connection made here
            if connection is not None:
                connection.close(quit=False)
            raise
        self._relayed(message, matched, delivery)
        return connection, None

    def _relayed(
        self, message: Message, matched: tuple[str, ...], delivery: Delivery
    ) -> None:
        self._finish(
            message,
            RelayOutcome(
                "relayed",
                self.upstream.url,
                matched,
                delivery.code,
                delivery.reply,
                delivery,
            ),
        )

    def _using(self, client: Any) -> None:
        self._client = client

    def abort(self) -> None:
        """Stop, cutting the message in flight (the plugin, as a session
        ends: its outcome, "pending", is already reported). `stop` alone
        lets it finish within the relay timeout per step, and the run sat
        silent after its summary for as long as a hung upstream took."""
        self._stopping = True
        sock = getattr(self._client, "sock", None)
        if sock is not None:
            # Before the cut: the relay thread may fail at once.
            self._aborted = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _failed(
        self, message: Message, matched: tuple[str, ...], error: RelayError
    ) -> None:
        if self._aborted and not error.reply.startswith("timed out"):
            # Cut by `abort`: the upstream's "closed without a reply" is
            # the sink's own doing (a timeout is the upstream's).
            self._stopped(message, matched, "the sink stopped while relaying it")
            return
        status: RelayStatus = "failed" if error.code is None else "refused"
        self._finish(
            message,
            RelayOutcome(
                status,
                self.upstream.url,
                matched,
                error.code,
                error.reply,
                error=error,
            ),
        )

    def _refused_login(
        self, message: Message, matched: tuple[str, ...], error: RelayError, test: int
    ) -> None:
        """``message`` not sent: the upstream refused the relay's login for
        an earlier message of the test (or, outside tests, a moment ago).
        Each message logged in again, and a run with a stale password made
        one failed login a message, which a real upstream counts against
        the account (and may lock it)."""
        when = (
            "of this test ({code}); it is not tried again in this test"
            if test
            else "({code}); it is tried again {wait:g} s after that refusal"
        ).format(code=f"{error.code} {error.reply}", wait=_LOGIN_RETRY_AFTER)
        self._finish(
            message,
            RelayOutcome(
                "refused",
                self.upstream.url,
                matched,
                error.code,
                "not sent: the upstream refused the relay's login for an "
                f"earlier message {when}",
                error=error,
            ),
        )

    def _test_ended(self, message: Message, matched: tuple[str, ...]) -> None:
        self._finish(
            message,
            RelayOutcome(
                "failed",
                self.upstream.url,
                matched,
                reply="not relayed: its test ended before the relay reached it",
            ),
        )

    def _stopped(
        self,
        message: Message,
        matched: tuple[str, ...],
        why: str = "the sink stopped before relaying it",
    ) -> None:
        self._finish(
            message, RelayOutcome("failed", self.upstream.url, matched, reply=why)
        )

    def _finish(self, message: Message, outcome: RelayOutcome) -> None:
        message.relay = outcome
        self._store.touch()  # wakes wait_until(lambda: message.relay.done)

    def stop(self) -> None:
        """Give up on what is still queued (marked failed, the captured copy
        stays) and end the thread. The message being sent, if any, finishes
        within the relay timeout (per connect or reply)."""
        self._stopping = True
        self._queue.put(None)
        # Each step of the message in flight is bounded by the timeout; a
        # whole transaction has a handful of steps. At least 10 s: with a
        # short timeout, a busy machine may take longer to run the steps
        # than they may wait.
        if threading.current_thread() is not self._thread:  # e.g. a listener
            self._thread.join(max(self.timeout * 8, 10.0))


def _domain_pattern(text: str) -> str:
    """``text`` (a domain, or its end) as a pattern matching it alone:
    dots escaped, hyphens left as they are (they mean nothing there)."""
    return re.escape(text).replace("\\-", "-")
