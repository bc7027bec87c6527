"""The aiosmtpd protocol subclass that records the conversation.

aiosmtpd gives handlers the envelope but not the conversation, so the
recording happens here: every line the server *reads* (wrapping the stream
reader, so that pipelined commands are recorded in the order the server
handles them) and every reply it *pushes*. Message content is counted, not
copied, into the transcript; the message itself keeps the bytes.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, AnyStr, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as _AioSession

from ._faults import Fault, hidden_param
from ._faults import same_syntax as _same_syntax
from ._message import Envelope as MessageEnvelope
from ._message import Message
from ._session import AuthInfo, EndReason, Exchange, Session, TLSInfo

if TYPE_CHECKING:
    from asyncio.streams import _ReaduntilBuffer

    from ._faults import Faults
    from ._settings import SinkSettings
    from ._store import Store

_MAX_SHOWN_LINE = 512
# Message content is joined into pieces of this size while it is read.
_CHUNK = 65536
_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH_DATA = "552 Error: Too much mail data"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def _multiline(replies: list[str]) -> list[str]:
    """Re-join reply lines after some were dropped: the last line of a
    multi-line reply reads ``250 ...``, the others ``250-...``."""
    return [f"{r[:3]}-{r[4:]}" for r in replies[:-1]] + [
        f"{replies[-1][:3]} {replies[-1][4:]}"
    ]


async def _nothing() -> None:
    pass


def _printable(raw: bytes) -> str:
    """A client line as text that prints on one line: UTF-8 where it decodes,
    ``\\xNN`` for control characters and bytes that do not."""
    if raw.isascii():  # nearly every command: skip the translation
        text = raw.decode("ascii")
        if text.isprintable():  # no control characters
            return text
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


_MALFORMED = re.compile("[\x00-\x1f\x7f\udc80-\udcff]")


def _malformed(value: str) -> bool:
    """True if a HELO name or address holds control characters (NUL, a bare
    CR...) or bytes that are not UTF-8 (aiosmtpd keeps those as surrogates,
    which cannot even be printed): a strict server refuses them with 501
    rather than record a name or address no report could show."""
    return _MALFORMED.search(value) is not None


# An address as nearly every client sends it: <local@domain>, both parts
# dot-atoms of ASCII atext (RFC 5322 3.2.3), then nothing or parameters.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_ANGLE_ADDR = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>")


def plain_angle_addr(arg: str) -> tuple[str, str] | None:
    """``(address, rest)`` of a MAIL/RCPT argument of the plain form
    ``<local@domain> PARAMS``, exactly as aiosmtpd's ``_getaddr`` parses it;
    None for any other form (quoted or non-ASCII local parts, address
    literals, comments, RFC 2047 encoded words, the null path), which
    aiosmtpd then parses.

    aiosmtpd runs every address through the email package's RFC 5322 header
    parser, and defines a class on each call: about 55 us per MAIL or RCPT
    on a 2-core CI machine, a quarter of the server's time per message."""
    match = _PLAIN_ANGLE_ADDR.match(arg)
    if match is None:
        return None
    rest = arg[match.end() :]
    if rest[:1] in (" ", "\t"):
        # The parser drops the folding white space after ">" (str.lstrip).
        rest = rest.lstrip()
    if rest[:1] == "(":  # a comment: the parser's business
        return None
    address = match.group(1)
    if "=?" in address:  # the parser decodes RFC 2047 encoded words in it
        return None
    return address, rest


class ServerState:
    """What every connection of one sink server shares."""

    def __init__(
        self,
        settings: SinkSettings,
        store: Store,
        faults: Faults,
        loop: asyncio.AbstractEventLoop,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.faults = faults
        self.loop = loop
        self.tls_context = tls_context
        self.connections: set[RecordingSMTP] = set()
        self.handler = _Handler()

    def make_protocol(self) -> RecordingSMTP:
        return RecordingSMTP(self)


class _SinkEnvelope(Envelope):
    """aiosmtpd's envelope flattens RCPT parameters; keep them per recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.per_rcpt_options: list[tuple[str, ...]] = []


class _Handler:
    """aiosmtpd hooks. ``server`` is the `RecordingSMTP` of the connection."""

    async def handle_RCPT(
        self,
        server: RecordingSMTP,
        session: Any,
        envelope: _SinkEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if _malformed(address):
            return "501 5.1.3 Bad recipient address syntax"
        if server.state.faults.rules:
            injected = await server._fault_status(
                "RCPT", [address], rcpt_count=len(envelope.rcpt_tos)
            )
            if injected is not None:
                return injected
        limit = server.state.settings.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.per_rcpt_options.append(tuple(rcpt_options))
        return "250 OK"

    async def handle_DATA(
        self, server: RecordingSMTP, session: Any, envelope: _SinkEnvelope
    ) -> str:
        return await server.store_message(envelope)

    async def handle_MAIL(
        self,
        server: RecordingSMTP,
        session: Any,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if _malformed(address):
            return "501 5.1.7 Bad sender address syntax"
        # aiosmtpd's own behaviour, after the fault rules (if any).
        if server.state.faults.rules:
            size = next(
                (
                    int(o[5:])
                    for o in mail_options
                    if o.startswith("SIZE=") and o[5:].isdigit()
                ),
                None,
            )
            injected = await server._fault_status(
                "MAIL", [address], size=size, params=mail_options
            )
            if injected is not None:
                return injected
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


class _QuietSession(_AioSession):
    """aiosmtpd's session logs "login_data is deprecated" (a WARNING on the
    mail.log logger) on every successful AUTH, because its own smtp_AUTH sets
    it: noise in the captured log of every AUTH test."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


_COMMAND_METHODS: dict[type, list[str]] = {}


def _command_methods(cls: type) -> list[str]:
    names = _COMMAND_METHODS.get(cls)
    if names is None:
        names = [name for name in dir(cls) if name.startswith(("smtp_", "auth_"))]
        _COMMAND_METHODS[cls] = names
    return names


class RecordingSMTP(SMTP):
    def __dir__(self) -> list[str]:
        # aiosmtpd's SMTP.__init__ looks for smtp_* and auth_* methods with
        # dir(self) and inspect.getmembers(self) on every connection; over
        # this class's many attributes that was the largest part of setting
        # up a connection. Those names are all it needs, and they are fixed
        # per class.
        return _command_methods(type(self))

    def __init__(self, state: ServerState) -> None:
        settings = state.settings
        starttls = settings.tls in ("starttls", "starttls-required")
        super().__init__(
            state.handler,
            data_size_limit=settings.max_size or None,
            enable_SMTPUTF8=settings.smtputf8,
            hostname=settings.hostname,
            ident="pytest-smtpsink",
            tls_context=state.tls_context if starttls else None,
            require_starttls=settings.tls == "starttls-required",
            timeout=settings.idle_timeout,
            # Implicit TLS is encrypted from the first byte, but aiosmtpd only
            # counts STARTTLS as TLS: without this it refuses AUTH with 538.
            auth_require_tls=not (
                settings.auth_plaintext or settings.tls == "implicit"
            ),
            # Not named _authenticate: that is aiosmtpd's own method, which
            # its PLAIN and LOGIN call with (mechanism, auth_data).
            authenticator=self._check_login,
            loop=state.loop,
        )
        # Set after __init__: aiosmtpd warns (a UserWarning, an error under
        # -W error) when AUTH is required over plain text, which a test may
        # legitimately ask for with auth_plaintext=True.
        self._auth_required = settings.auth_required
        if settings.auth is None:
            self._auth_methods.clear()
        self.state = state
        self.record: Session | None = None
        self._current: Exchange | None = None
        # While reading message content: its size so far, for the transcript
        # if the client leaves before the final dot.
        self._in_data = False
        self._data_bytes = 0
        # The stream reader's own methods, for the content: the recording
        # wrappers (see _wrap_reader) are for commands.
        self._read_line: Callable[[bytes], Awaitable[bytes]] | None = None
        self._read_bytes: Callable[[int], Awaitable[bytes]] | None = None
        self._pending_fragment = b""
        self._pending_total = 0
        self._ehlo_lines: list[str] | None = None
        self._in_readline = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = plain_angle_addr(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, rest

    # -- connection lifecycle ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.record is None
        if first:
            peer = transport.get_extra_info("peername") or ("?", 0)
            self.record = Session((str(peer[0]), int(peer[1])), _now())
        super().connection_made(transport)
        assert self.record is not None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self.record.tls = TLSInfo(
                version=ssl_object.version(),
                cipher=cipher[0] if cipher else None,
                implicit=first,
            )
        if not first:
            # After STARTTLS aiosmtpd forgets an earlier (plain-text) login,
            # as RFC 3207 says; so must the record. auth_attempts keeps it.
            self.record.auth = None
        if first:
            self.state.connections.add(self)
            self.state.store.add_session(self.record)

    def connection_lost(self, error: Exception | None) -> None:
        record = self.record
        if record is not None:
            if self._in_data:
                # Count what arrived but was not read yet (a last line
                # without its CRLF) as content too.
                unread = len(getattr(self._reader, "_buffer", b""))
                self._end_data(
                    self._data_bytes + unread,
                    ", incomplete: the connection closed before the final dot",
                )
            self._mark_end("client-closed")
        self.state.connections.discard(self)
        super().connection_lost(error)
        self.state.store.touch()

    def _end_data(self, size: int, note: str = "") -> None:
        self._in_data = False
        self._append("data", f"<message content: {size} bytes{note}>")

    def _timeout_cb(self) -> None:
        self._mark_end("timeout")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def close_by_server(self) -> None:
        """Abort the connection (sink stopping, or a fault)."""
        self._mark_end("server-closed")
        if self.transport is not None:
            # aiosmtpd types it BaseTransport; a server connection's is a Transport.
            cast("asyncio.Transport", self.transport).abort()

    def _mark_end(self, reason: EndReason) -> None:
        if self.record is not None and self.record.end is None:
            self.record.end = reason
            self.record.ended_at = _now()

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        self._read_line, self._read_bytes = reader.readuntil, reader.read
        self._wrap_reader(reader)

    # -- recording -------------------------------------------------------------

    def _wrap_reader(self, reader: asyncio.StreamReader) -> None:
        """Record each line as aiosmtpd reads it.

        aiosmtpd reads commands with ``readuntil()``, AUTH continuation lines
        with ``readline()`` and the pieces of an over-long line with
        ``read(n)``. Wrapping those calls on this connection's own reader sees
        exactly what the server consumed, in the order it handled it. Message
        content is read with the reader's own methods (see `_read_content`)
        and only counted.
        """
        readuntil, readline, read = reader.readuntil, reader.readline, reader.read

        async def recording_readuntil(separator: _ReaduntilBuffer = b"\n") -> bytes:
            line = await readuntil(separator)
            if not self._in_readline:
                self._on_line(line)
            return line

        async def recording_readline() -> bytes:
            # StreamReader.readline() calls self.readuntil(), i.e. the wrapper
            # above: without this flag an AUTH response would be recorded
            # unmasked, as a command.
            self._in_readline = True
            try:
                line = await readline()
            finally:
                self._in_readline = False
            self._on_auth_response(line)
            return line

        async def recording_read(n: int = -1) -> bytes:
            chunk = await read(n)
            self._on_fragment(chunk)
            return chunk

        reader.readuntil = recording_readuntil  # type: ignore[method-assign]
        reader.readline = recording_readline  # type: ignore[method-assign]
        reader.read = recording_read  # type: ignore[method-assign]

    def _append(self, kind: Any, line: str) -> Exchange:
        # This and _record_reply run for every line of every conversation:
        # keep them lean (the recording-overhead benchmark watches them).
        exchange = Exchange(kind, line, time.time())
        assert self.record is not None
        self.record._append(exchange)
        self._current = exchange
        store = self.state.store
        if store.watchers:
            store.touch()
        return exchange

    def _on_fragment(self, chunk: bytes) -> None:
        self._pending_total += len(chunk)
        if len(self._pending_fragment) < _MAX_SHOWN_LINE:
            self._pending_fragment += chunk[:_MAX_SHOWN_LINE]

    def _on_line(self, line: bytes) -> None:
        total = len(line)
        if self._pending_total:  # the rest of an over-long line
            total += self._pending_total
            line = self._pending_fragment + line
            self._pending_fragment, self._pending_total = b"", 0
        raw = line.rstrip(b"\r\n")
        if b"AUTH" in raw.upper():  # most lines are not: skip the decoding
            # Keep the mechanism; PLAIN's initial response is the password.
            # Split as aiosmtpd does (str.split: any Unicode white space, so
            # a tab, \x1f or a no-break space too), before anything is made
            # printable, so that no separator smuggles the secret through.
            words = raw.decode("utf-8", "surrogateescape").split(None, 2)
            if words and words[0].upper() == "AUTH":
                kept = " ".join(words[:2]).encode("utf-8", "surrogateescape")
                raw = kept + (b" ****" if len(words) > 2 else b"")
        text = _printable(raw[:_MAX_SHOWN_LINE])
        if total > _MAX_SHOWN_LINE:
            text += f"... [{total} bytes in all]"
        self._append("command", text)

    def _on_auth_response(self, line: bytes) -> None:
        self._append("auth-response", "*" if line.strip() == b"*" else "****")

    def push(self, status: AnyStr) -> Coroutine[Any, Any, None]:
        # Not itself a coroutine function: it returns what the caller awaits
        # (aiosmtpd's push, mostly), one coroutine frame less per reply.
        if self._ehlo_lines is not None:  # collected by smtp_EHLO, see there
            self._ehlo_lines.append(
                status.decode("utf-8", "replace")
                if isinstance(status, bytes)
                else status
            )
            return _nothing()
        if self._injected_push is not None:  # a fault's reply, from a hook
            lines, self._injected_push = self._injected_push, None
            return self._push_injected(lines, "")
        text = (
            status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        )
        self._record_reply(text)
        return super().push(status)

    def _record_reply(self, text: str, injected: bool = False) -> None:
        current = self._current
        if current is None:
            current = self._append("greeting", "")
        current.replies.append(text)
        if injected:
            current.injected = True
        code = text[:3]
        if code == "221" and current.command == "QUIT":
            self._mark_end("quit")
        elif code == "502" and text.startswith("502 5.5.1 Too many unrecognized"):
            # aiosmtpd closes the connection after this reply (BOGUS_LIMIT).
            self._mark_end("server-closed")
        store = self.state.store
        if store.watchers:
            store.touch()

    # -- commands that update the recorded session -----------------------------

    async def smtp_HELO(self, hostname: str) -> None:
        if await self._greeting_refused(hostname):
            return
        await super().smtp_HELO(hostname)
        self._note_greeting()

    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._greeting_refused(hostname):
            return
        # Collect aiosmtpd's EHLO reply, then send it without the extensions
        # we do not offer. (Not a handle_EHLO hook: aiosmtpd inspects that
        # hook's signature for every connection, a cost on every test.)
        self._ehlo_lines = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._ehlo_lines = self._ehlo_lines, None
        if len(lines) > 1:
            lines = self._hide_extensions(self.filter_ehlo(lines))
        # One write for the whole reply (aiosmtpd writes and drains line by
        # line): a socket send per connection instead of six.
        for line in lines:
            self._record_reply(line)
        if lines:
            await super().push("\r\n".join(lines))
        self._note_greeting()

    async def _greeting_refused(self, hostname: str) -> bool:
        """Answer HELO/EHLO ourselves when the name is malformed or a fault
        says so; True when the command is handled."""
        if hostname and _malformed(hostname):
            await self.push(
                "501 5.5.2 Syntax error: control characters in the host name"
            )
            return True
        return bool(
            self.state.faults.rules and await self._fault_intercept("EHLO", [hostname])
        )

    def _note_greeting(self) -> None:
        assert self.record is not None
        assert self.session is not None
        if self.session.host_name:
            self.record.ehlo = self.session.host_name
            self.record.esmtp = bool(self.session.extended_smtp)

    def filter_ehlo(self, responses: list[str]) -> list[str]:
        kept = [r for r in responses if r[4:].strip().upper() != "AUTH"]
        return _multiline(kept)

    # -- AUTH --------------------------------------------------------------------

    def _check_login(
        self,
        server: SMTP,
        session: Any,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        username = auth_data.login.decode("utf-8", "replace")
        # Compare bytes: compare_digest() refuses non-ASCII str.
        return self._auth_result(
            mechanism,
            username,
            lambda expected: hmac.compare_digest(
                expected.encode("utf-8"), auth_data.password
            ),
        )

    def _auth_result(
        self, mechanism: str, username: str, check: Callable[[str], bool]
    ) -> AuthResult:
        table = self.state.settings.auth
        if table == "any":
            success = True
        elif table is None or username not in table:
            success = False
        else:
            success = check(table[username])
        assert self.record is not None
        info = AuthInfo(mechanism=mechanism, username=username, success=success)
        self.record._auth_attempts.append(info)
        self.record.auth = info
        return AuthResult(success=success, handled=False, auth_data=username)

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        # aiosmtpd has PLAIN and LOGIN built in; CRAM-MD5 (RFC 2195) is ours.
        challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.hostname}>"
        response = await self.challenge_auth(challenge.encode())
        if not isinstance(response, bytes):  # the client aborted with "*"
            return AuthResult(success=False, handled=True)
        username, _, digest = response.decode("utf-8", "replace").rpartition(" ")

        def check(password: str) -> bool:
            expected = hmac.new(
                password.encode(), challenge.encode(), "md5"
            ).hexdigest()
            return hmac.compare_digest(
                expected.encode(), digest.lower().encode("utf-8", "replace")
            )

        return self._auth_result("CRAM-MD5", username, check)

    # -- storing messages ----------------------------------------------------------

    def _create_session(self) -> _QuietSession:
        return _QuietSession(self.loop)

    def _create_envelope(self) -> _SinkEnvelope:
        return _SinkEnvelope()

    async def store_message(self, envelope: _SinkEnvelope) -> str:
        assert self.record is not None
        if self.state.faults.rules:
            injected = await self._fault_status(
                "EOD",
                [envelope.mail_from or "", *envelope.rcpt_tos],
                size=len(envelope.original_content or b""),
            )
            if injected is not None:
                return injected
        store = self.state.store
        limit = self.state.settings.max_stored_bytes
        size = len(envelope.original_content or b"")
        if limit is not None and store.stored_bytes + size > limit:
            store.note_overflow(
                f"the sink refused mail: max_stored_bytes={limit} would be exceeded "
                f"(it holds {store.stored_bytes} bytes; a {size}-byte message from "
                f"{envelope.mail_from or '<>'} got 452). Send less mail per test, "
                "or raise max_stored_bytes."
            )
            return "452 4.3.4 Message refused: the sink's max_stored_bytes limit is reached"
        message = Message(
            raw=envelope.original_content or b"",
            envelope=MessageEnvelope(
                # aiosmtpd keeps a bounce's null sender as "<>".
                mail_from=""
                if envelope.mail_from in (None, "<>")
                else envelope.mail_from,
                rcpt_to=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                rcpt_options=tuple(envelope.per_rcpt_options),
                smtputf8=bool(envelope.smtp_utf8),
            ),
            session=self.record,
            received_at=_now(),
            number=store.next_message_number(),
        )
        self.record._messages.append(message)
        store.add_message(message)
        return f"250 2.0.0 OK: queued as #{message.number}"

    # -- fault injection (the rules live in _faults.py) ------------------------------
    #
    # Every hook starts with ``if self.state.faults.rules``: an empty tuple when
    # no test injects anything, so the normal path costs one attribute read.

    _injected_push: list[str] | None = None

    async def _handle_client(self) -> None:
        if self.state.faults.rules:
            try:
                peer = self.record.peer[0] if self.record else ""
                if await self._fault_intercept("CONNECT", [peer]):
                    return
            except ConnectionError:  # the client left during a delay
                return
        await super()._handle_client()

    @_same_syntax(SMTP.smtp_STARTTLS)
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.state.faults.rules and await self._fault_intercept(
            "STARTTLS", [], extension="STARTTLS"
        ):
            return
        await super().smtp_STARTTLS(arg)

    @_same_syntax(SMTP.smtp_AUTH)
    async def smtp_AUTH(self, arg: str) -> None:
        if self.state.faults.rules and await self._fault_intercept(
            "AUTH", [(arg or "").split(" ")[0].upper()], extension="AUTH"
        ):
            return
        await super().smtp_AUTH(arg)

    @_same_syntax(SMTP.smtp_DATA)
    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if (
            self.state.faults.rules
            and not arg
            and envelope is not None
            and envelope.rcpt_tos
            and await self._fault_intercept(
                "DATA", [envelope.mail_from or "", *envelope.rcpt_tos]
            )
        ):
            return
        # aiosmtpd's checks and replies, with our own content reader.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # Counting starts before the 354 goes out: a client that sends
        # content and vanishes while the reply is still being written gets
        # its incomplete content recorded all the same.
        self._in_data, self._data_bytes = True, 0
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, refusal = await self._read_content()
        self._end_data(self._data_bytes)
        status = refusal
        if status is None:
            envelope.content = envelope.original_content = content
            status = await self._call_handler_hook("DATA")  # store_message
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    async def _read_content(self) -> tuple[bytes, str | None]:
        """Read message content up to the final dot: ``(content, None)``, or
        ``(b"", reply)`` when it must be refused after the dot.

        aiosmtpd's own loop keeps each line as a bytearray (about 1.9 times
        the content in memory) and joins them at the end: a 25 MB attachment
        peaked at four times its size. Here lines are joined into 64 KiB
        chunks as they come, so the peak is about twice the content. The
        rules are aiosmtpd's: lines end with CRLF only (a bare LF or CR is
        content, so ``\\n.\\n`` does not end the message), a leading dot is
        removed (RFC 5321 4.5.2), a line longer than ``line_length_limit``
        gets 500 and content over ``data_size_limit`` 552, after the dot.
        """
        read_line, read_bytes = self._read_line, self._read_bytes
        assert read_line is not None
        assert read_bytes is not None
        size_limit = self.data_size_limit
        line_limit = self.line_length_limit
        chunks: list[bytes] = []
        lines: list[bytes] = []
        pending = 0  # bytes in ``lines``
        refusal: str | None = None
        inside_long_line = False
        while True:
            try:
                line = await read_line(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                # Longer than the stream reader's limit: read past it.
                line = await read_bytes(exc.consumed)
                self._data_bytes += len(line)
                inside_long_line = True
                refusal = refusal or _LINE_TOO_LONG
                chunks.clear()
                lines.clear()
                continue
            except asyncio.CancelledError:  # the connection closed
                self._writer.close()
                raise
            if inside_long_line:  # its last piece
                inside_long_line = False
                self._data_bytes += len(line)
                continue
            if line == b".\r\n":
                break
            self._data_bytes += len(line)
            if refusal is not None:
                continue  # read on to the dot, keep nothing
            if size_limit and self._data_bytes > size_limit:
                refusal = _TOO_MUCH_DATA
            elif len(line) > line_limit:
                refusal = _LINE_TOO_LONG
            if refusal is not None:
                chunks.clear()
                lines.clear()
                continue
            if line[:1] == b".":
                line = line[1:]
            lines.append(line)
            pending += len(line)
            if pending >= _CHUNK:
                chunks.append(b"".join(lines))
                lines.clear()
                pending = 0
        if refusal is not None:
            return b"", refusal
        chunks.append(b"".join(lines))
        lines.clear()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks), None

    async def _fault_intercept(
        self, stage: str, subjects: Sequence[str], extension: str | None = None
    ) -> bool:
        """For the ``smtp_*`` overrides: True if a fault answered instead."""
        lines = await self._apply_faults(stage, subjects, extension=extension)
        if lines is None:
            return False
        await self._push_injected(lines, stage)
        return True

    async def _fault_status(
        self,
        stage: str,
        subjects: Sequence[str],
        *,
        size: int | None = None,
        rcpt_count: int = 0,
        params: Sequence[str] = (),
    ) -> str | None:
        """For handler hooks, whose return value aiosmtpd pushes: the status
        to return, or None to go on. The next `push` sends the injected
        reply lines (all of them, marked injected) in its place."""
        lines = await self._apply_faults(
            stage, subjects, size=size, rcpt_count=rcpt_count, params=params
        )
        if lines is None:
            return None
        self._injected_push = lines
        return lines[-1]

    async def _apply_faults(
        self,
        stage: str,
        subjects: Sequence[str],
        *,
        extension: str | None = None,
        size: int | None = None,
        rcpt_count: int = 0,
        params: Sequence[str] = (),
    ) -> list[str] | None:
        """Run the rules for ``stage``. Delays and hangs wait here; a
        disconnect does not return. Returns the reply lines of a fault that
        answers, or None to handle the command as usual."""
        faults = self.state.faults
        if extension is not None and extension in faults.hidden:
            self._mark_injected()
            return ["502 5.5.1 Command not implemented"]
        if params and faults.hidden and hidden_param(faults.hidden, params):
            self._mark_injected()
            return ["555 5.5.4 MAIL FROM parameters not recognized or not implemented"]
        for rule in faults.rules:
            if rule.action == "limit":
                lines = self._limit_reply(rule, stage, size, rcpt_count)
                if lines is not None:
                    rule.seen += 1
                    rule.fired += 1
                    self._mark_injected()
                    return lines
                continue
            if rule.stage != stage or rule.action == "hide":
                continue
            if not rule.applies(subjects) or not rule.fire():
                continue
            self._mark_injected()
            if rule.action == "delay":
                await self._stall(rule, asyncio.sleep(rule.seconds or 0))
                continue
            if rule.action == "hang":
                await self._stall(rule, self.loop.create_future())
                continue
            if rule.action == "disconnect":
                self.close_by_server()
                # connection_lost() cancels this task.
                await self.loop.create_future()
            return rule.reply()
        return None

    def _limit_reply(
        self, rule: Fault, stage: str, size: int | None, rcpt_count: int
    ) -> list[str] | None:
        assert rule.limit is not None
        name, value = rule.limit
        if name == "max_recipients" and stage == "RCPT" and rcpt_count >= value:
            return ["452 4.5.3 Too many recipients"]
        if (
            name == "max_connections"
            and stage == "CONNECT"
            and len(self.state.connections) > value
        ):
            return ["421 4.7.0 Too many connections, try again later"]
        if (
            name == "max_size"
            and stage in ("MAIL", "EOD")
            and size is not None
            and size > value
        ):
            return ["552 5.3.4 Message size exceeds fixed maximum message size"]
        return None

    async def _stall(self, rule: Fault, awaitable: Any) -> None:
        """Wait on ``awaitable`` (a delay or a hang) while ``rule`` holds this
        connection; removing the rule closes the connection."""
        stalled = self.state.faults.stalled
        if rule not in self.state.faults.rules:  # removed meanwhile
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            return
        stalled[self] = rule
        try:
            await awaitable
        finally:
            if stalled.get(self) is rule:
                del stalled[self]

    def _mark_injected(self) -> None:
        current = self._current
        if current is None:  # at CONNECT: the greeting is still to come
            current = self._append("greeting", "")
        current.injected = True
        # _append woke the waiters before the flag was set: wake them again,
        # or a wait_until(... .injected) would sleep until its timeout.
        store = self.state.store
        if store.watchers:
            store.touch()

    async def _push_injected(self, lines: list[str], stage: str) -> None:
        closing = lines[-1].startswith("421") or (
            stage == "CONNECT" and not lines[-1].startswith("2")
        )
        if closing:  # recorded first: the client may look as soon as it reads
            self._mark_end("server-closed")
        for line in lines:
            self._record_reply(line, injected=True)
            await super().push(line.encode("utf-8"))
        if closing:
            # Close once the reply is flushed; connection_lost() then
            # cancels this task, so no further command is handled.
            if self.transport is not None:
                self.transport.close()
            await self.loop.create_future()

    def _hide_extensions(self, responses: list[str]) -> list[str]:
        """EHLO lines without the hidden extensions (and SIZE as limited)."""
        faults = self.state.faults
        if not faults.rules:
            return responses
        hidden = faults.hidden
        sizes = [
            rule.limit[1]
            for rule in faults.rules
            if rule.limit is not None and rule.limit[0] == "max_size"
        ]
        if not hidden and not sizes:
            return responses
        kept: list[str] = []
        for response in responses:
            keyword = response[4:].split(" ")[0].upper()
            if keyword in hidden and kept:  # never the first line (the greeting)
                continue
            if keyword == "SIZE" and sizes:
                kept.append(f"{response[:4]}SIZE {min(sizes)}")
            else:
                kept.append(response)
        self._mark_injected()
        return _multiline(kept)
