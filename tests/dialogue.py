"""Scripted POP3 and IMAP sessions over raw sockets, for differential tests.

`run` plays a script (client lines) against a server and returns the
conversation as a transcript: ``"C: ..."`` for each client line and
``"S: ..."`` for each line the server sent, with POP3 multi-line replies read
to their ``.`` line and IMAP responses read to the command's tagged reply,
literals (``{n}``) included byte-exact. `masked` replaces what two correct
servers may differ in (greeting text, APOP timestamps, UIDL values,
UIDVALIDITY, dates, implementation strings, Dovecot's timings), so a
differential test is one line::

    assert masked(run(script, ours)) == masked(run(script, dovecot))

Every read has a timeout and the whole session a deadline: a server that
stops answering raises `DialogueError` with the transcript so far, never a
hang. STLS/STARTTLS answered positively upgrades the connection (verifying
the certificate with the endpoint's context). Used from the test's thread.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

#: Seconds to wait for any one read; the session's deadline is `DEADLINE`.
READ_TIMEOUT = 10.0
DEADLINE = 60.0
#: The longest line accepted from a server (a runaway reply is an error).
MAX_LINE = 1 << 20
#: The longest literal accepted from an IMAP server.
MAX_LITERAL = 64 << 20

#: POP3 commands whose positive reply is multi-line (RFC 1939, RFC 2449);
#: AUTH (RFC 5034), LIST and UIDL only without an argument.
POP3_MULTILINE = frozenset({"CAPA", "RETR", "TOP"})
POP3_MULTILINE_WITHOUT_ARGUMENT = frozenset({"AUTH", "LIST", "UIDL"})
CLOSED = "<connection closed>"

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n\Z")


class DialogueError(AssertionError):
    """The server did not answer in time or sent something unreadable; the
    message holds the transcript so far."""


@dataclass(frozen=True)
class Endpoint:
    """Where a script runs: *protocol* is ``"pop3"`` or ``"imap"``;
    *implicit_tls* for POP3S/IMAPS; *ssl_context* verifies the server for
    implicit TLS and STLS/STARTTLS; *source* binds the client's address."""

    protocol: str
    host: str
    port: int
    implicit_tls: bool = False
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    source: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("pop3", "imap"):
            raise ValueError(
                f"protocol must be 'pop3' or 'imap', not {self.protocol!r}"
            )


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


class _Connection:
    def __init__(
        self,
        endpoint: Endpoint,
        transcript: list[str],
        read_timeout: float,
        deadline: float,
    ) -> None:
        self.endpoint = endpoint
        self.transcript = transcript
        self.read_timeout = read_timeout
        self.total = deadline
        self.deadline = time.monotonic() + deadline
        source = (endpoint.source, 0) if endpoint.source else None
        self.sock: socket.socket = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=read_timeout, source_address=source
        )
        self.buffer = b""
        self.closed = False
        if endpoint.implicit_tls:
            self.start_tls()

    def start_tls(self) -> None:
        if self.endpoint.ssl_context is None:
            raise ValueError("TLS needs the endpoint's ssl_context")
        if self.buffer:
            raise DialogueError(
                "the server sent data after its TLS go-ahead (a STARTTLS "
                f"injection?): {self.buffer!r}\n" + "\n".join(self.transcript)
            )
        self.sock = self.endpoint.ssl_context.wrap_socket(
            self.sock, server_hostname=self.endpoint.host
        )

    def close(self) -> None:
        self.sock.close()

    def send(self, line: str) -> None:
        self.transcript.extend(f"C: {part}" for part in line.split("\r\n"))
        self.sock.sendall(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def _fill(self) -> bool:
        """Read more bytes; False when the server closed the connection."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._fail(f"the session took longer than {self.total:g} s")
        self.sock.settimeout(min(self.read_timeout, remaining))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            self._fail(f"no reply within {self.read_timeout:g} s")
        except (ConnectionError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def _fail(self, why: str) -> NoReturn:
        raise DialogueError(f"{why}; transcript so far:\n" + "\n".join(self.transcript))

    def read_line(self) -> bytes | None:
        """One line with its CRLF (a last unterminated line as is), or None
        when the server closed the connection first."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
                return line
            if len(self.buffer) > MAX_LINE:
                self._fail(f"a line longer than {MAX_LINE} bytes")
            if not self._fill():
                line, self.buffer = self.buffer, b""
                return line or None

    def read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def record(self, data: bytes) -> None:
        """Record server bytes, one transcript entry per line."""
        for line in data.removesuffix(b"\r\n").split(b"\r\n"):
            self.transcript.append(f"S: {_text(line)}")

    def record_closed(self) -> None:
        self.transcript.append(f"S: {CLOSED}")


def _read_pop3(connection: _Connection, command: str | None) -> bool:
    """Read one POP3 reply (to *command*; None for the greeting). False when
    the connection is gone."""
    first = connection.read_line()
    if first is None:
        connection.record_closed()
        return False
    connection.record(first)
    if command is None or not first.startswith(b"+OK"):
        return True
    words = command.split()
    verb = words[0].upper() if words else ""
    if verb in POP3_MULTILINE or (
        verb in POP3_MULTILINE_WITHOUT_ARGUMENT and len(words) == 1
    ):
        while True:
            line = connection.read_line()
            if line is None:
                connection.record_closed()
                return False
            connection.record(line)
            if line == b".\r\n":
                return True
    return True


def _read_imap(connection: _Connection, tag: str | None) -> str:
    """Read IMAP responses up to the tagged one for *tag* (None: just the
    greeting). Returns "done", "continue" (a ``+`` request) or "closed"."""
    while True:
        line = connection.read_line()
        if line is None:
            connection.record_closed()
            return "closed"
        # A response may carry literals: each ``{n}`` at a line's end is
        # followed by n bytes of data, then the rest of the response.
        response = line
        while (literal := _LITERAL.search(line)) is not None:
            size = int(literal.group(1))
            if size > MAX_LITERAL:
                connection._fail(f"a literal of {size} bytes")
            data = connection.read_exactly(size)
            rest = connection.read_line() if data is not None else None
            if data is None or rest is None:
                connection.record(response + (data or b""))
                connection.record_closed()
                return "closed"
            response += data + rest
            line = rest
        connection.record(response)
        if tag is None:
            return "done"
        if response.startswith(b"+"):
            return "continue"
        if response.startswith(tag.encode() + b" "):
            return "done"


def run(
    script: Iterable[str],
    endpoint: Endpoint,
    *,
    read_timeout: float = READ_TIMEOUT,
    deadline: float = DEADLINE,
    before: Mapping[str, Callable[[], object]] | None = None,
) -> list[str]:
    """Connect, read the greeting, send each line of *script* and read its
    reply; returns the transcript. A line may hold CRLFs (an IMAP line with
    a non-synchronizing literal). In IMAP, a line sent after a ``+``
    continuation request belongs to the pending command (literal data,
    an AUTHENTICATE response, DONE). The session ends after the script or
    when the server closes the connection. Waiting longer than
    *read_timeout* for a reply, or *deadline* in all, raises `DialogueError`.
    *before* maps a line of the script to what to do just before it is
    sent (another session's commands, a delivery), with this one open.
    """
    before = before or {}
    transcript: list[str] = []
    # The greeting gets the usual wait: *read_timeout* is for the replies to
    # the script (a short one is a test's limit on a command's reply, and
    # the server's thread may not run at all within it on a busy machine).
    connection = _Connection(
        endpoint, transcript, max(read_timeout, READ_TIMEOUT), deadline
    )
    try:
        if endpoint.protocol == "pop3":
            alive = _read_pop3(connection, None)
            connection.read_timeout = read_timeout
            for line in script:
                if not alive:
                    break
                if line in before:
                    before[line]()
                connection.send(line)
                alive = _read_pop3(connection, line)
                if (
                    alive
                    and _starts_tls(line, "STLS")
                    and transcript[-1].startswith("S: +OK")
                ):
                    connection.start_tls()
        else:
            state = _read_imap(connection, None)
            connection.read_timeout = read_timeout
            pending: str | None = None
            for line in script:
                if state == "closed":
                    break
                if line in before:
                    before[line]()
                connection.send(line)
                tag = pending or (line.split(" ", 1)[0] if line else "")
                state = _read_imap(connection, tag)
                pending = tag if state == "continue" else None
                if (
                    state == "done"
                    and _starts_tls(line.partition(" ")[2], "STARTTLS")
                    and transcript[-1].startswith(f"S: {tag} OK")
                ):
                    connection.start_tls()
    finally:
        connection.close()
    return transcript


def _starts_tls(command: str, verb: str) -> bool:
    return command.strip().upper() == verb


# --------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------


@dataclass
class _Masker:
    """Renames values consistently: the first UIDL seen becomes <uidl-1>,
    the same value again the same name, so patterns survive masking."""

    names: dict[tuple[str, str], str] = field(default_factory=dict)
    command: str = ""
    greeted: bool = False
    #: The next server line is the first of a reply (where POP3 status is).
    first: bool = True

    def name(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self.names:
            count = sum(1 for k in self.names if k[0] == kind) + 1
            self.names[key] = f"<{kind}-{count}>"
        return self.names[key]


_APOP = re.compile(r"<[^<>@\s]+@[^<>\s]+>")
_POP3_UIDL_LINE = re.compile(r"^(\+OK )?(\d+) (\S+)$")
_IMPLEMENTATION = re.compile(r"^IMPLEMENTATION .*$", re.IGNORECASE)
_UIDVALIDITY = re.compile(
    r"((?:UIDVALIDITY|\[APPENDUID|\[COPYUID) )(\d+)", re.IGNORECASE
)
_INTERNALDATE = re.compile(r'(INTERNALDATE )"[^"]*"', re.IGNORECASE)
# Dovecot appends its timing to tagged replies: "OK Fetch completed (0.001 +
# 0.000 + 0.001 secs)."
_TIMING = re.compile(r" \(\d+\.\d+(?: \+ \d+\.\d+)* secs\)")
_CAPABILITIES = re.compile(r"(\[CAPABILITY |^\* CAPABILITY )[^\]]*", re.IGNORECASE)
_ID = re.compile(r"^(\* ID ).*$", re.IGNORECASE)
_IMAP_STATUS_TEXT = re.compile(
    r"^((?:\*|[^\s*+]+) (?:OK|NO|BAD|BYE|PREAUTH)(?: \[[^\]]*\])?)(?: .*)?$",
    re.IGNORECASE,
)
_POP3_STATUS_TEXT = re.compile(r"^([+-](?:OK|ERR)(?: \[[^\]]*\])?)(?: .*)?$")


def masked(
    transcript: Sequence[str],
    *,
    capabilities: bool = False,
    text: bool = False,
    extra: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """*transcript* with the parts two correct servers may differ in
    replaced by placeholders.

    Always: the greeting's text (POP3: kept ``<apop>`` when it offers APOP;
    IMAP: its capability list stays unless *capabilities*), UIDL values
    (consistently renamed), UIDVALIDITY (renamed, also in APPENDUID and
    COPYUID), INTERNALDATE, the CAPA
    ``IMPLEMENTATION`` value, ``* ID`` contents and Dovecot's timings.
    *capabilities*: also IMAP capability lists. *text*: also the free text
    of every status reply (``+OK``/``-ERR``, ``OK``/``NO``/``BAD``...), so
    only status, response codes and data are compared. *extra*: more
    ``(regex, replacement)`` pairs, applied to server lines last.
    """
    masker = _Masker()
    result = []
    for entry in transcript:
        if entry.startswith("C: "):
            masker.command = entry[3:].strip().upper()
            masker.first = True
            result.append(entry)
            continue
        line = entry[3:] if entry.startswith("S: ") else entry
        line = _mask_line(line, masker, capabilities=capabilities, text=text)
        for pattern, replacement in extra:
            line = re.sub(pattern, replacement, line)
        result.append(f"S: {line}")
    return result


def _mask_line(line: str, masker: _Masker, *, capabilities: bool, text: bool) -> str:
    first, masker.first = masker.first, False
    if line == CLOSED:
        return line
    if not masker.greeted:
        masker.greeted = True
        if line.startswith("+OK"):
            return "+OK <greeting>" + (" <apop>" if _APOP.search(line) else "")
        if line.startswith("* "):
            match = _IMAP_STATUS_TEXT.match(line)
            head = match.group(1) if match else line.split(" ", 2)[0]
            if capabilities:
                head = _CAPABILITIES.sub(r"\1<capabilities>", head)
            return f"{head} <greeting>"
    command = masker.command
    # POP3
    if command.startswith("UIDL") and (match := _POP3_UIDL_LINE.match(line)):
        prefix, number, uid = match.groups()
        return f"{prefix or ''}{number} {masker.name('uidl', uid)}"
    if command == "CAPA" and _IMPLEMENTATION.match(line):
        return "IMPLEMENTATION <implementation>"
    # IMAP
    line = _UIDVALIDITY.sub(
        lambda m: m.group(1) + masker.name("uidvalidity", m.group(2)), line
    )
    line = _INTERNALDATE.sub(r"\1<date>", line)
    line = _TIMING.sub("", line)
    line = _ID.sub(r"\1<id>", line)
    if capabilities:
        line = _CAPABILITIES.sub(r"\1<capabilities>", line)
    if text:
        # A POP3 status is only the first line of a reply (a message line may
        # start with "+OK" too).
        for status in (_POP3_STATUS_TEXT, _IMAP_STATUS_TEXT)[0 if first else 1 :]:
            if match := status.match(line):
                return f"{match.group(1)} <text>"
    return line
