"""``smtpsink`` / ``python -m pytest_smtpsink``: the sink as a foreground server.

For local development and manual checks: point an app (or swaks, or curl) at
it and watch each session and message as it arrives. It is the same
`SMTPSink` the pytest plugin runs, with the same TLS and AUTH settings;
``--pop3`` and ``--imap`` start its read-side servers on the given ports
(``SMTPSink.serve_mailboxes``), so a mail client can read what was sent.

The main thread sleeps reading one end of a socket pair; a store listener
(on the server thread) writes a byte to the other after a change, so output
appears the moment something happens, without polling. Ctrl-C (SIGINT),
SIGTERM and SIGHUP stop the server cleanly: the signal handler only sets a flag and
writes a byte too, and the main thread stops once it has reported what it
was reporting, so a message is never half written to the save directory.
"""

from __future__ import annotations

import argparse
import codecs
import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import functools
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TextIO

from . import __version__
from ._files import (
    DirectoryInUse,
    SaveGuard,
    lock_directory,
    saved_files_in,
    write_message,
    write_session,
)
from ._mailbox import quit_after_ehlo
from ._message import raw_summary, summary_with_relay
from ._server import SinkError, SMTPSink, bind_errno, plain_reason
from ._session import CONTENT_CUT_OFF, CONTENT_TIMED_OUT, said_nothing
from ._settings import (
    DEFAULT_HOST,
    DEFAULT_HOSTNAME,
    SettingsError,
    SinkSettings,
    one_mailbox_clash,
    parse_number,
    parse_size,
    parse_whole,
)
from ._text import clock, close_names, format_address, plural, printable
from ._tls import standalone_spelling

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

    from ._endpoint import ReadSideEndpoint
    from ._live import LiveServer
    from ._message import Message
    from ._relay import RelayOutcome
    from ._session import Session
    from ._store import Follower

#: Not 25 or 587 (binding them needs root) and not 1025, the default of
#: MailHog, Mailpit and MailCatcher, so the sink can run beside them.
DEFAULT_PORT = 2525

# The command-line option for each `SinkSettings` field, to name it in errors.
_OPTION_FOR_SETTING = {
    "host": "--host",
    "port": "--port",
    "hostname": "--hostname",
    "max_size": "--max-size",
    "max_recipients": "--max-recipients",
    "tls": "--tls",
    "auth": "--auth",
    "auth_required": "--auth-required",
    "auth_plaintext": "--auth-plaintext",
    "allow_remote": "--allow-remote",
    "relay": "--relay",
    "relay_to": "--relay-to",
    "relay_allow_remote": "--relay-allow-remote",
    "relay_timeout": "--relay-timeout",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
}

#: The API's spellings in settings errors, as the options say them.
_CLI_SPELLING = {
    "relay=URL": "--relay URL",
    "relay_allow_remote=True": "--relay-allow-remote",
    "relay needs relay_to=REGEX": "--relay needs --relay-to REGEX",
    "is the key of tls_cert; give tls_cert too": (
        "is the key of --tls-cert; give --tls-cert too"
    ),
    "(no tls_key given:": "(no --tls-key given:",
    # No option takes a context: the command can only say what works.
    ", or load it yourself into tls_context=": "",
}


# -- arguments ---------------------------------------------------------------------


def _port(text: str) -> int:
    try:
        value = parse_whole(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a number from 0 to 65535 (0 picks a free port), got {text!r}"
        )
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    try:
        value = parse_whole(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    # Here, not in the settings: their error would echo the float ("got
    # 0.0"), not what was typed.
    try:
        value = parse_number(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # nan fails too
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0, got {text!r}"
        )
    return value


def _http_host(text: str) -> str:
    from ._live import allowed_host

    try:
        return allowed_host(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: The password of an ``--auth USER`` given without one, as --relay's is
#: taken from SMTPSINK_RELAY_PASSWORD: out of the process list.
AUTH_PASSWORD_VARIABLE = "SMTPSINK_AUTH_PASSWORD"


def _auth_entry(text: str) -> str:
    # Checked here so the error names --auth; combined in `_auth_setting`.
    # No value is shown: a USER alone may well be a password typed alone.
    if not text:
        raise argparse.ArgumentTypeError("must be 'any' or USER:PASSWORD, got ''")
    if text != "any" and ":" not in text:
        if not os.environ.get(AUTH_PASSWORD_VARIABLE):
            raise argparse.ArgumentTypeError(
                "must be 'any', USER:PASSWORD, or USER with the password in "
                f"{AUTH_PASSWORD_VARIABLE}, which is not set (got a value "
                "without ':')"
            )
        return text
    if text != "any" and not text.split(":", 1)[0]:
        raise argparse.ArgumentTypeError(
            "must be 'any' or USER:PASSWORD, got no USER before ':'"
        )
    if text != "any" and not text.split(":", 1)[1]:
        # Most likely "ann:$PASSWORD" with the variable unset: taken, it
        # would let anyone log in as that user with no password at all.
        raise argparse.ArgumentTypeError(
            "must be 'any' or USER:PASSWORD, got no PASSWORD after ':'"
        )
    return text


class _Parser(argparse.ArgumentParser):
    def option_names(self) -> list[str]:
        """Every option it takes, each spelling (``-q``, ``--quiet``)."""
        return [name for action in self._actions for name in action.option_strings]


def build_parser() -> _Parser:
    parser = _Parser(
        prog="smtpsink",
        # "--save" was taken for --save-dir: a script relying on a prefix
        # breaks once another option starts with it.
        allow_abbrev=False,
        description=(
            "Run pytest-smtpsink's SMTP server in the foreground: it accepts every "
            "message, prints each session and message as it arrives and can save "
            "them as .eml files. Stop it with Ctrl-C."
        ),
        epilog=(
            "Example: smtpsink --port 2525 --save-dir mail/  then send with "
            "'swaks --server 127.0.0.1:2525 --to ann@example.com'."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    where = parser.add_argument_group("where to listen")
    where.add_argument(
        "--host",
        metavar="ADDRESS",
        default=DEFAULT_HOST,
        help="IP address to bind (default: %(default)s). Addresses other than "
        "loopback need --allow-remote.",
    )
    where.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="TCP port (default: %(default)s: needs no root, unlike 25 and 587, "
        "and is not 1025, which MailHog, Mailpit and MailCatcher use, so they can "
        "run side by side). 0 picks a free port; the listening line says which.",
    )
    where.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not a loopback address. The sink accepts "
        "mail from anyone who can reach it: use only on a trusted network.",
    )
    smtp = parser.add_argument_group("SMTP behaviour")
    smtp.add_argument(
        "--hostname",
        metavar="NAME",
        default=DEFAULT_HOSTNAME,
        help="name in the 220 greeting and the EHLO reply (default: %(default)s)",
    )
    smtp.add_argument(
        "--max-size",
        type=_size,
        default=None,
        metavar="BYTES",
        help="largest message accepted, e.g. 10M (default: 64M; 0 means no limit)",
    )
    smtp.add_argument(
        "--max-recipients",
        type=_positive,
        default=None,
        metavar="N",
        help="refuse RCPT TO after N recipients (default: no limit)",
    )
    smtp.add_argument(
        "--tls",
        choices=["starttls", "starttls-required", "implicit"],
        default=None,
        help="offer STARTTLS, require it before MAIL, or speak TLS from the first "
        "byte (SMTPS). The certificate comes from a throwaway CA made for this "
        "run; its PEM file's path is printed at start so clients can trust it.",
    )
    smtp.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=None,
        help="present this certificate (and chain) instead of the throwaway CA's; "
        "the file may hold the private key too. Needs --tls.",
    )
    smtp.add_argument(
        "--tls-key",
        metavar="PEM",
        default=None,
        help="the private key of --tls-cert, if not in the same file",
    )
    smtp.add_argument(
        "--auth",
        type=_auth_entry,
        action="append",
        default=None,
        metavar="any|USER[:PASSWORD]",
        help="offer AUTH (PLAIN, LOGIN, CRAM-MD5): 'any' accepts every user name and "
        "password; USER:PASSWORD (repeatable) accepts only those (USER alone: "
        f"the password from {AUTH_PASSWORD_VARIABLE}, out of the process list). "
        "Offered only over TLS unless --auth-plaintext is given.",
    )
    smtp.add_argument(
        "--auth-required",
        action="store_true",
        help="refuse MAIL FROM until the client has authenticated (needs --auth)",
    )
    smtp.add_argument(
        "--auth-plaintext",
        action="store_true",
        help="offer AUTH on connections without TLS too",
    )
    relay = parser.add_argument_group("relay (see the Relay and MX docs page)")
    relay.add_argument(
        "--relay",
        metavar="URL",
        default=None,
        help="relay accepted mail to this upstream: "
        "smtp://[USER:PASSWORD@]HOST:PORT, smtp+starttls://... or "
        "smtps://...; only the "
        "recipients matching --relay-to are relayed. Each message line says "
        "what became of it. Give USER@ alone and set SMTPSINK_RELAY_PASSWORD "
        "to keep the password out of the process list.",
    )
    relay.add_argument(
        "--relay-to",
        metavar="REGEX",
        default=None,
        help="relay the recipients matching REGEX in full, ignoring case, "
        "with their domain in either spelling (Unicode or xn--) (required "
        "with --relay; '.*' relays everything)",
    )
    relay.add_argument(
        "--relay-allow-remote",
        action="store_true",
        help="allow a --relay upstream that is not a loopback address",
    )
    relay.add_argument(
        "--relay-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long the relay waits for the upstream (default: 10)",
    )
    reading = parser.add_argument_group(
        "reading mail (see the Reading the captured mail section of the docs)"
    )
    reading.add_argument(
        "--pop3",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve each recipient's mailbox over POP3 on PORT (0 picks a free "
        "port), on the sink's host, with its --tls (STLS, or POP3S with "
        "implicit) and its --auth passwords (any password without a "
        "USER:PASSWORD table)",
    )
    reading.add_argument(
        "--imap",
        type=_port,
        default=None,
        metavar="PORT",
        help="the same over IMAP (STARTTLS, or IMAPS with --tls implicit)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--save-dir",
        metavar="DIR",
        default=None,
        help="write each message as DIR/NNNN-<subject>.eml (the bytes exactly as "
        "received) and each session's transcript as DIR/session-NNNN.txt. The "
        "directory is created if needed; files of an earlier run with the same "
        "names are replaced.",
    )
    output.add_argument(
        "--http",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve a live view of the mail at http://HOST:PORT/ (the list "
        "updates as mail arrives) and a JSON API; same host as the sink, so "
        "loopback unless --allow-remote. 0 picks a free port.",
    )
    output.add_argument(
        "--http-allow-host",
        type=_http_host,
        action="append",
        default=None,
        metavar="NAME",
        help="also answer live-view requests addressed to NAME (repeatable). "
        "Without it the view answers localhost and loopback addresses, and with "
        "--allow-remote also IP addresses, names without a dot (docker-compose "
        "services) and this machine's names: a web page could point any other "
        "name at the sink and read the mail (DNS rebinding). '*' answers any "
        "name, which lets such pages in.",
    )
    output.add_argument(
        "--transcripts",
        action="store_true",
        help="print each session's SMTP conversation when it ends (AUTH masked)",
    )
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the listening address and the final count",
    )
    return parser


def _auth_setting(
    parser: argparse.ArgumentParser, entries: list[str] | None
) -> Literal["any"] | dict[str, str] | None:
    if not entries:
        return None
    if "any" in entries:
        if len(entries) > 1:
            parser.error("argument --auth: 'any' cannot be combined with USER:PASSWORD")
        return "any"
    table: dict[str, str] = {}
    for entry in entries:
        user, colon, password = entry.partition(":")
        if not colon:  # checked by _auth_entry: the variable is set
            password = os.environ.get(AUTH_PASSWORD_VARIABLE, "")
        if user in table:
            parser.error(f"argument --auth: user {user!r} is given twice")
        table[user] = password
    # Here, not left to SinkSettings: without --tls, settings_from_args
    # reads any complaint of its about auth as AUTH wanting TLS.
    clash = one_mailbox_clash(table)
    if clash is not None:
        parser.error(f"argument --auth: {clash}")
    return table


def settings_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> SinkSettings:
    """The `SinkSettings` the arguments ask for; a usage error if invalid."""
    _check_port_clashes(parser, args)
    if args.http is None and args.http_allow_host:
        parser.error("argument --http-allow-host: is only used with --http PORT")
    if args.quiet and args.transcripts:
        # --quiet prints no session, so the transcripts asked for would vanish.
        parser.error("argument --transcripts: cannot be combined with --quiet")
    if args.auth_plaintext and args.auth is None:
        # It only allows AUTH without TLS: alone it would do nothing.
        parser.error(
            "argument --auth-plaintext: is only used with --auth any or "
            "--auth USER:PASSWORD"
        )
    if args.relay is None:
        for option, given in (
            ("--relay-allow-remote", args.relay_allow_remote),
            ("--relay-timeout", args.relay_timeout is not None),
        ):
            if given:
                parser.error(f"argument {option}: is only used with --relay URL")
    values: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "hostname": args.hostname,
        "tls": args.tls,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "auth": _auth_setting(parser, args.auth),
        "auth_required": args.auth_required,
        "auth_plaintext": args.auth_plaintext,
        "allow_remote": args.allow_remote,
        "max_recipients": args.max_recipients,
        "relay": args.relay,
        "relay_to": args.relay_to,
        "relay_allow_remote": args.relay_allow_remote,
    }
    if args.relay_timeout is not None:
        values["relay_timeout"] = args.relay_timeout
    if args.max_size is not None:
        values["max_size"] = args.max_size
    try:
        return SinkSettings(**values)
    except SettingsError as error:
        option = _OPTION_FOR_SETTING.get(error.setting, error.setting)
        message = str(error).removeprefix(f"{error.setting}: ")
        for api, cli in _CLI_SPELLING.items():  # the words of the API's messages
            message = message.replace(api, cli)
        if error.setting == "host" and _is_remote_ip(args.host):
            message = (
                f"{args.host} is not a loopback address; the sink accepts mail from "
                "anyone who can reach it, so ask for this with --allow-remote"
            )
        elif error.setting == "auth_required":
            message = "needs --auth any or --auth USER:PASSWORD"
        elif error.setting == "tls_cert" and args.tls is None:
            message = "needs --tls starttls, starttls-required or implicit"
        elif error.setting == "auth" and args.tls is None:
            message = (
                "AUTH is only offered over TLS: add --tls starttls (or implicit), "
                "or --auth-plaintext to allow AUTH without TLS"
            )
        parser.error(f"argument {option}: {message}")


def _check_port_clashes(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    """A usage error if two options ask for the same fixed port (binding
    the second would fail after the first started)."""
    taken: dict[int, str] = {}
    for option, port in (
        ("--port", args.port),
        ("--http", args.http),
        ("--pop3", args.pop3),
        ("--imap", args.imap),
    ):
        if not port:  # not asked for, or 0: a free port
            continue
        if port in taken:
            parser.error(f"argument {option}: port {port} is taken by {taken[port]}")
        taken.setdefault(port, option)


def _is_remote_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- running ---------------------------------------------------------------------


@dataclasses.dataclass
class _Reporter:
    """Turns what the store holds into output lines and saved files."""

    sink: SMTPSink
    #: None when the process has no standard output.
    out: TextIO | None
    quiet: bool
    transcripts: bool
    save_dir: str | None
    live: LiveServer | None = None
    #: The save directory's lock (None: unguarded, or no saving).
    guard: SaveGuard | None = None
    messages: int = 0
    sessions: int = 0
    #: Of `sessions`, those of POP3 and IMAP clients.
    read_sessions: int = 0
    _follower: Follower | None = None
    _open: dict[int, tuple[int, Session]] = dataclasses.field(default_factory=dict)
    #: When an open session's last message came: the store no longer keeps
    #: a session's messages on it once they are reported.
    _last_mail: dict[int, datetime.datetime] = dataclasses.field(default_factory=dict)
    # Messages whose relay outcome is still to be printed.
    _relaying: list[Message] = dataclasses.field(default_factory=list)
    _output_closed: bool = False
    #: Another run took the save directory: nothing more is saved there.
    _save_lost: bool = False
    #: Bytes and messages reported since the last collection.
    _unreclaimed: tuple[int, int] = (0, 0)
    #: Mail the store forgot that is held in reference cycles is freed by
    #: the cyclic garbage collector alone, whose full runs follow the
    #: number of objects made: a 20 MB message makes few, and a sink fed
    #: large mail grew by all of it. Past either bound, `_reclaim`.
    RECLAIM_BYTES: ClassVar[int] = 32 * 1024 * 1024
    RECLAIM_MESSAGES: ClassVar[int] = 1000

    def __post_init__(self) -> None:
        # Reported items need not stay in memory: a sink left running all
        # day should not grow (open sessions are kept in `_open`).
        self._follower = self.sink.follow()
        self._console: _Console | None = None
        if self.out is not None:
            try:
                descriptor = self.out.fileno()
            except (OSError, ValueError):  # not a file (a test's StringIO)
                pass
            else:
                self.out.flush()  # what was printed before comes first
                encoding = getattr(self.out, "encoding", None) or "utf-8"
                self._console = _Console(descriptor, encoding, self._output_failed)

    def say(self, line: str) -> None:
        if self._output_closed:
            return
        if self.out is None:  # started with stdout closed (`smtpsink >&-`)
            self._stop_output("standard output is closed")
            return
        if self._console is not None:
            self._console.put(line)
            return
        try:
            try:
                self.out.write(line + "\n")
            except UnicodeEncodeError:
                # An output that is not UTF-8 (a Windows code page,
                # PYTHONIOENCODING=ascii): what it cannot hold is escaped.
                encoding = getattr(self.out, "encoding", None) or "ascii"
                escaped = (line + "\n").encode(encoding, "backslashreplace")
                self.out.write(escaped.decode(encoding))
            self.out.flush()
        except (OSError, ValueError) as error:
            if isinstance(error, ValueError) and not self.out.closed:
                raise  # not about the output: the caller's last resort says it
            self._output_failed(error)

    def close_output(self) -> None:
        """Let the console's writer write what is left, for a while: an
        output nobody reads does not hold the process (its mail is saved)."""
        if self._console is not None:
            self._console.close(self.OUTPUT_DRAIN)

    #: Seconds the end waits for an output nobody reads to take what is left.
    OUTPUT_DRAIN: ClassVar[float] = 2.0

    def _output_failed(self, error: OSError | ValueError) -> None:
        """Stop the output for ``error`` (any thread: the console's writer's
        too), saying why."""
        # Windows says EINVAL for a pipe whose reader has gone.
        if isinstance(error, BrokenPipeError) or (
            sys.platform == "win32" and getattr(error, "errno", None) == errno.EINVAL
        ):
            # `smtpsink | head`: whoever read the output has gone.
            self._stop_output("output closed")
        else:
            # `> /dev/full`, a full disk, a closed file: what was not
            # written cannot be written later in order either.
            self._stop_output(f"cannot write the output ({plain_reason(error)})")

    def _stop_output(self, why: str) -> None:
        """Write no more, say so once, and serve on (saving, with --save-dir,
        until stopped)."""
        self._output_closed = True
        if self.out is not None:
            with contextlib.suppress(OSError, ValueError):
                # Python's last flush of stdout at exit would fail again. This
                # points the descriptor (the process's stdout, mostly) at
                # devnull for good: nothing written to it could arrive now.
                descriptor = self.out.fileno()
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, descriptor)
                finally:
                    os.close(devnull)
        _warn(f"{why}; the sink runs on until stopped (Ctrl-C)")

    def process(self) -> None:
        """Report what happened since the last call, oldest first."""
        self._report_new()
        # After the report's own references to the sessions it closed are
        # gone: their mail is garbage now, if nothing else keeps it.
        self._reclaim()

    def _report_new(self) -> None:
        assert self._follower is not None
        events: list[tuple[datetime.datetime, int, int, Callable[[], None]]] = []
        numbers: dict[int, int] = {}
        new_messages, new_sessions = self._follower.take()
        self._number_opened(new_sessions, numbers, events)
        # The sessions seen ended now, then what was stored meanwhile: a
        # session's mail is stored before its end, so this holds all of
        # theirs (a client's last message and its QUIT may have come
        # between the first look and this one). The new sessions of the
        # second look are looked at next time: a change after `clear`
        # wakes the loop again.
        ended = [key for key, (_, s) in self._open.items() if s.end is not None]
        more_messages, more_sessions = self._follower.take()
        self._number_opened(more_sessions, numbers, events)
        new_messages += more_messages
        new_sessions += more_sessions
        # Read before the live view shows them, and once (see
        # `_report_message`): what a page showed "pending" is redrawn when
        # the outcome comes.
        relays = [message.relay for message in new_messages]
        if self.live is not None:
            # The live view shows what was sent: its "connections without a
            # message" are SMTP clients; POP3 and IMAP ones are printed here.
            # Each session under the number printed here.
            self.live.inbox.add(
                new_messages,
                [s for s in new_sessions if s.protocol == "SMTP"],
                numbers,
            )
        size, count = self._unreclaimed
        for message, relay in zip(new_messages, relays, strict=True):
            self.messages += 1
            size, count = size + len(message.raw), count + 1
            if id(message.session) in self._open:
                self._last_mail[id(message.session)] = message.received_at
            events.append(
                (
                    # After its session's opening, if the clock stepped back.
                    max(message.received_at, message.session.started_at),
                    1,
                    message.number,
                    functools.partial(self._message, message, relay),
                )
            )
        self._unreclaimed = (size, count)
        smtp_ended = False
        for key in ended:
            number, session = self._open.pop(key)
            last_mail = self._last_mail.pop(key, None)
            smtp_ended = smtp_ended or session.protocol == "SMTP"
            at = session.ended_at or session.started_at
            # After its opening and its last message, even if the clock
            # stepped back.
            at = max(at, session.started_at)
            if last_mail is not None:
                at = max(at, last_mail)
            events.append(
                (at, 2, number, functools.partial(self._closed, number, session))
            )
        for *_, report in sorted(events, key=lambda e: e[:3]):
            report()
        if smtp_ended and self.live is not None:
            # A connection without a message shows how it ended: redraw.
            self.live.inbox.touch()
        self._report_relays()

    def _number_opened(
        self,
        sessions: tuple[Session, ...],
        numbers: dict[int, int],
        events: list[tuple[datetime.datetime, int, int, Callable[[], None]]],
    ) -> None:
        """Number the new ``sessions`` and add their opening lines."""
        for session in sessions:
            self.sessions += 1
            if session.protocol != "SMTP":
                self.read_sessions += 1
            number = numbers[id(session)] = self.sessions
            self._open[id(session)] = (number, session)
            events.append(
                (
                    session.started_at,
                    0,
                    number,
                    functools.partial(self._opened, number, session),
                )
            )

    def _reclaim(self) -> None:
        """Run a full garbage collection once the messages reported since
        the last held enough mail (see `RECLAIM_BYTES`)."""
        size, count = self._unreclaimed
        if size >= self.RECLAIM_BYTES or count >= self.RECLAIM_MESSAGES:
            gc.collect()
            self._unreclaimed = (0, 0)

    def relaying(self) -> list[int]:
        """The numbers of the messages whose relay outcome is still to come."""
        return [
            m.number for m in self._relaying if m.relay is not None and not m.relay.done
        ]

    def relay_pending(self) -> bool:
        """Whether a message's relay outcome is still to come (and shown)."""
        return not self.quiet and bool(self.relaying())

    def _report_relays(self) -> None:
        # The relay thread records outcomes after the message line went out.
        still = []
        for message in self._relaying:
            if message.relay is not None and message.relay.done:
                if not self.quiet:
                    self.say(f"message #{message.number} {message.relay}")
            else:
                still.append(message)
        if len(still) < len(self._relaying) and self.live is not None:
            # An open page shows the outcome too (its summary line).
            self.live.inbox.touch()
        self._relaying = still

    def finish(self) -> None:
        """After the server stopped: report the rest, including sessions the
        shutdown cut off."""
        self.process()
        for number, session in self._open.values():
            self._closed(number, session)
        self._open.clear()
        self._last_mail.clear()

    def _save(self, write: Callable[[Path], Path], what: str) -> Path | None:
        """Write into the save directory (made again if it was removed, e.g.
        to empty it); None after saying on stderr why it could not."""
        assert self.save_dir is not None
        directory = Path(self.save_dir)
        if self._save_lost:
            return None
        try:
            if self.guard is not None and not self.guard.holds():
                # Removed, and made again by another run: its files.
                self._save_lost = True
                _warn(
                    f"another run now saves to {self.save_dir!r} (it was removed "
                    "and made again): this sink saves nothing more there, so as "
                    "not to replace that run's files; its output goes on"
                )
                return None
            try:
                return write(directory)
            except FileNotFoundError:
                directory.mkdir(parents=True, exist_ok=True)
                return write(directory)
        except OSError as error:
            where = f" as {error.filename}" if error.filename else ""
            _warn(f"cannot save {what}{where}: {plain_reason(error)}")
            return None

    def _opened(self, number: int, session: Session) -> None:
        if not self.quiet:
            peer = format_address(*session.peer[:2])
            protocol = "" if session.protocol == "SMTP" else f" ({session.protocol})"
            self.say(
                f"{clock(session.started_at)} session {number} opened from "
                f"{peer}{protocol}"
            )

    def _message(self, message: Message, relay: RelayOutcome | None) -> None:
        try:
            self._report_message(message, relay)
        except Exception as error:
            # Last resort (every field is guarded): one message that cannot
            # be shown or saved must not stop the sink accepting mail.
            self.say(f"message {raw_summary(message, error)}")

    def _report_message(self, message: Message, relay: RelayOutcome | None) -> None:
        """Print and save ``message``, showing ``relay``: its relay outcome,
        read once by the caller (the relay thread may settle it any time; an
        outcome that comes after the "pending" line is printed on its own,
        by `_report_relays`)."""
        saved = ""
        if self.save_dir is not None:
            path = self._save(
                functools.partial(
                    write_message, number=message.number, message=message
                ),
                f"message #{message.number}",
            )
            saved = f"\n    saved as {path}" if path is not None else ""
        if not self.quiet:
            self.say(f"message {summary_with_relay(message, relay)}{saved}")
        if relay is not None and not relay.done:
            self._relaying.append(message)

    def _closed(self, number: int, session: Session) -> None:
        # Not a connection that said nothing (a health check's probe every
        # few seconds left a file each): its line on the console says it.
        if self.save_dir is not None and not said_nothing(session):
            self._save(
                functools.partial(write_session, number=number, session=session),
                f"the transcript of session {number}",
            )
        if self.quiet:
            return
        ended = session.ended_at or datetime.datetime.now().astimezone()
        self.say(f"{clock(ended)} {_session_header(number, session)}")
        if self.transcripts:
            for line in session.format_transcript().splitlines():
                self.say(f"    {line}")
        elif session.protocol == "SMTP":
            # Mail that was refused is often the bug: say why, briefly.
            for line in _refusals(session):
                self.say(f"    {line}")
            # A client that wanted STARTTLS or AUTH quits after EHLO, its
            # own error in the application's log, not here.
            hint = quit_after_ehlo(session, standalone=True)
            if hint:
                self.say(f"    hint: {hint.removeprefix('; ')}")


#: Refused steps shown under a closed session, without --transcripts.
_REFUSALS_SHOWN = 3


def _refusals(session: Session) -> list[str]:
    """The steps of an SMTP session that got a 4xx or 5xx reply, and a
    message cut off before its final dot (the client left, or the sink
    stopped, mid-DATA: no message, and no refusal says so), as transcript
    lines, the first few of them."""
    refused = [
        e
        for e in session.transcript
        if (e.code or 0) >= 400
        or (
            e.kind == "data"
            and e.line.endswith((CONTENT_CUT_OFF + ">", CONTENT_TIMED_OUT + ">"))
        )
    ]
    lines = [line for e in refused[:_REFUSALS_SHOWN] for line in e.lines()]
    if len(refused) > _REFUSALS_SHOWN:
        more = len(refused) - _REFUSALS_SHOWN
        lines.append(f"... and {more} more refused (--transcripts shows all)")
    return lines


def _restore_wakeup_fd(fd: int) -> None:
    # The one set before may be closed by now: then there is none to restore.
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(fd)


class _Console:
    """Writes the output's lines on a thread of its own. An output nobody
    reads (Ctrl-S in a terminal, a pipe into a pager left waiting, a log
    collector that stalls) blocks whoever writes to it: the main thread,
    which saves each message after printing the one before, saved no more
    while its clients were still told 250, and no signal could stop it.
    Lines beyond `LIMIT` not yet written are left out, and the output says
    how many, once it is read again."""

    #: Lines held for an output that is not read (a few megabytes).
    LIMIT: ClassVar[int] = 20_000

    def __init__(
        self,
        descriptor: int,
        encoding: str,
        on_error: Callable[[OSError], None],
    ) -> None:
        self._descriptor = descriptor
        # Incremental: an encoding with a BOM (utf-8-sig) writes it once.
        self._encoder = codecs.getincrementalencoder(encoding)("backslashreplace")
        # What a text stdout writes for "\n" there.
        self._newline = "\r\n" if sys.platform == "win32" else "\n"
        self._on_error = on_error
        self._lines: list[str] = []
        self._left_out = 0
        self._writing = False
        self._closing = False
        #: Bytes written so far: progress, for `close`.
        self._written = 0
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="smtpsink-output", daemon=True
        )
        self._thread.start()

    def put(self, line: str) -> None:
        with self._changed:
            if self._closing:
                return
            if len(self._lines) >= self.LIMIT:
                self._left_out += 1
                return
            self._lines.append(line)
            self._changed.notify_all()

    def close(self, timeout: float) -> None:
        """Write what is held, as long as the output takes some of it in
        every ``timeout`` seconds; for one nobody reads, the writer (a
        daemon) then goes with the process."""
        with self._changed:
            while True:
                written = self._written
                if self._changed.wait_for(
                    lambda: (
                        self._closing
                        or not (self._lines or self._left_out or self._writing)
                    ),
                    timeout,
                ):
                    break
                if self._written == written:  # nothing taken for `timeout`
                    break
            self._closing = True
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._writing = False
                self._changed.notify_all()
                self._changed.wait_for(
                    lambda: self._lines or self._left_out or self._closing
                )
                if self._closing:
                    return
                lines, self._lines = self._lines, []
                left_out, self._left_out = self._left_out, 0
                self._writing = True
            if left_out:  # they came after the lines held: the queue was full
                lines.append(
                    f"smtpsink: {plural(left_out, 'line')} of output left out: "
                    "the output was not read (the sink served on meanwhile)"
                )
            data = self._encoder.encode("".join(line + self._newline for line in lines))
            try:
                written = 0
                while written < len(data):
                    step = os.write(self._descriptor, data[written:])
                    written += step
                    with self._changed:
                        self._written += step
            except OSError as error:
                with self._changed:
                    self._closing = True
                    self._writing = False
                    self._lines.clear()
                    self._changed.notify_all()
                self._on_error(error)
                return


def _warn(text: str) -> None:
    with contextlib.suppress(OSError):  # stderr closed too: nothing to tell
        print(f"smtpsink: {text}", file=sys.stderr, flush=True)


def _session_header(number: int, session: Session) -> str:
    tls = "-"
    if session.tls is not None:
        how = "implicit" if session.tls.implicit else "STARTTLS"
        tls = f"{session.tls.version} ({how})"
    auth = "-"
    if session.auth is not None:
        outcome = "ok" if session.auth.success else "failed"
        auth = f"{session.auth.mechanism} {session.auth.username or '?'} {outcome}"
    count = session.message_count
    end: str = session.end or "server-closed"
    if session.tls_error is not None:
        end += ": " + standalone_spelling(session.tls_error)
    if session.protocol != "SMTP":
        # A mail reader: who logged in (never with what), no EHLO or mail.
        return printable(
            f"session {number} closed ({end}): {session.protocol}, "
            f"peer {format_address(*session.peer[:2])}, TLS {tls}, login {auth}"
        )
    return printable(
        f"session {number} closed ({end}): "
        f"peer {format_address(*session.peer[:2])}, EHLO {session.ehlo or '-'}, "
        f"TLS {tls}, AUTH {auth}, {plural(count, 'message')}"
    )


def _banner(
    sink: SMTPSink,
    save_dir: str | None,
    live: LiveServer | None = None,
    readers: Sequence[ReadSideEndpoint] = (),
) -> list[str]:
    settings = sink.settings
    modes = {
        None: "",
        "starttls": " (STARTTLS offered)",
        "starttls-required": " (STARTTLS required before MAIL)",
        "implicit": " (implicit TLS)",
    }
    bound = ""
    if sink.bind_host != sink.host:
        # [::], as URLs write it: "bound to ::: every" read as a typo.
        host = f"[{sink.bind_host}]" if ":" in sink.bind_host else sink.bind_host
        bound = f" (bound to {host}: every interface)"
    lines = [
        f"smtpsink {__version__} listening on {sink.url}{modes[settings.tls]}{bound}"
    ]
    for endpoint in readers:
        protocol = "POP3" if endpoint.url.startswith("pop3") else "IMAP"
        command = "STLS" if protocol == "POP3" else "STARTTLS"
        mode = {
            None: "",
            "starttls": f" ({command} offered)",
            "starttls-required": f" ({command} required before login)",
            "implicit": " (implicit TLS)",
        }[settings.tls]
        lines.append(f"{protocol} listening on {endpoint.url}{mode}{bound}")
    if readers:
        password = (
            "its --auth password"
            if isinstance(settings.auth, Mapping)
            else "any password"
        )
        lines.append(f"mailboxes: log in as a recipient address with {password}")
        if isinstance(settings.auth, Mapping):
            # Mail is filed by recipient address: such a user reads nothing.
            names = sorted(user for user in settings.auth if "@" not in user)
            if names:
                one = len(names) == 1
                lines.append(
                    f"note: --auth {'user' if one else 'users'} "
                    f"{', '.join(map(printable, names))} "
                    f"{'is not an address' if one else 'are not addresses'}: "
                    f"{'it logs' if one else 'they log'} in to a mailbox no mail "
                    "reaches; give --auth ADDRESS:PASSWORD for each mailbox to read"
                )
    if settings.tls_cert is not None:
        lines.append(f"certificate: {settings.tls_cert} (yours: clients trust its CA)")
    elif settings.tls is not None:
        lines.append(f"CA certificate for clients to trust: {sink.ca_path}")
    if settings.auth is not None:
        who = (
            "any user name and password"
            if settings.auth == "any"
            # Not a user name that holds its own password (a token as both).
            else "users "
            + ", ".join(
                sorted(
                    "****" if password and password in user else user
                    for user, password in settings.auth.items()
                )
            )
        )
        lines.append(
            f"AUTH accepts {who}"
            + (", and is required before MAIL" if settings.auth_required else "")
        )
    if settings.relay is not None:
        from ._relay import masked_url

        lines.append(
            f"relaying to {masked_url(settings.relay)} the recipients matching "
            f"{settings.relay_to}"
        )
    if save_dir is not None:
        lines.append(f"saving messages and transcripts to {save_dir}")
        earlier = saved_files_in(Path(save_dir))
        if earlier:
            # A restart on the same volume (docker compose restart) would
            # replace them unannounced.
            lines.append(
                f"note: {save_dir} holds {plural(earlier, 'saved file')} of an "
                "earlier run: numbering starts at 1 again, so files of the same "
                "names are replaced (use a new directory per run to keep them)"
            )
    if live is not None:
        lines.append(f"live view on {live.url}{bound}")
        if settings.allow_remote:
            # Reachable from the network, and --auth may look like a lock.
            lines.append(
                "note: the live view asks for no login: whoever reaches it "
                "reads all mail and can delete it"
                + (
                    " (--auth guards SMTP AUTH, POP3 and IMAP, not the view)"
                    if isinstance(settings.auth, Mapping)
                    else ""
                )
            )
        if live.hosts.any:
            # Said in the docs only: at run time the banner was as usual.
            lines.append(
                "note: --http-allow-host '*' answers every Host name: a web page "
                "you open elsewhere can read the mail here through a name of its "
                "own (DNS rebinding); name the hosts instead where a browser can "
                "reach the sink"
            )
    lines.append("press Ctrl-C to stop")
    return lines


def _cannot_listen(option: str, host: str, port: int, error: BaseException) -> str:
    """The one-line error for a server of ``--option`` that cannot start,
    worded as the one for ``--port``."""
    return (
        f"smtpsink: error: --{option}: cannot listen on {format_address(host, port)}: "
        f"{plain_reason(error)} {_listen_advice(option, error)}"
    )


def _listen_advice(option: str, error: BaseException | None) -> str:
    """What to change when a server cannot listen: its port, mostly."""
    if error is not None and bind_errno(error) == errno.EADDRNOTAVAIL:
        return "(--host must be an address of this machine)"
    name = "--port" if option == "port" else f"--{option} port"
    return f"(choose another {name}, or --{option} 0 for a free one)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink until SIGINT or SIGTERM; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse names them, without the option that was meant.
        names = [given.partition("=")[0] for given in unknown if given[:1] == "-"]
        # "-port" for "--port" too.
        probes = {name if name[:2] == "--" else "-" + name: name for name in names}
        close = {
            probes[probe]: option
            for probe, option in close_names(probes, parser.option_names()).items()
        }
        hint = ", ".join(
            repr(option) if len(close) == 1 else f"{option!r} for {name}"
            for name, option in close.items()
        )
        parser.error(
            f"unrecognized arguments: {' '.join(unknown)}"
            + (f" (did you mean {hint}?)" if hint else "")
        )
    settings = settings_from_args(parser, args)
    save_dir: str | None = args.save_dir
    if save_dir is not None:
        if os.path.exists(save_dir) and not os.path.isdir(save_dir):
            parser.error(
                f"argument --save-dir: {save_dir!r} exists and is not a directory"
            )
        try:
            os.makedirs(save_dir, exist_ok=True)
        except OSError as error:
            parser.error(
                f"argument --save-dir: cannot create {save_dir!r}: {plain_reason(error)}"
            )
    guard = None
    if save_dir is not None:
        try:
            guard = SaveGuard(Path(save_dir), lock_directory(Path(save_dir)))
        except DirectoryInUse:
            parser.error(
                f"argument --save-dir: another run is saving to {save_dir!r} now "
                "(an smtpsink command or a pytest run), and each would replace "
                "the other's files: give each a directory of its own"
            )
    try:
        return _serve(args, settings, save_dir, guard)
    finally:
        if guard is not None:
            guard.release()  # the directory is free for another run


def _serve(
    args: argparse.Namespace,
    settings: SinkSettings,
    save_dir: str | None,
    guard: SaveGuard | None = None,
) -> int:
    """`main` once the options are read."""
    live = None
    if args.http is not None:
        from ._live import LiveServer

        try:
            live = LiveServer(
                settings.host,
                args.http,
                allow_remote=settings.allow_remote,
                allow_hosts=args.http_allow_host or (),
            )
        except OSError as error:
            print(
                _cannot_listen("http", settings.host, args.http, error), file=sys.stderr
            )
            return 1
    sink = SMTPSink(settings)
    if live is not None:
        # "Delete all" in the live view empties the mailboxes too (if POP3
        # or IMAP serves them), and says up to which message it deleted.
        live.on_delete = sink.empty_mailboxes
        live.serves_mailboxes = args.pop3 is not None or args.imap is not None
    reporter = _Reporter(
        sink,
        sys.stdout,
        quiet=args.quiet,
        transcripts=args.transcripts,
        save_dir=save_dir,
        live=live,
        guard=guard,
    )
    # aiosmtpd logs on "mail.log" (a warning per unknown command, and more);
    # with no logging set up, Python's last-resort handler prints that to
    # stderr. --quiet silences it; restored after: main() may run inside
    # another program.
    aiosmtpd_log = logging.getLogger("mail.log")
    silence = logging.NullHandler()
    propagate = aiosmtpd_log.propagate
    if args.quiet:
        aiosmtpd_log.addHandler(silence)
        aiosmtpd_log.propagate = False
    if live is not None:
        live.start()
    asked: list[tuple[Literal["pop3", "imap"], int | None]] = [
        ("pop3", args.pop3),
        ("imap", args.imap),
    ]
    reading = [(name, port) for name, port in asked if port is not None]
    try:
        return _Runner(sink, reporter, reading).run()
    finally:
        reporter.close_output()
        if live is not None:
            live.stop()
        if args.quiet:
            aiosmtpd_log.removeHandler(silence)
            aiosmtpd_log.propagate = propagate


class _Runner:
    """Start, wait for changes until a signal, stop, report."""

    def __init__(
        self,
        sink: SMTPSink,
        reporter: _Reporter,
        reading: Sequence[tuple[Literal["pop3", "imap"], int]] = (),
    ) -> None:
        self.sink = sink
        self.reporter = reporter
        #: The read-side servers asked for, with their ports.
        self.reading = reading
        self.stop_requested = False

    def _on_signal(
        self, wake_up: _WakeUp, signum: int, frame: FrameType | None
    ) -> None:
        self.stop_requested = True
        wake_up.now()

    def run(self) -> int:
        with contextlib.ExitStack() as cleanup:  # undone in reverse, whatever fails
            wake_up = _WakeUp()
            cleanup.callback(wake_up.close)
            handled: list[signal.Signals] = []
            if threading.current_thread() is threading.main_thread():
                # Signal handlers can only be set there.
                handled = self._handle_signals(wake_up, cleanup)
            cleanup.callback(self.sink.stop)
            return self._serve(wake_up, cleanup, handled)

    def _handle_signals(
        self, wake_up: _WakeUp, cleanup: contextlib.ExitStack
    ) -> list[signal.Signals]:
        on_signal = functools.partial(self._on_signal, wake_up)
        # SIGHUP: the terminal closed, the ssh session dropped; unless the
        # process was started ignoring it (nohup), which it then keeps.
        handled = [signal.SIGINT, signal.SIGTERM]
        hangup = getattr(signal, "SIGHUP", None)  # not on Windows
        if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
            handled.append(hangup)
        for signum in handled:
            previous = signal.signal(signum, on_signal)
            # None: a handler not set from Python, which cannot be set back.
            cleanup.callback(
                signal.signal, signum, signal.SIG_DFL if previous is None else previous
            )
        # A signal that the kernel hands to another thread runs our handler
        # only once the main thread runs again: the byte the interpreter
        # writes here, in whichever thread took it, wakes it.
        previous_fd = signal.set_wakeup_fd(wake_up.fileno(), warn_on_full_buffer=False)
        cleanup.callback(_restore_wakeup_fd, previous_fd)
        return handled

    def _serve(
        self,
        wake_up: _WakeUp,
        cleanup: contextlib.ExitStack,
        handled: list[signal.Signals],
    ) -> int:
        try:
            self.sink.start()
        except SinkError as error:
            advice = _listen_advice("port", error.__cause__)
            print(f"smtpsink: error: {error} {advice}", file=sys.stderr)
            return 1
        readers = self._start_reading()
        if readers is None:
            return 1  # the sink stops on the way out, and with it what did start
        # Not every transcript line: the reporter prints messages and
        # sessions as they begin and end (transcripts when they end).
        cleanup.callback(self.sink.on_change(wake_up.changed, lines=False))
        banner = _banner(self.sink, self.reporter.save_dir, self.reporter.live, readers)
        for line in banner:
            self.reporter.say(line)
        self._loop(wake_up)
        # A second Ctrl-C while stopping ends the process at once.
        quit_at_once = functools.partial(_quit_at_once, self.reporter)
        for signum in handled:
            signal.signal(signum, quit_at_once)
        relaying = self.sink.settings.relay is not None
        if relaying:
            # Reported (and saved) before the stop, which waits for the
            # relay: the wait is said for a message just taken, and a
            # second Ctrl-C during it loses no message unsaved or unnamed.
            self.reporter.process()
        if self.reporter.relay_pending():
            # Stopping waits for the message the relay is sending: say so, as
            # that may take the upstream's time.
            timeout = self.sink.settings.relay_timeout
            self.reporter.say(
                f"stopping: waiting for the relay's upstream (up to {timeout:g} s "
                "per step; Ctrl-C again quits at once)"
            )
        # Without a relay, the sink first, then the report of what came
        # since the last one: under load, reporting (printing, saving) took
        # longer than clients took to send more, and the sink kept answering
        # 250 for seconds after Ctrl-C (for good, with a slow stdout).
        # Everything it took is in its store, reported below.
        self._stop_awake(wake_up)
        self.reporter.process()
        if self.reporter.live is not None:
            self.reporter.live.stop()
        self.reporter.finish()
        reading = self.reporter.read_sessions
        self.reporter.say(
            f"smtpsink stopped: {plural(self.reporter.messages, 'message')} in "
            f"{plural(self.reporter.sessions, 'session')}"
            + (f" ({reading} POP3/IMAP)" if reading else "")
        )
        # While a second Ctrl-C still quits at once (not a KeyboardInterrupt
        # out of main(), once the handlers are set back).
        self.reporter.close_output()
        return 0

    def _stop_awake(self, wake_up: _WakeUp) -> None:
        """Stop the sink on a thread of its own while this one waits on
        `wake_up`: the stop may wait for the relay's upstream (minutes), and
        a second signal the kernel gave another thread ran its handler only
        once this thread ran Python again, after that wait. Any signal's
        byte (`signal.set_wakeup_fd`) wakes this thread, and it runs the
        handler, which quits at once."""
        failures: list[BaseException] = []
        # Set before the byte that says so: a wait that read that byte with
        # others finds it set (the thread itself may still be alive then).
        stopped = threading.Event()

        def stop() -> None:
            try:
                self.sink.stop()
            except BaseException as error:  # raised here, on the main thread
                failures.append(error)
            finally:
                stopped.set()
                wake_up.now()

        stopper = threading.Thread(target=stop, name="smtpsink-stop", daemon=True)
        stopper.start()
        while not stopped.is_set():
            wake_up.clear()
            if not stopped.is_set():
                wake_up.wait()
        stopper.join()
        if failures:
            raise failures[0]

    def _start_reading(self) -> list[ReadSideEndpoint] | None:
        """Start the POP3 and IMAP servers asked for, on the sink's bound
        host; None after saying why one cannot listen."""
        sink = self.sink
        readers: list[ReadSideEndpoint] = []
        for name, port in self.reading:
            try:
                # Nothing here reads what clients deleted.
                readers.append(sink.serve_mailboxes(name, port, forget_deleted=True))
            except (OSError, SinkError, concurrent.futures.TimeoutError) as error:
                print(
                    _cannot_listen(name, sink.bind_host, port, error), file=sys.stderr
                )
                return None
        return readers

    def _loop(self, wake_up: _WakeUp) -> None:
        while not self.stop_requested:
            wake_up.clear()
            self.reporter.process()
            if not self.stop_requested:
                wake_up.wait()


def _quit_at_once(reporter: _Reporter, signum: int, frame: FrameType | None) -> None:
    """A second signal while stopping: end now, by that signal as before,
    but without leaving the CA file behind, naming the messages whose relay
    it cuts off (their .eml files, with --save-dir, are there to resend)."""
    from ._tls import discard_ca_file

    discard_ca_file()
    unrelayed = [
        f"smtpsink: message #{number} was not relayed (stopped at once)\n"
        for number in reporter.relaying()
    ]
    print(
        "".join(unrelayed)
        + "smtpsink: stopped at once; mail not yet saved or relayed is lost",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class _WakeUp:
    """Wakes the main thread from any thread, or from a signal handler.

    The main thread sleeps reading one end of a socket pair, and a wake-up
    writes a byte to the other. Signal handlers must not raise to wake it:
    an exception raised there can land between a lock's acquire and the
    `with` that releases it (CPython runs handlers after calls into C),
    leaving a `threading.Event`'s lock held and the server thread, which
    takes it to report a change, blocked for good.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        # Set while a wake-up is unread: a burst of changes (a message, its
        # session's end, a relay outcome) costs one write, not one each.
        self._pending = False

    def fileno(self) -> int:
        """The end to write to, for `signal.set_wakeup_fd`."""
        return self._writer.fileno()

    def changed(self) -> None:
        """The store listener: any thread, once per change."""
        if not self._pending:
            self._pending = True
            self.now()

    def now(self) -> None:
        # When full, the reader has bytes to wake it already.
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def clear(self) -> None:
        """Before the main thread looks at the store: a change made from
        here on writes a byte, so the next `wait` cannot miss it."""
        self._pending = False

    def wait(self) -> None:
        self._reader.recv(4096)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
