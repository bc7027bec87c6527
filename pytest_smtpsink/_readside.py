"""The plumbing the read-side servers (POP3, IMAP) share.

Loop side: `ReadSideServer` and `ReadSideConnection` run on the sink's
server thread, except `ReadSideServer.start` (a test's thread, which waits
for the loop) and the mailboxes' listener (the thread that changed them,
which only schedules work on the loop).

What is here is what a line-based mail-reading protocol needs whatever its
commands: the listening socket and the set of open connections; buffered
line reading with a length limit, the idle timeout and back pressure both
ways; STARTTLS and implicit TLS; carrying out fault steps (a delay or a hang
holds the connection until its rule is removed); the transcript (`Session`,
one `Exchange` per command, replies recorded as they go out); and ending the
sessions of an earlier test, which a listener of the mailboxes
(``MailStore.listeners``) notices by a new ``MailStore.generation``. What a
protocol says, masks and remembers stays in its own module (``_pop3.py``,
``_imap.py``), in subclasses of these two.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
import time
import traceback
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._credentials import Masker, word_masker
from ._faults import (
    Delay,
    Discard,
    Disconnect,
    Event,
    Fault,
    Hang,
    Reply,
    Step,
    steps,
)
from ._listening import (
    COMMANDS_BEFORE_YIELD,
    listen,
    looks,
    not_yet_taken,
    start_on_loop,
)
from ._reading import ReadsIntoBuffer
from ._session import (
    EndReason,
    Exchange,
    ExchangeKind,
    Session,
    TLSInfo,
    cut_off_note,
    discarded_before_tls_note,
    peer_of,
)
from ._text import printable
from ._tls import (
    HANDSHAKE_TIMEOUT,
    describe_handshake_failure,
    describe_tls_on_plain_port,
    starts_tls_handshake,
    tls_handshake_note,
)

if TYPE_CHECKING:
    from ._faults import Faults
    from ._mailstore import MailStore
    from ._session import SessionProtocol
    from ._settings import SinkSettings
    from ._store import Store

#: Where the read-side servers log a failure of their own: a bug.
LOG = logging.getLogger("pytest_smtpsink")
#: Internal errors in a row after which a session ends: a bug that recurs
#: on every line must not keep the server thread answering it for ever.
BUGS_IN_A_ROW = 5
# How much of an overlong line's end is kept (after its first `limit` octets).
_KEPT_TAIL = 32

ConnectionT = TypeVar("ConnectionT", bound="ReadSideConnection")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Closed(Exception):
    """The connection ends: leave the command loop."""


# -- the server ----------------------------------------------------------------


class ReadSideServer(Generic[ConnectionT]):
    """A read-side server of one sink (a service attached to its loop):
    its listening socket, its open connections and the ones a fault holds.
    Subclasses say which connection class serves a client
    (`new_connection`)."""

    def __init__(
        self,
        host: str,
        store: Store,
        settings: SinkSettings,
        faults: Faults,
        tls_context: ssl.SSLContext | None,
        *,
        port: int = 0,
    ) -> None:
        # The store, never the sink (see _server._Runtime).
        self.host = host
        # The port to bind: 0 (a free one) for the plugin, the one asked
        # for with ``smtpsink --pop3/--imap PORT``.
        self._requested_port = port
        self.store = store
        self.mail: MailStore = store.mail
        self.settings = settings
        # The sink's passwords, masked in every line recorded (None: none).
        self.mask_secrets = word_masker(settings.auth, settings.relay)
        self.faults = faults
        self.tls_context = tls_context
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[ConnectionT] = set()
        # Connections held by a delay or hang, and the rule holding them.
        self.held: dict[ConnectionT, Fault] = {}
        self._server: asyncio.base_events.Server | None = None
        # The generation every open connection was last checked against.
        self._checked_generation = self.mail.generation
        self._check_scheduled = False

    def new_connection(self) -> ConnectionT:
        raise NotImplementedError

    # -- lifecycle (start: a test thread; the rest: the loop) -----------------

    async def _start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await listen(
            self.loop, self.new_connection, self.host, self._requested_port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        start_on_loop(loop, self._start())

    def close(self) -> None:
        """Stop serving (loop thread, from the sink's shutdown)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection in self.held:  # as silent as its fault made it
                connection.close_by_server()
            else:
                connection.close_at_stop()
        # Not left to connection_lost(), which a closing loop may never run.
        self._stop_listening()

    def release_held(self, rules: tuple[Fault, ...]) -> None:
        """Close the connections that ``rules`` (just removed) hold."""
        for connection, rule in list(self.held.items()):
            if rule in rules:
                self.held.pop(connection, None)
                connection.close_by_server()

    # -- per-test isolation and change notification ------------------------------
    #
    # The server listens to the mailboxes (`MailStore.listeners`), not to the
    # store: it hears of a new test and of mail changes (IMAP IDLE) only, so
    # that an open read-side connection costs the SMTP conversation nothing
    # (a store listener of lines would have every transcript line `touch`
    # the store).
    # It listens only while connections are open, and nothing polls.

    def opened(self, connection: ConnectionT) -> None:
        if not self.connections:
            with self.mail.lock:
                self.mail.listeners.add(self._mail_changed)
                generation = self.mail.generation
            if generation != self._checked_generation:
                # A new test began while no one listened: what belonged to
                # the earlier one goes now, not at the next change, which
                # would take the new test's with it.
                self._checked_generation = generation
                self._new_generation()
        self.connections.add(connection)

    def closed(self, connection: ConnectionT) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        self.held.pop(connection, None)
        if not self.connections:
            self._stop_listening()

    def _stop_listening(self) -> None:
        with self.mail.lock:
            self.mail.listeners.discard(self._mail_changed)

    def _wants_change(self) -> bool:
        """Whether a change of the mailboxes concerns the connections (any
        thread): by default only a new test (a new ``MailStore.generation``)
        does."""
        return self.mail.generation != self._checked_generation

    def _mail_changed(self) -> None:
        """The mailboxes' listener (on the thread that changed them): hand
        the change to the loop, once however many changes come meanwhile."""
        if self._check_scheduled or not self._wants_change():
            return
        loop = self.loop
        if loop is None:
            return
        self._check_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._changed)

    def _new_generation(self) -> None:
        """A new test started: forget what belonged to the earlier one."""

    def _changed(self) -> None:
        self._check_scheduled = False
        generation = self.mail.generation
        if generation != self._checked_generation:
            self._checked_generation = generation
            self._new_generation()
        for connection in list(self.connections):
            if connection.generation != generation:
                connection.end_stale()
            else:
                connection.store_changed()


# -- one connection --------------------------------------------------------------


def _mask_reply(mask: Masker, line: str, tag: str | None) -> str:
    """A reply line masked past its IMAP tag (or ``*``), where the status
    word comes that the masker leaves alone at a line's start."""
    head, space, rest = line.partition(" ")
    if space and head in ("*", tag):
        return f"{head} {mask(rest)}"
    return mask(line)


#: The largest piece of a reply written at once (see `ReadSideConnection._send`).
SEND_SLICE = 256 * 1024
#: A reply the client may take a while to read: the wait for its next
#: command counts from when it has (`ReadSideConnection._read_line`).
_LARGE_REPLY = 64 * 1024
_TAKING_UNKNOWN = 1 << 62


def _not_taken(transport: asyncio.WriteTransport) -> int:
    """How much of what was written the client has not taken yet: the
    transport's buffer, and the socket's send queue where the system says
    (a loopback queue may hold megabytes, which the transport's buffer
    does not shrink by until a third of it is free again)."""
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    queued = None if sock is None else not_yet_taken(sock.fileno())
    return size if queued is None else size + queued


class ReadSideConnection(asyncio.Protocol, ReadsIntoBuffer):
    """One client of a read-side server: its input buffer and line reader,
    its output with back pressure, its TLS, fault stalls and transcript.
    A subclass runs the conversation (`_serve`) and says its lines."""

    #: The `Session.protocol` of the transcript.
    PROTOCOL: ClassVar[SessionProtocol]
    #: The `Exchange` class of its transcript (each protocol frames replies
    #: its own way).
    EXCHANGE: ClassVar[type[Exchange]]
    #: Unread input above this pauses reading (pipelined commands, a large
    #: literal): bounded memory.
    BUFFER_LIMIT: ClassVar[int]
    #: Said (if the client waits for a reply) when a new test ends the session.
    END_OF_TEST: ClassVar[str]
    #: The line a client waiting for a reply gets when the sink stops.
    STOPPING: ClassVar[str]
    #: Said when the client sent nothing for ``idle_timeout`` seconds.
    INACTIVE: ClassVar[str]

    def __init__(self, server: ReadSideServer[Any]) -> None:
        self.server = server
        self.store = server.store
        self.mail = server.mail
        self.settings = server.settings
        self.transport: asyncio.Transport | None = None
        self.record: Session | None = None
        self.generation = 0
        self._task: asyncio.Task[None] | None = None
        self._current: Exchange | None = None
        #: The tag of the last line recorded when a password the sink knows
        #: began with it: its tagged reply is recorded with "****" (`_append`).
        self._password_tag: str | None = None
        # Input not yet read as lines, and the reader waiting for more.
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        # What the client had still to take of a large reply at the last
        # look, `_TAKING_UNKNOWN` before one, -1 with none or once it took
        # all; and the waits between looks (`_read_line`).
        self._taking = -1
        self._looks: Iterator[float] = iter(())
        # True while waiting for the next command (a stale session is then
        # told why it ends).
        self._waiting_for_command = False
        self._closing = False
        self._tls = False
        # While a handshake runs: whether it is an implicit one.
        self._handshaking: bool | None = None
        # Internal errors since the last command that ran without one.
        self._bugs_in_a_row = 0
        # Lines read so far (literals aside): see COMMANDS_BEFORE_YIELD.
        self._lines_read = 0
        # Until the client's first bytes come: whether to look at them for
        # a TLS handshake (on an implicit-TLS port they come decrypted).
        self._first_bytes = server.settings.tls != "implicit"
        # Those bytes, if they were a TLS handshake (see _tls_on_plain_port).
        self._tls_handshake: bytes | None = None

    async def _serve(self) -> None:
        raise NotImplementedError

    def _server_bug(self, error: Exception, what: str, secret: bool) -> str:
        """Log ``error``, an unexpected failure running ``what`` (a
        command's name), once with its traceback; what the client is told.
        Neither the reply nor, after a login command (``secret``), the log
        quotes the error's text, which may hold what the client sent."""
        self._bugs_in_a_row += 1
        kind = type(error).__name__
        text = "" if secret else str(error)
        mask = self.server.mask_secrets
        if mask is not None:
            text = mask(text)
        peer = self.record.peer if self.record is not None else ("?", 0)
        LOG.error(
            "%s session from %s:%s: %s failed with an internal error (a bug "
            "in pytest-smtpsink; the client was told so):\n"
            "%sTraceback (most recent call last):\n%s%s",
            self.PROTOCOL,
            peer[0],
            peer[1],
            what,
            "" if not secret else "(its text is left out: it ran a login)\n",
            "".join(traceback.format_tb(error.__traceback__)),
            f"{kind}: {printable(text)}" if text else kind,
        )
        return (
            f"Internal error ({kind}) in {what}: a bug in pytest-smtpsink, "
            "logged with its traceback"
        )

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.record is not None:  # not called again by start_tls()
            return
        self.transport = transport  # type: ignore[assignment]
        self.record = Session(peer_of(transport), now(), protocol=self.PROTOCOL)
        self.record._served_by = self.settings.hostname
        self.server.opened(self)
        with self.mail.lock:
            self.generation = self.mail.generation
        self.store.add_session(self.record)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._first_bytes:
            self._first_bytes = False
            if starts_tls_handshake(data):
                # Not read as commands: the end of input for the serving
                # task, which ends the session once it has greeted.
                self._tls_handshake = data
                self._eof = True
                self.wake()
                return
        self._buffer += data
        if len(self._buffer) > self.BUFFER_LIMIT and self.transport is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()
                self._reading_paused = True
        self.wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self.wake()
        # Keep the connection half-open: the serving task reads what came
        # before the end of input, then closes it. Closed at once (asyncio's
        # default), connection_lost could cancel that task first, and the
        # client's last command (sent just before it shut its side) was
        # neither run nor recorded. Not over TLS, where asyncio closes all
        # the same and warns that True has no effect.
        transport = self.transport
        return transport is not None and transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if self._handshaking is not None:
            # The handshake timed out (asyncio aborts the connection and
            # cancels the task before start_tls() could say so).
            self._tls_failed(exc, self._handshaking)
        # Its books first (POP3 keeps the marks of a DELE without QUIT): a
        # test that waited for the end finds them.
        self._finish()
        self._mark_end("client-closed")
        self.wake()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def wake(self) -> None:
        """Wake the reader waiting for input (or, in IMAP, for a change)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def store_changed(self) -> None:
        """The mailboxes changed in this connection's test (loop thread);
        only called when the server's `_wants_change` said so."""

    # -- ending ---------------------------------------------------------------------

    def _mark_end(self, reason: EndReason) -> None:
        record = self.record
        if record is not None and record.end is None:
            if self._current is not None:
                self._current._delayed = False  # as SMTP's (a delay cut short)
            # The time first: a reader that sees the end sorts by it.
            record.ended_at = now()
            record.end = reason
            record._tls_started(None)  # a handshake cut short: wake readers
            self.store.touch()

    def _finish(self) -> None:
        """Leave the server's books (when the conversation or the
        connection ends, whichever comes first; twice is harmless)."""
        self.server.closed(self)

    def close_by_server(self) -> None:
        """Abort the connection (sink stopping, a fault, a rule removed)."""
        self._mark_end("server-closed")
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def _may_say_goodbye(self) -> bool:
        """Whether the client waits for a line from the server, so that
        one more is no surprise to it."""
        return self._waiting_for_command

    def end_stale(self) -> None:
        """A new test started: say so if the client waits for a reply to
        come, then close (loop thread)."""
        self._say_and_close(self.END_OF_TEST)

    def close_at_stop(self) -> None:
        """The sink is stopping: say so if the client waits for a reply, as
        the SMTP server's 421 does (RFC 3501 7.1.5's BYE; POP3's -ERR), so
        that a client can tell a stop from a crash; a connection a fault
        holds stays as silent as the test made it (loop thread)."""
        self._say_and_close(self.STOPPING)

    def _say_and_close(self, line: str) -> None:
        self._closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            self._mark_end("server-closed")
            if transport is not None:
                # Closing but not closed: a TLS close waits for the
                # client's close_notify, which a client that does not
                # read never sends (at a stop, the loop closed under it).
                transport.abort()
            return
        # Only to a client that has read every earlier reply: a close waits
        # for the unsent bytes, which one that does not read never takes,
        # and at a stop the loop then closed under a transport still open
        # (the client never saw the end; uvloop's stop hung under -W error).
        if self._may_say_goodbye() and not transport.get_write_buffer_size():
            # Recorded before the end, as every last reply is.
            self._append("notice", "")
            self._record_reply(line)
            self._mark_end("server-closed")
            transport.write(line.encode() + b"\r\n")
            if transport.get_write_buffer_size():
                transport.abort()  # not taken at once: the same
            else:
                transport.close()
        else:
            self._mark_end("server-closed")
            transport.abort()

    # -- reading --------------------------------------------------------------------

    async def _wait_for_input(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, remaining)
        finally:
            self._waiter = None

    def _resume_reading(self) -> None:
        if self._reading_paused and len(self._buffer) < self.BUFFER_LIMIT:
            self._reading_paused = False
            if self.transport is not None:
                with contextlib.suppress(RuntimeError, AttributeError):
                    self.transport.resume_reading()

    async def _read_line(self, limit: int) -> tuple[bytes, int] | None:
        """The next line with its line end, and its length; None at the end
        of input. A line over ``limit`` octets is read to its end without
        being kept: its first ``limit`` octets and last 32 come back
        (joined) with its whole length. Waits at most ``idle_timeout``
        seconds (then raises `asyncio.TimeoutError`)."""
        self._lines_read += 1
        if self._lines_read % COMMANDS_BEFORE_YIELD == 0:
            await asyncio.sleep(0)  # see COMMANDS_BEFORE_YIELD
        deadline = time.monotonic() + self.settings.idle_timeout
        overlong = False
        dropped = 0  # octets of an overlong line read past so far
        head = tail = b""
        while True:
            buffer = self._buffer
            if not overlong:
                end = buffer.find(b"\n", 0, limit + 1)
                if end >= 0:
                    line = bytes(buffer[: end + 1])
                    del buffer[: end + 1]
                    self._resume_reading()
                    return line, len(line)
                if len(buffer) > limit:
                    overlong, head = True, bytes(buffer[:limit])
            if overlong:
                # Read on to the line's end, keeping only its last octets;
                # what follows it (pipelined commands) stays in the buffer.
                end = buffer.find(b"\n")
                if end >= 0:
                    line = bytes(buffer[: end + 1])
                    del buffer[: end + 1]
                    self._resume_reading()
                    tail = (tail + line)[-_KEPT_TAIL:]
                    return head + tail, dropped + len(line)
                tail = (tail + bytes(buffer))[-_KEPT_TAIL:]
                dropped += len(buffer)
                buffer.clear()
                self._resume_reading()
            if self._eof:
                if overlong:
                    # Cut short by the client's close: still a line, to be
                    # recorded (and refused) like one that ended.
                    return head + tail, dropped
                if buffer:
                    # A line is a command only with its line end (RFC 1939
                    # 3, RFC 3501 2.2), as real servers read it: a QUIT
                    # the close cut off must not delete. Kept for
                    # `_read_command` to record.
                    self._cut_off = bytes(buffer)
                    buffer.clear()
                return None
            taking, had = self._taking >= 0, len(buffer)
            try:
                await self._wait_for_input(
                    min(deadline, time.monotonic() + next(self._looks))
                    if taking
                    else deadline
                )
            except asyncio.TimeoutError:
                if not taking:
                    raise
                # A client taking a large reply (megabytes of a message in
                # the socket's queue) is not idle. Its idle time counts from
                # when it took the last of it, seen at the next look (a
                # tenth of idle_timeout late at most; at the deadline alone,
                # a client that took it all at once waited twice
                # idle_timeout). Until then, progress counts per deadline: a
                # client's system lets the sink send a window at a time,
                # which may take longer than a short idle_timeout. Whatever
                # commands came meanwhile: a client may send them while it
                # reads.
                transport = self.transport
                left = 0 if transport is None else _not_taken(transport)
                now = time.monotonic()
                if now < deadline:  # a look
                    if not left:
                        self._taking = -1
                        deadline = now + self.settings.idle_timeout
                    continue
                if not 0 <= left < self._taking:
                    raise
                self._taking = left or -1
                deadline = now + self.settings.idle_timeout
            else:
                if len(buffer) > had:  # part of a line came: not idle
                    deadline = time.monotonic() + self.settings.idle_timeout

    async def _read_command(self, limit: int) -> tuple[bytes, int] | None:
        """`_read_line` for the next command: the session may be ended
        meanwhile with a word to the client, and an idle one is closed
        after saying why."""
        self._waiting_for_command = True
        try:
            read = await self._read_line(limit)
            if read is None and self._tls_handshake is not None:
                self._tls_on_plain_port(self._tls_handshake)
            elif read is None and self._cut_off:
                self._record_cut_off(self._cut_off)
            return read
        except asyncio.TimeoutError:
            left = self._unended_line()
            if left:  # a command begun and never ended: why the client "hung"
                self._record_cut_off(left, by="the idle timeout")
            # No command asked for it: its own exchange (`Exchange.kind`).
            self._append("notice", "")
            await self._reply_and_end("timeout", self.INACTIVE)
            transport = self.transport
            if transport is not None and _not_taken(transport):
                # It has not read what came before: a close would wait to
                # send it all (over TLS, past the sink's own stop).
                transport.abort()
            raise Closed from None
        finally:
            self._waiting_for_command = False

    #: The start of a line the client's close cut off (see `_read_line`).
    _cut_off = b""
    #: The protocol's command verbs, upper-cased: the one word of a cut-off
    #: line that is shown (the rest may be a credential).
    VERBS: frozenset[str] = frozenset()

    def _unended_line(self) -> bytes:
        """What the buffer holds of a line whose end never came (at the
        idle timeout), or ``b""``."""
        left = bytes(self._buffer)
        return left if b"\n" not in left else b""

    def _record_cut_off(self, line: bytes, by: str = "the client's close") -> None:
        """Record a command line that never ended (cut off ``by``): its verb
        if it is one (after an IMAP tag), the rest counted, never shown."""
        words = [w.decode("ascii", "replace").upper() for w in line.split(None, 3)[:3]]
        # The verb: the first word, or the second after an IMAP tag.
        at = next((i for i, word in enumerate(words[:2]) if word in self.VERBS), None)
        verb = None
        if at is not None:
            verb = words[at]
            following = words[at + 1] if at + 1 < len(words) else ""
            if verb == "UID" and following in self.VERBS:
                verb = f"UID {following}"  # as IMAP names it ("UID EXPUNGE")
        self._append("command", cut_off_note(verb, len(line), by))

    # -- recording and writing ----------------------------------------------------------

    def _append(
        self, kind: ExchangeKind, line: str, tag: str | None = None
    ) -> Exchange:
        mask = self.server.mask_secrets
        self._password_tag = None
        if mask is not None:  # a password where no login expects one
            masked_tag = None if tag is None else mask(tag)
            whole = "" if tag is None else mask(f"{tag} {line}")
            if whole.startswith("****") and masked_tag != "****":
                # A password with a space, alone on a line, reads as a tag
                # and a command: neither part holds it, the line does. The
                # tagged reply echoes its first word (`_record_replies`).
                self._password_tag = tag
                tag, _, line = whole.partition(" ")
            else:  # a password alone reads as the tag
                tag, line = masked_tag, mask(line)
        exchange = self.EXCHANGE(kind, line, time.time(), tag=tag)
        assert self.record is not None
        self.record._append(exchange)
        self._current = exchange
        # Only a waiting test (or a listener of lines) needs each line.
        if self.store.watchers:
            self.store.touch()
        return exchange

    def _record_reply(self, line: str, injected: bool = False) -> None:
        self._record_replies((line,), injected)

    def _record_replies(self, lines: Sequence[str], injected: bool = False) -> None:
        """Record reply lines, waking the store's waiters once for all."""
        current = self._current
        if current is None:
            current = self._append("greeting", "")
        mask = self.server.mask_secrets
        hidden = self._password_tag
        if hidden is not None:
            # The tag the client sent, the first word of a password: the
            # client is told it, the transcript is not.
            lines = [
                f"****{line[len(hidden) :]}" if line.startswith(f"{hidden} ") else line
                for line in lines
            ]
        if mask is not None:  # an echo of such a line
            lines = [_mask_reply(mask, line, current.tag) for line in lines]
        current.replies.extend(lines)
        if injected:
            current.injected = True
        if self.store.watchers:
            self.store.touch()

    async def _send(self, data: bytes) -> None:
        """Write ``data``, a large one a slice at a time (the transport
        copies what it cannot send at once: a slice, not the whole); when
        the transport's buffer is full, wait until it drains (a slow reader
        must not grow our memory), as long as the client takes some of it
        every ``idle_timeout`` seconds: a client that stopped reading held
        its connection (and the standalone sink's) for ever, while one
        reading a large message slowly is not idle (Dovecot counts every
        flush as activity). Nothing more can be said to a client that took
        nothing: the connection is cut."""
        if len(data) > _LARGE_REPLY:
            # See _read_line.
            self._taking = _TAKING_UNKNOWN
            self._looks = looks(self.settings.idle_timeout)
        if len(data) > SEND_SLICE:
            view = memoryview(data)
            for start in range(0, len(data), SEND_SLICE):
                await self._send_slice(view[start : start + SEND_SLICE])
        else:
            await self._send_slice(data)

    async def _send_slice(self, data: bytes | memoryview) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise Closed
        transport.write(data)
        if not self._writing_paused:
            return  # the usual case: no system call to count what is left
        left = _not_taken(transport)
        while self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._drained, self.settings.idle_timeout)
            except asyncio.TimeoutError:
                # Progress counts per idle_timeout, not from each step: a
                # client's system lets the sink send more a window at a
                # time, which may take longer than a short idle_timeout
                # for a client that reads steadily but slowly.
                before, left = left, _not_taken(transport)
                if left < before and not transport.is_closing():
                    continue  # taken slowly, but taken
                # Nothing can be said to it: the session's summary says why.
                if self.record is not None:
                    self.record._end_detail = (
                        "the client read none of its replies for "
                        f"{self.settings.idle_timeout:g} s"
                    )
                self._mark_end("timeout")
                self._closing = True
                transport.abort()
                raise Closed from None
            finally:
                self._drained = None
            if self.transport is None or self.transport.is_closing():
                raise Closed

    async def _read_continuation(self, limit: int) -> tuple[bytes, int]:
        """The client's answer to a ``+`` continuation (SASL), as
        `_read_line` gives it; the session ends on a timeout (saying so, as
        for a command) or end of input. A response the client's close cut
        off is counted, never shown nor named (a base64 response may be a
        command's verb: ``QUIT``)."""
        try:
            read = await self._read_line(limit)
        except asyncio.TimeoutError:
            left = self._unended_line()
            if left:
                # A response begun and never ended: counted, never shown;
                # the goodbye then answers no command (its own exchange).
                self._append(
                    "command", cut_off_note(None, len(left), "the idle timeout")
                )
                self._append("notice", "")
            await self._reply_and_end("timeout", self.INACTIVE)
            raise Closed from None
        if read is None:
            if self._cut_off:
                self._append("command", cut_off_note(None, len(self._cut_off)))
                self._cut_off = b""
            raise Closed
        return read

    async def _reply_and_end(
        self, reason: EndReason, *lines: str, injected: bool = False
    ) -> None:
        """Say the session's last ``lines`` and end it with ``reason``: they
        are recorded first, then the session ends, then they are sent, so
        that a test waiting for the end finds them in the transcript and a
        client that has read them finds the session ended."""
        shown = [printable(line) for line in lines]
        self._record_replies(shown, injected)
        self._mark_end(reason)
        await self._send("".join(line + "\r\n" for line in shown).encode("utf-8"))

    async def _reply(self, line: str, injected: bool = False) -> None:
        """Send and record one reply line, escaped (`printable`) on the wire
        as in the transcript: a reply may quote the client's input (a bad
        command's words, a folder name), which can hold undecodable bytes
        (lone surrogates, which cannot be encoded) or a CR."""
        shown = printable(line)
        self._record_reply(shown, injected)
        await self._send(shown.encode("utf-8") + b"\r\n")

    # -- TLS ------------------------------------------------------------------------------

    def _tls_missing(self) -> bool:
        """Whether a login must wait for STLS/STARTTLS: the sink requires
        TLS, or it checks passwords (``auth``) and did not allow them over
        plain text (``auth_plaintext``), the rule its SMTP AUTH follows."""
        if self._tls:
            return False
        settings = self.settings
        return settings.tls == "starttls-required" or (
            settings.tls == "starttls"
            and settings.auth is not None
            and not settings.auth_plaintext
        )

    def _discard_plain_text(self, command: str) -> int:
        """Drop what the client pipelined behind ``command`` (STLS or
        STARTTLS): sent in plain text, it must never be read as if it came
        over TLS (RFC 2595 4, RFC 3501 6.2.1). Logged, as the SMTP side
        does, so that a command that vanished has a cause: the count only,
        as the bytes may hold a password. Returns the count, which the
        caller notes in the transcript after its reply (`_note_discarded`)."""
        pending = len(self._buffer)
        self._buffer.clear()
        if pending and self.record is not None:
            peer = self.record.peer
            LOG.warning(
                "%s %s:%s sent %d byte(s) after %s before the TLS handshake; "
                "discarded unread (a client must wait for the handshake)",
                self.PROTOCOL,
                peer[0],
                peer[1],
                pending,
                command,
            )
        return pending

    def _note_discarded(self, command: str, octets: int) -> None:
        """The transcript's note of what `_discard_plain_text` dropped."""
        if octets:
            self._append("command", discarded_before_tls_note(command, octets))

    async def _start_tls(self, implicit: bool) -> bool:
        """Run the server side of a TLS handshake; False (recorded as the
        end of the session, saying why) if it failed."""
        assert self.record is not None
        transport = self.transport
        context = self.server.tls_context
        assert transport is not None
        assert context is not None
        self._handshaking = implicit
        try:
            tls_transport = await asyncio.get_running_loop().start_tls(
                transport, self, context, server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )  # fmt: skip
        except Exception as error:  # start_tls() closed the transport
            self._tls_failed(error, implicit)
            return False
        finally:
            self._handshaking = None
        if tls_transport is None:  # the client left during the handshake
            self._tls_failed(None, implicit)
            transport.abort()
            return False
        self.transport = tls_transport
        self._tls = True
        ssl_object = tls_transport.get_extra_info("ssl_object")
        cipher = ssl_object.cipher() if ssl_object is not None else None
        self.record._tls_started(
            TLSInfo(
                version=ssl_object.version() if ssl_object is not None else None,
                cipher=cipher[0] if cipher else None,
                implicit=implicit,
            )
        )
        self.store.touch()
        return True

    def _tls_on_plain_port(self, data: bytes) -> None:
        """The client's first bytes, ``data``, were a TLS handshake on this
        plain-text port: record them as one line and end the session saying
        what to do (the serving task then closes the connection). Only once
        the greeting is out, which the client then reads as TLS and fails on
        (WRONG_VERSION_NUMBER), not on a connection closed unanswered.
        Nothing more is said: a reply in plain text would be read so too.
        Read as command lines, its bytes made garbage lines and refusals."""
        record = self.record
        if record is None:
            return
        self._append("command", tls_handshake_note(data))
        record.tls_error = describe_tls_on_plain_port(self.PROTOCOL, self.settings.tls)
        self._mark_end("tls-on-plain-port")
        self._closing = True

    def _tls_failed(self, error: BaseException | None, implicit: bool = False) -> None:
        record = self.record
        if record is not None and record.end is None:
            record.tls_error = describe_handshake_failure(
                error, implicit, self.PROTOCOL
            )
            self._mark_end("tls-failed")
        self._closing = True

    # -- faults (the rules decide, this carries out) ------------------------------------

    def _planned(
        self, stage: str, subjects: Sequence[str], matching_only: bool = False
    ) -> list[Step]:
        """What the rules decide at ``stage`` (nothing, cheaply, without
        rules); ``matching_only``: see `Event.matching_only`."""
        if not self.server.faults.rules:
            return []
        event = Event(stage, tuple(subjects), matching_only=matching_only)
        return steps(self.server.faults, event)

    async def _carry_out(self, planned: Sequence[Step]) -> Reply | None:
        """Sleep, hold or close as ``planned`` says; the `Reply` to give
        instead of running the command, if a rule replies (the protocol
        words it)."""
        for step in planned:
            self._mark_injected()
            if isinstance(step, Delay):
                assert self._current is not None  # _mark_injected made one
                with self._current._delaying():  # "reply delayed" meanwhile
                    await self._stall(step.rule, asyncio.sleep(step.seconds))
            elif isinstance(step, Hang):
                # Closed after the idle timeout too, as the SMTP server's
                # held connections are (docs/faults.rst): a rule kept for
                # the whole run held its clients for the whole run.
                never = asyncio.get_running_loop().create_future()
                try:
                    await self._stall(
                        step.rule, asyncio.wait_for(never, self.settings.idle_timeout)
                    )
                except asyncio.TimeoutError:
                    # No command asked for it: its own exchange, as SMTP
                    # records its 421 (the held command was never answered).
                    self._append("notice", "")
                    await self._reply_and_end("timeout", self.INACTIVE)
                    raise Closed from None
            elif isinstance(step, Disconnect):
                self.close_by_server()
                raise Closed
            elif isinstance(step, Reply):
                return step
            else:  # pragma: no cover - Discard is for SMTP's EOD only
                assert isinstance(step, Discard)
        return None

    def _mark_injected(self) -> None:
        current = self._current
        if current is None:  # at CONNECT: the greeting is still to come
            current = self._append("greeting", "")
        current.injected = True
        if self.store.watchers:
            self.store.touch()

    async def _stall(self, rule: Fault, awaitable: Awaitable[object]) -> None:
        """Wait on a delay or a hang while ``rule`` holds the connection;
        removing the rule closes it (`ReadSideServer.release_held`)."""
        held = self.server.held
        if rule not in self.server.faults.rules:
            # Removed after it fired here, before this connection was held.
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            self.close_by_server()
            raise Closed
        held[self] = rule
        try:
            await awaitable
        finally:
            if held.get(self) is rule:
                del held[self]
