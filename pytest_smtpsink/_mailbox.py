"""What a test holds: a window on one sink's store, with queries, waits and
assertions. Failure messages say what was expected and list what arrived.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import os
import re
import ssl
import sys
import time
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _match
from ._credentials import has_utf8_form
from ._fault_api import FaultControls
from ._match import Criteria
from ._message import Message, message_label, summary_or_raw
from ._messages import (
    CHECKING as _CHECKING,
)
from ._messages import (
    Elsewhere,
    Messages,
    arrived_elsewhere,
    failure_report,
)
from ._session import AuthInfo, Exchange, Session
from ._settings import DEFAULT_TIMEOUT, check_seconds
from ._text import (
    Undisplayed,
    argument_error,
    format_address,
    join_shortened,
    plural,
    printable,
    running_test,
    shorten,
    shown_number,
)

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Unpack

    from ._dns import DNSZone
    from ._faults import Faults
    from ._imap import IMAPEndpoint, IMAPServer
    from ._lint import Severity
    from ._pop3 import POP3Endpoint, POP3Server
    from ._relay import Delivery
    from ._server import SMTPSink
    from ._settings import SinkSettings
    from ._store import Store
    from ._user_mailbox import Deliverable, UserMailbox

    #: A read-side server class: both take the same arguments and `start`.
    _ReadServer = TypeVar("_ReadServer", POP3Server, IMAPServer)


#: What a `Mailbox.wait_until` condition returns, and the wait with it.
T = TypeVar("T")


def _wait_seconds(value: object, name: str = "timeout") -> float:
    """``value`` as seconds a wait may take: a number from 0, finite (NaN
    passes every comparison but waits for ever; inf overflows the clock)."""
    __tracebackhide__ = True  # a bad argument points at the test's line
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, got {shown_number(value)}"
        )
    if not 0 <= value < float("inf"):  # NaN fails too
        raise ValueError(
            f"{name} must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(value)


class Mailbox(FaultControls):
    """A test's view of one sink: what arrived since it was made (or cleared).

    The ``smtpsink`` fixture is a `Mailbox` on the session's default sink.
    """

    #: Since when failure reports say the messages they list arrived: "in
    #: this test" for the plugin's mailboxes (`share_test`); a view made in
    #: a session fixture may outlive many tests.
    _scope = _SINCE_VIEW = "since this view was made"
    #: The test's other mailboxes (the plugin sets the shared list), so that
    #: a failure here can say when the mail went to another sink instead.
    _neighbours: Sequence[Mailbox] = ()
    #: Mail that arrived in the test's set-up before this mailbox was made
    #: (a fixture set up before ``smtpsink``): not this mailbox's, but the
    #: reason for a "nothing arrived" that would otherwise blame the app.
    _set_up_mail: tuple[Message, ...] = ()
    #: Mail that arrived after the test's set-up, before this mailbox was
    #: made in the test's body (getfixturevalue, smtpsink_factory()): the
    #: test's own, sent too early.
    _body_mail: tuple[Message, ...] = ()
    #: The test this mailbox was made for, once it has ended (`end_of_test`):
    #: reading it then is refused, as it would show later tests' mail.
    _ended: str | None = None

    def __init__(self, sink: SMTPSink, store: Store, cursor: tuple[int, int]) -> None:
        self._sink = sink
        self._store = store
        self._cursor = cursor
        # The sink's test era and the test it was made in: see `_check_ended`.
        self._era = sink._test_era
        self._made_in = running_test()
        self._opened_at = time.time()  # see `_carried_sessions`
        self._django_outbox = _django_outbox_mark()
        self.default_timeout: float = DEFAULT_TIMEOUT
        """Seconds `wait_for` waits when given no timeout."""

    def _fault_registry(self) -> Faults:
        return self._sink._faults

    def _check(self, for_waiting: bool = False) -> None:
        """Before a read or a wait: refuse a mailbox whose test has ended,
        then `SMTPSink.check_running`."""
        __tracebackhide__ = True
        self._check_ended()
        self._sink.check_running(for_waiting)

    def _check_ended(self) -> None:
        """Refuse a mailbox whose test has ended (`end_of_test`), or made
        before the running test's first mailbox of the sink (a new era,
        `SMTPSink.forget_before`), and the recipients' mailboxes it gave
        (`mailbox`). No lock: flags."""
        __tracebackhide__ = True
        if self._ended is not None:
            raise RuntimeError(
                f"this mailbox belongs to {self._ended}, which has ended: it would "
                "show the mail of the tests that ran after it, as if it were that "
                "test's. Use the smtpsink (or smtpsink_factory()) of the running "
                "test; a mailbox kept in a global, a class attribute or a thread "
                "that outlived its test is read after its end."
            )
        if (
            self._era != self._sink._test_era
            and self is not self._sink
            and (
                self._made_in != running_test()
                or any(self._store.let_go_since(self._cursor))
            )
        ):
            # A later smtpsink (a new test's first mailbox) let go of mail
            # that came after this view was made: read then, it listed the
            # running test's mail as its own, and a check on it passed on
            # the wrong mail. Refused when it was made in another test, or
            # when its own mail went (a module fixture's seed mail, in the
            # test whose set-up made it); a view made in this test's set-up
            # that lost nothing (a fixture that reads at teardown what it
            # sends then) reads on, as does one cleared in this test.
            if self._made_in and self._made_in == running_test():
                messages, sessions = self._store.let_go_since(self._cursor)
                # A fixture that connected and sent nothing lost a session
                # only: "the 0 messages" did not say what went.
                lost = (
                    f"{plural(messages, 'message')} and {plural(sessions, 'session')}"
                )
                raise RuntimeError(
                    "this view was made in this test's set-up (or in an earlier "
                    f"run of it, before a rerun), and the test's smtpsink let go "
                    f"of the {lost} it had received since (the sink keeps the "
                    "running test's mail only): it would show the test's mail as "
                    "its own. Have the fixture that made it request smtpsink "
                    "before it sends, read its mail there (wait_for(...); the "
                    "messages it returns stay readable), or call the view's "
                    "clear() in the test first."
                )
            made_in = f"during {self._made_in}" if self._made_in else "outside a test"
            raise RuntimeError(
                f"this view was made {made_in} (in a fixture of wider scope, or "
                "kept since), and the sink let go of its mail when a later "
                "smtpsink was made (it keeps the running test's mail only): it "
                "would show the running test's mail as its own. Read it in the "
                "fixture that made it (wait_for(...) there; the messages it "
                "returns stay readable), call its clear() in the test first, or "
                "use the running test's smtpsink."
            )

    # -- where to send ------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address clients connect to (the sink's `SMTPSink.host`)."""
        return self._sink.host

    @property
    def port(self) -> int:
        """The sink's SMTP port (`SMTPSink.port`)."""
        return self._sink.port

    @property
    def url(self) -> str:
        """``smtp://host:port`` (``smtps://`` for implicit TLS)."""
        return self._sink.url

    @property
    def settings(self) -> SinkSettings:
        """The sink's settings (`SMTPSink.settings`)."""
        return self._sink.settings

    @property
    def sink(self) -> SMTPSink:
        """The server behind this view."""
        return self._sink

    def ssl_context(self) -> ssl.SSLContext:
        """A new client context that trusts this sink's certificate (and
        nothing else), with host name checking on."""
        __tracebackhide__ = True
        from ._tls import authority

        self._require_tls("ssl_context()")
        return authority().client_context()

    @property
    def ca_path(self) -> str:
        """Path of a PEM file with the CA that signed the sink's certificate."""
        __tracebackhide__ = True
        from ._tls import authority

        self._require_tls("ca_path")
        return authority().ca_path

    def _require_tls(self, what: str) -> None:
        __tracebackhide__ = True
        settings = self.settings
        if settings.tls is None:
            raise RuntimeError(
                f"{what} is for TLS sinks; this sink has tls=None. Ask for one with "
                "@pytest.mark.smtpsink(tls='starttls') or smtpsink_factory(tls=...)"
            )
        if settings.tls_cert is not None or settings.tls_context is not None:
            own = "tls_cert" if settings.tls_cert is not None else "tls_context"
            raise RuntimeError(
                f"{what} is for the sink's own test CA; this sink serves your "
                f"certificate ({own}=), so trust the CA that issued it"
            )

    def env(self, prefix: str = "SMTP_") -> dict[str, str]:
        """Settings for apps configured by environment variables.

        ``{"SMTP_HOST": ..., "SMTP_PORT": ..., "SMTP_URL": ...}`` and, for TLS
        sinks, ``SMTP_TLS`` (``starttls`` or ``implicit``) and ``SMTP_CA_FILE``
        (not with your own ``tls_cert`` or ``tls_context``).
        Use with ``monkeypatch.setenv`` or ``subprocess.run(env=...)``.
        """
        __tracebackhide__ = True
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str such as 'SMTP_', got {prefix!r}")
        values = {
            f"{prefix}HOST": self.host,
            f"{prefix}PORT": str(self.port),
            f"{prefix}URL": self.url,
        }
        if self.settings.tls is not None:
            values[f"{prefix}TLS"] = (
                "implicit" if self.settings.tls == "implicit" else "starttls"
            )
            if self.settings.tls_cert is None and self.settings.tls_context is None:
                values[f"{prefix}CA_FILE"] = self.ca_path
        return values

    def dkim_key(
        self,
        domain: str,
        selector: str = "s1",
        *,
        bits: int | None = None,
        private_key: str | bytes | None = None,
    ) -> str:
        """Make an RSA key pair for ``domain`` (or take ``private_key``, PEM),
        publish its public key for ``selector`` to `Message.dkim` (no real
        DNS), and return the private key PEM for the application to sign with.
        ``bits``: the size of the key to make, 1024 to 4096 (RFC 8301; 2048
        when not given); a smaller key can be passed as ``private_key``.
        Giving both is a `ValueError`: a key passed in has its own size.

        Published for the rest of the run (per xdist worker); publishing
        again for the same domain and selector replaces the key.
        """
        __tracebackhide__ = argument_error
        from ._dkim import publish_key

        # Out of this frame's variables, which --full-trace shows: a key
        # refused (an EC one, a cut PEM) was printed whole.
        given: Undisplayed[object] = Undisplayed(private_key)
        del private_key
        return publish_key(domain, selector, bits=bits, private_key=given)

    _dns: DNSZone | None = None

    @property
    def dns(self) -> DNSZone:
        """This test's DNS records on the sink's MX stub, started on first
        use (needs dnspython, see :doc:`relay`)."""
        if self._dns is None:
            from ._dns import DNSZone

            self._dns = DNSZone(self)
        return self._dns

    _pop3: POP3Endpoint | None = None
    _imap: IMAPEndpoint | None = None

    @property
    def pop3(self) -> POP3Endpoint:
        """The sink's POP3 server, serving the recipients' mailboxes: its
        `~POP3Endpoint.host`, `~POP3Endpoint.port` and TLS details. Started
        on first use, on the sink's thread (see :doc:`reading`)."""
        if self._pop3 is None:
            from ._pop3 import POP3Endpoint, POP3Server

            self._pop3 = POP3Endpoint(self, self._read_side("pop3", POP3Server))
        return self._pop3

    @property
    def imap(self) -> IMAPEndpoint:
        """The sink's IMAP server, serving the recipients' mailboxes: its
        `~IMAPEndpoint.host`, `~IMAPEndpoint.port` and TLS details. Started
        on first use, on the sink's thread (see :doc:`reading`)."""
        if self._imap is None:
            from ._imap import IMAPEndpoint, IMAPServer

            self._imap = IMAPEndpoint(self, self._read_side("imap", IMAPServer))
        return self._imap

    def _read_side(
        self,
        name: str,
        server_class: type[_ReadServer],
        bind_host: str | None = None,
        port: int = 0,
    ) -> _ReadServer:
        """The read-side server ``name`` of this sink, started on first use:
        on ``port`` of ``bind_host`` (the standalone sink's ``--pop3`` and
        ``--imap``), by default a free port of `host`. Raises OSError if
        that cannot be bound."""
        sink = self._sink
        # Taken out here: the server must not refer to the sink.
        host = sink.host if bind_host is None else bind_host
        settings = sink.settings
        faults, tls_context = sink._faults, sink._server_tls

        def start(loop: asyncio.AbstractEventLoop, store: Store) -> _ReadServer:
            server = server_class(host, store, settings, faults, tls_context, port=port)
            server.start(loop)
            return server

        return sink.attach(name, start)

    def close(self) -> None:
        """End this view: remove the fault rules and DNS records it added.
        The fixtures call it at the end of each test; a test need not. It
        takes no new rules, records or `deliver` calls after that (a
        RuntimeError); its sink serves on, and the view reads on."""
        super().close()
        if self._dns is not None:
            self._dns.clear()

    # -- the read side -------------------------------------------------------------

    def deliver(
        self,
        message: Deliverable,
        to: str | Sequence[str] | None = None,
        folder: str = "INBOX",
        flags: Iterable[str] = (),
        date: datetime.datetime | None = None,
    ) -> Message:
        """Put ``message`` in the mailboxes of ``to`` without SMTP, for
        testing an application that reads mail (see :doc:`reading`).

        ``message`` is bytes (kept exactly), text or an
        `email.message.Message` (given CRLF line ends; every header is kept,
        a ``Bcc:`` too, as in a Sent copy), or a path
        (`pathlib.Path`) to an ``.eml`` file. ``to`` is an address or a list
        (default: the To, Cc and Bcc addresses of the message). ``folder``
        is made if it does not exist; ``flags`` (e.g. ``{"\\Seen"}``) and
        ``date`` (IMAP's internal date, timezone-aware; default now; a zone
        with seconds is kept as the same instant in UTC) are
        those of the new copies. Returns the `Message`, which is not in
        `messages` (the application did not send it) but is in each
        recipient's `mailbox`. Its `Message.lint` judges it as mail that
        came without SMTP: raw UTF-8 in its headers is allowed (RFC 6532),
        where mail sent without SMTPUTF8 gets ``raw-8bit-header``; test
        how your application *sends* a message by sending it.
        """
        from ._mailstore import check_folder_name, given_folder_name, normalize_flags
        from ._user_mailbox import (
            check_date,
            check_unpadded,
            make_delivered,
            message_bytes,
            recipients_of,
        )

        __tracebackhide__ = True  # a bad argument points at the test's line
        # Nothing could read it: no POP3 or IMAP server runs on a stopped sink.
        self._sink._check_running("deliver mail")
        self._check_open("a message")
        if not isinstance(folder, str):
            raise TypeError(f"folder must be a folder name, got {folder!r}")
        if not folder.strip():
            raise ValueError(f"folder must be a folder name, got {folder!r}")
        given, folder = folder, given_folder_name(folder)  # "Archive/" as CREATE
        check_folder_name(folder, given)
        check_unpadded(folder)
        raw = message_bytes(message)
        recipients = recipients_of(raw, to)
        wanted_flags = normalize_flags(flags, in_a_test=True)
        when = check_date(date)
        captured = make_delivered(raw, recipients)
        captured.session._served_by = self.settings.hostname
        mail = self._store.mail
        with mail.lock:
            users = dict.fromkeys(mail.key(r) for r in recipients)
            for user in users:
                target = mail.folder(mail.account(user), folder, create=True)
                mail.add(target, captured, wanted_flags, when)
        self._store.mail_changed()
        return captured

    def mailbox(self, address: str) -> UserMailbox:
        """The mailbox of the recipient ``address`` (case-insensitive): its
        folders, messages and flags, with assertions (see :doc:`reading`).

        It holds the mail of this test: what arrived over SMTP for that
        address and what `deliver` put in, as the application under test
        left it over POP3 or IMAP.
        """
        from ._user_mailbox import _NOT_IN_AN_ADDRESS, UserMailbox, _recipient

        __tracebackhide__ = True
        if not isinstance(address, str):
            raise TypeError(f"mailbox() takes an address, got {address!r}")
        if not address.strip():
            raise ValueError(f"mailbox() takes an address, got {address!r}")
        # An address is checked as deliver(to=) checks it: two addresses, or
        # text no server would take as one, named a mailbox no mail reaches,
        # and assert_not_in() on it passed whatever happened. A name without
        # "@" is a login name, as POP3 and IMAP take any ("CORP\\ann"), but
        # not text with blanks or control characters ("ann example.com"): a
        # slip, more likely, and deliver(to=) refuses it too.
        written_as_address = (
            "@" in address
            or address.strip().startswith("<")
            or _NOT_IN_AN_ADDRESS.search(address.strip()) is not None
        )
        user = _recipient(address, "mailbox()") if written_as_address else address
        self._check()
        return UserMailbox(
            self._store,
            user,
            functools.partial(self._mail_for_elsewhere, user),
            functools.partial(self._refused_readers_hint, user),
            self._check_ended,
        )

    def _mail_for_elsewhere(self, user: str, criteria: Criteria) -> list[str]:
        """Hint lines for a failed mailbox assertion: mail for ``user`` that
        matches ``criteria`` and went to another sink of the test, over
        SMTP or into ``user``'s mailbox there (`deliver`, APPEND: how a
        reading test seeds its mail)."""
        from ._user_mailbox import UserMailbox

        found = {
            elsewhere.url: list(elsewhere.messages)
            for elsewhere in (
                self._elsewhere({**criteria, "rcpt_to": user}) if "@" in user else []
            )
            if elsewhere.matching
        }
        seen = {id(self._sink)}
        for view in self._neighbours:
            if id(view._sink) in seen:
                continue
            seen.add(id(view._sink))
            box = UserMailbox(view._store, user)
            listed = found.setdefault(view._sink.url, [])
            for name in box.folders:
                for copy in box.stored(name):
                    if _match.matches(copy.message, criteria) and not any(
                        copy.message is m for m in listed
                    ):
                        listed.append(copy.message)
        return arrived_elsewhere(
            [Elsewhere(url, mail, True) for url, mail in found.items() if mail],
            criteria or {"rcpt_to": user},
        )

    def _refused_readers_hint(self, user: str, open_named: bool = False) -> list[str]:
        """For a failed mailbox assertion: the reader never got in. No POP3
        or IMAP session of this scope logged in as ``user``, and some login
        was refused (a user name in another case than the ``auth`` table's,
        a wrong password): the listing alone said "found it with flags {}";
        or readers logged in as other users (a reader configured with the
        wrong one gets an empty mailbox, and found nothing)."""
        readers = [
            s for s in self._store.sessions_since(self._cursor) if s.protocol != "SMTP"
        ]
        key = self._store.mail.key
        user = key(user)
        own = [
            s
            for s in readers
            if s.authenticated_as is not None and key(s.authenticated_as) == user
        ]
        if own:
            # A reader locked out by another POP3 session of the user (the
            # one that logged in): a poller that logs the error and goes on
            # did nothing, and no other line said why.
            locked_out = sum(
                1
                for s in readers
                for a in s.auth_attempts
                if a.in_use and a.username is not None and key(a.username) == user
            )
            lines = (
                [
                    f"Hint: {plural(locked_out, 'POP3 login')} as {user} "
                    f"{'was' if locked_out == 1 else 'were'} refused {self._scope}: "
                    "the mailbox was in use by another POP3 session (RFC 1939 "
                    "lets one session at a time hold it, until its QUIT)"
                ]
                if locked_out
                else []
            )
            if open_named:
                return lines  # the report named the open POP3 session already

            # Not one that said LOGOUT or QUIT: its work is done, and the
            # sink notes its end a moment after the client's return.
            def open_readers() -> list[Session]:
                return [
                    s
                    for s in own
                    if s.end is None and s.commands[-1:] not in (["LOGOUT"], ["QUIT"])
                ]

            if open_readers() and not _CHECKING.active and _in_a_coroutine() is None:
                # A client that closed without LOGOUT (imaplib's shutdown(),
                # poplib's close()) a moment ago: its end is noted when the
                # sink reads the close. Waited for, as a failure path may.
                self._store.wait(lambda: not open_readers(), _SETTLE)
            still_open = open_readers()
            if not still_open:
                return lines
            # A reader in the background (a poller's thread) logged in and
            # has not done its work, or its POP3 QUIT (which deletes and
            # marks \Seen) has not come: the check ran too soon.
            listed = join_shortened(
                [
                    f"{s.protocol} from {format_address(*s.peer[:2])}"
                    for s in still_open
                ],
                _LISTED,
            )
            return [
                *lines,
                f"Hint: {plural(len(still_open), 'reader session')} of {user} "
                f"{'is' if len(still_open) == 1 else 'are'} still open ({listed}): "
                "one in the background may not have done its work yet (a POP3 "
                "session's deletions and \\Seen land at its QUIT); wait for it "
                "with smtpsink.wait_until(lambda: box.assert_in(...))",
            ]
        table = self.settings.auth
        refused = [
            f"{s.protocol} {a.mechanism} {printable(repr(a.username))}"
            + _why_refused(a, table)
            for s in readers
            for a in s.auth_attempts
            if not a.success
        ]
        others = list(
            dict.fromkeys(
                f"{s.protocol} {printable(repr(s.authenticated_as))}"
                for s in readers
                if s.authenticated_as is not None
            )
        )
        said = []
        if refused:
            said.append(
                f"refused: {join_shortened(refused, _LISTED)} (see the sessions' "
                "auth_attempts)"
            )
        if others:
            said.append(
                f"logged in as others: {join_shortened(others, _LISTED)} (each "
                "user reads a mailbox of its own; one no mail went to is empty)"
            )
        if not said:
            return []
        return [
            f"Hint: no POP3 or IMAP session logged in as {user} {self._scope}; "
            + "; ".join(said)
        ]

    # -- sending on ----------------------------------------------------------------

    def release(
        self,
        message: Message,
        host: str,
        port: int,
        *,
        mail_from: str | None = None,
        rcpt_to: Sequence[str] | None = None,
        tls: Literal["starttls", "implicit"] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        received: bool = True,
        timeout: float = 10.0,
        allow_remote: bool = False,
    ) -> Delivery:
        """Send a captured message on to another SMTP server (see :doc:`relay`).

        The bytes go exactly as captured, after a ``Received:`` header unless
        ``received=False``, with the captured envelope unless ``mail_from`` or
        ``rcpt_to`` is given. Returns the `Delivery` (the upstream's reply and
        the conversation); raises `RelayError` with the upstream's reply if it
        refuses. An upstream that is not on loopback needs
        ``allow_remote=True``, and ``auth`` to it needs ``tls``.
        """
        # Hidden, and the RelayError raised afresh from here: the traceback
        # (with --showlocals, its frames' variables) must not show ``auth``.
        # --full-trace shows hidden frames too: the password leaves the
        # frame's variables at once, held where its repr does not show it.
        __tracebackhide__ = True
        credentials = Undisplayed(auth)
        del auth
        from ._relay import (
            DSN,
            RelayError,
            Upstream,
            body_option,
            deliver,
            received_header,
        )

        if not isinstance(message, Message):
            raise TypeError(f"release() takes a captured Message, got {message!r}")
        _check_upstream_arguments(host, port, timeout, ca_file, ssl_context)
        if host.startswith("[") and host.endswith("]"):
            # An IPv6 address as a URL writes it: not "not loopback", nor
            # smtp://[[::1]] and a DNS error.
            host = host[1:-1]
        if host.lower() == "localhost.":
            # The same host (RFC 6761), which the hosts file names without
            # its final dot: getaddrinfo knows only that spelling.
            host = host[:-1]
        for name, flag in (("allow_remote", allow_remote), ("received", received)):
            # As the settings' relay_allow_remote: "no" would be true.
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls must be None, 'starttls' or 'implicit', got {tls!r}")
        if tls is None and (ca_file is not None or ssl_context is not None):
            # Ignored, the mail went in clear text while the test believed
            # it tried the TLS path (a relay URL's ?cafile= is refused alike).
            given = "ca_file" if ca_file is not None else "ssl_context"
            raise ValueError(
                f"{given} is for TLS: give tls='starttls' or tls='implicit' too"
            )
        if ca_file is not None:
            from ._relay import ca_file_problem

            problem = ca_file_problem(os.fspath(ca_file))
            if problem is not None:  # a key file, DER, empty: not a CA to trust
                raise ValueError(f"ca_file {problem}")
        login = credentials.value
        if login is not None and (
            not isinstance(login, tuple)
            or len(login) != 2
            or not all(isinstance(part, str) for part in login)
        ):
            del login
            raise ValueError("auth must be a (user, password) tuple of strings")
        if login is not None and not all(map(has_utf8_form, login)):
            del login
            # No lone surrogate (os.environ's stand-in for a byte that is
            # not UTF-8): AUTH could not send it, nor could it be masked.
            raise ValueError("auth's user or password is not valid Unicode text")
        upstream = Upstream(
            host,
            port,
            tls,
            login[0] if login else None,
            login[1] if login else None,
            os.fspath(ca_file) if ca_file is not None else None,
        )
        del login
        if not upstream.is_loopback() and not allow_remote:
            raise ValueError(
                f"{host} is not a loopback address; releasing captured mail to "
                "another host must be asked for with allow_remote=True"
            )
        if upstream.username is not None and tls is None and not upstream.is_loopback():
            # Without TLS the password would cross the network as it is
            # (AUTH PLAIN and LOGIN are base64, not encryption).
            raise ValueError(
                f"auth needs tls='starttls' or tls='implicit' for a host off "
                f"loopback ({host}): without TLS the password would be sent "
                "unencrypted"
            )
        envelope = message.envelope
        recipients = tuple(envelope.rcpt_to if rcpt_to is None else rcpt_to)
        if isinstance(rcpt_to, str):
            raise ValueError(
                f"rcpt_to must be a list of addresses, got the str {rcpt_to!r} "
                f"(for one recipient: rcpt_to=[{rcpt_to!r}])"
            )
        if not recipients:
            raise ValueError("rcpt_to must be a non-empty list of addresses")
        if mail_from is not None:
            _check_envelope_address(mail_from, "mail_from")
        if rcpt_to is not None:
            for recipient in recipients:
                _check_envelope_address(recipient, "rcpt_to")
        raw = message.raw
        if received:
            raw = received_header(message, self.settings.hostname, recipients) + raw
        try:
            return deliver(
                raw,
                envelope.mail_from if mail_from is None else mail_from,
                recipients,
                upstream,
                hostname=self.settings.hostname,
                timeout=timeout,
                ssl_context=ssl_context,
                smtputf8=envelope.smtputf8,
                body=body_option(envelope.mail_options),
                dsn=DSN.of(envelope),
            )
        except RelayError as error:
            raise error.with_traceback(None) from None

    # -- what arrived --------------------------------------------------------------

    @property
    def messages(self) -> Messages:
        """The messages that arrived in this view, oldest first (a snapshot)."""
        __tracebackhide__ = True
        self._check()
        return Messages(
            self._store.messages_since(self._cursor),
            scope=self._scope,
            why_none=self._why_none_arrived,
        )

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The SMTP connections opened in this view, oldest first."""
        __tracebackhide__ = True
        self._check()
        return self._store.sessions_since(self._cursor)

    def captured(self) -> tuple[Messages, tuple[Session, ...]]:
        """Messages and sessions without the health checks: for reports,
        which must show what arrived even when the sink is in trouble.

        The sessions are those opened in this view and, first, those opened
        before it that delivered its messages: a connection the application
        keeps open from test to test (a pooled mail backend), whose
        transcript is the one a failed test's report needs."""
        messages = self._store.messages_since(self._cursor)
        sessions = self._store.sessions_since(self._cursor)
        known = {id(session) for session in sessions}
        earlier: list[Session] = []
        for session in self._carried_sessions():
            known.add(id(session))
            earlier.append(session)
        for message in messages:
            session = message.session
            if session.protocol == "SMTP" and id(session) not in known:
                known.add(id(session))
                earlier.append(session)
        return (
            Messages(messages, scope=self._scope),
            (*earlier, *sessions) if earlier else sessions,
        )

    def _carried_sessions(self) -> list[Session]:
        """SMTP connections opened before this view (an earlier test, or
        before `clear`) that sent commands in it (a pooled client's): a
        refusal in this test is in their transcript, and without them the
        report said no client connected. The sink's own notices (an idle
        timeout's 421) are not the client's doing."""
        since = self._opened_at

        def spoke_since(session: Session) -> bool:
            for exchange in reversed(session._transcript):
                if exchange.time < since:
                    return False
                if exchange.kind != "notice":
                    return True
            return False

        return [
            s
            for s in self._store.sessions_before(self._cursor)
            if s.protocol == "SMTP" and spoke_since(s)
        ]

    def _put_in(self) -> tuple[Message, ...]:
        """For reports, beside `captured`: the mail the recipient mailboxes
        got without SMTP (`deliver`, IMAP APPEND) in this test, deleted or
        moved since or not. Not in `messages`: the application did not send
        it; but a failed reader test's report must show what it read."""
        return self._store.put_in_messages()

    def _early(self) -> tuple[Message, ...]:
        """For saved runs: the mail that arrived in this test before this
        mailbox was made (`note_set_up_mail`), which the mailbox does not
        show and the previous test's files did not hold: saved nowhere,
        it was lost from a run kept with ``--smtpsink-save=all``."""
        return (*self._set_up_mail, *self._body_mail)

    def clear(self) -> None:
        """Start this mailbox afresh: what arrived so far is no longer shown.

        Other mailboxes on the same sink are not affected, and the mail is
        still kept for them: it still counts toward ``max_stored_bytes``.
        The recipients' mailboxes (`mailbox`, POP3, IMAP) keep it too: they
        are emptied when the next test starts.
        """
        self._cursor = self._store.cursor()
        self._opened_at = time.time()
        self._scope = "since clear()"  # what failure reports say arrived
        # Afresh in the running test: nothing from before is shown.
        self._era, self._made_in = self._sink._test_era, running_test()

    # -- assertions --------------------------------------------------------------------

    # The overloads overlap on purpose: count=1 (or none) gives the Message, any
    # other count a Messages. An int that is 1 only at run time still gets the
    # Message, which no annotation can say, so mypy's overlap check is muted.
    @overload
    def assert_sent(  # type: ignore[overload-overlap]
        self, count: Literal[1] | None = None, **criteria: Unpack[Criteria]
    ) -> Message: ...
    @overload
    def assert_sent(self, count: int, **criteria: Unpack[Criteria]) -> Messages: ...
    def assert_sent(
        self, count: int | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """Assert that mail matching ``criteria`` arrived.

        Without ``count``: at least one message; returns the latest match.
        With ``count=1``: exactly one, returned. With ``count=N``: exactly N,
        returned as `Messages`.
        """
        __tracebackhide__ = True
        _match.check_names(criteria, ("count",))
        _check_count(count)
        everything = self.messages
        found = everything.filter(**criteria)
        ok = len(found) >= 1 if count is None else len(found) == count
        if not ok:
            wanted = "at least 1 message" if count is None else plural(count, "message")
            elsewhere = self._elsewhere(criteria)
            put_in = self._put_in_hint(criteria)
            raise AssertionError(
                failure_report(
                    wanted,
                    criteria,
                    found,
                    everything,
                    scope=self._scope,
                    elsewhere=elsewhere,
                    if_none=self._connections_hint(bool(elsewhere), bool(put_in)),
                    notes=[
                        *(self._refusals_hint() if everything else []),
                        *self._fault_hints(),
                        *put_in,
                    ],
                )
            )
        if count is None:
            return found[-1]
        return found[0] if count == 1 else found

    def assert_not_sent(self, **criteria: Unpack[Criteria]) -> None:
        """Assert that no message matching ``criteria`` arrived."""
        __tracebackhide__ = True
        _match.check_names(criteria)
        everything = self.messages
        found = everything.filter(**criteria)
        if found:
            raise AssertionError(
                failure_report(
                    "no message", criteria, found, everything, scope=self._scope
                )
            )

    def assert_nothing_sent(self, within: float = 0.0) -> None:
        """Assert that no mail arrived, watching ``within`` more seconds for
        late mail (failing the moment any arrives)."""
        __tracebackhide__ = True
        within = _wait_seconds(within, "within")
        library = _in_a_coroutine() if within else None
        if library is not None:
            # A false pass: mail sent by a task of the blocked loop could not
            # go out during the watch.
            call = f"assert_nothing_sent(within={within:g})"
            raise RuntimeError(
                f"{call} in a{'' if library == 'asyncio' else ' trio'} coroutine "
                f"would block this thread's event loop for {within:g} s: mail "
                "sent by a task of that loop could not go out meanwhile, and the "
                "check would pass whatever the code does. Use "
                + (
                    f"await smtpsink.assert_nothing_sent_async(within={within:g})."
                    if library == "asyncio"
                    else f"await anyio.to_thread.run_sync(lambda: smtpsink.{call}) "
                    "(or trio.to_thread)."
                )
            )
        # Mail already there fails at once: nothing was watched.
        watching = bool(within) and not self._arrived()
        if watching:
            self._wait(self._arrived, within)
        self._fail_if_sent(within if watching else 0.0)

    async def assert_nothing_sent_async(self, within: float = 0.0) -> None:
        """The awaitable twin of `assert_nothing_sent`: the event loop keeps
        running while it watches, so mail that a task of it sends is seen."""
        __tracebackhide__ = True
        within = _wait_seconds(within, "within")
        watching = bool(within) and not self._arrived()
        if watching:
            self._check(for_waiting=True)
            await self._store.wait_async(
                self._arrived, within, self._check_waiting, "assert_nothing_sent"
            )
        self._fail_if_sent(within if watching else 0.0)

    def _arrived(self) -> bool:
        return bool(self._store.messages_since(self._cursor))

    def _fail_if_sent(self, watched: float) -> None:
        """`assert_nothing_sent`'s failure, if any mail came: ``watched``
        seconds (0 when mail was there before any watch)."""
        __tracebackhide__ = True
        everything = self.messages
        if everything:
            extra = f" within {watched:g} s" if watched else ""
            raise AssertionError(
                failure_report(
                    f"no message{extra}",
                    {},
                    everything,
                    everything,
                    scope=self._scope,
                    notes=self._earlier_connections_hint(everything),
                )
            )

    def _earlier_connections_hint(self, messages: Sequence[Message]) -> list[str]:
        """For mail that arrived in this test over a connection opened before
        it: a sender that outlived its test (a thread, a task) or a pooled
        connection. Listed as this test's mail alone, it looked like the code
        under test had sent it."""
        earlier = {id(s) for s in self._store.sessions_before(self._cursor)}
        carried = [m for m in messages if id(m.session) in earlier]
        if not carried:
            return []
        labels = join_shortened([message_label(m) for m in carried], _LISTED)
        since = self._scope.removeprefix("since ")
        if self._scope == "in this test":
            since = "this mailbox was made"
        return [
            f"Hint: {labels} came over a connection opened before {since}: "
            "a sender still running from an earlier test (a thread, a task), a "
            "pooled connection, or a fixture's."
        ]

    def assert_clean(
        self, severity: Severity = "error", ignore: Iterable[str] = ()
    ) -> None:
        """Assert that every message of this mailbox is well built: no lint
        problem (`Message.lint`) at ``severity`` or worse, except the codes in
        ``ignore``. Fails listing the problems of each message, and when no
        message arrived (there was nothing to check)."""
        __tracebackhide__ = True
        from ._bulk import BULK_CODES
        from ._lint import check_ignore, check_severity, unclean_report

        check_severity(severity)
        skipped = check_ignore(
            ignore,
            elsewhere=(
                BULK_CODES,
                "it is a bulk-sender rule code: assert_bulk_sender_rules(ignore=...)",
            ),
        )
        everything = self._to_check()
        failure = unclean_report(everything, severity, skipped)
        if failure is not None:
            raise AssertionError(failure)

    def assert_bulk_sender_rules(
        self,
        alignment: Literal["relaxed", "strict"] = "relaxed",
        ignore: Iterable[str] = (),
    ) -> None:
        """Assert that every message of this mailbox meets the Gmail and
        Yahoo bulk-sender rules (`Message.bulk_sender_problems`), except the
        problem codes in ``ignore``. Fails listing the problems of each message,
        and when no message arrived (there was nothing to check)."""
        __tracebackhide__ = True
        from ._bulk import BULK_CODES, check_alignment
        from ._lint import LINT_CODES, check_ignore, problems_report

        check_alignment(alignment)
        skipped = check_ignore(
            ignore,
            known=BULK_CODES,
            kind="bulk-sender rule code",
            elsewhere=(LINT_CODES, "it is a lint code: assert_clean(ignore=...)"),
        )
        failure = problems_report(
            self._to_check(),
            lambda message: message.bulk_sender_problems(alignment),
            f"mail that meets the bulk-sender rules ({alignment} DKIM alignment)",
            skipped,
        )
        if failure is not None:
            raise AssertionError(failure)

    def assert_not_spam(
        self,
        max_score: float | None = None,
        spamd: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Assert that SpamAssassin scores every message of this mailbox
        below ``max_score`` (default: spamd's own threshold), listing each
        message over it with its score and the rules that hit; fails too
        when no message arrived (there was nothing to score).
        Raises `SpamdError` if no spamd is configured, even when the test
        captured no mail, or if spamd is silent for ``timeout`` seconds
        (per message, as for `Message.spam_report`)."""
        __tracebackhide__ = True
        from ._lint import grouped_report
        from ._spam import check_max_score, report, resolve_spamd

        # Before the loop, so that a missing spamd or a bad argument is an
        # error even when there is no message to score.
        max_score = check_max_score(max_score)
        timeout = check_seconds(timeout, "timeout")
        resolve_spamd(spamd, "assert_not_spam")
        everything = self._to_check()
        over = []
        for message in everything:
            found = report(message.raw, spamd, timeout, "assert_not_spam")
            limit = found.threshold if max_score is None else max_score
            if found.score >= limit:
                over.append((message.summary(), f"    {found}"))
        if over:
            # spamd rounds its scores to 0.1: 2.96 reads 3.0, at a bar of 3.
            bar = (
                "spamd's threshold"
                if max_score is None
                else f"{max_score:g} (spamd gives scores to one decimal)"
            )
            raise AssertionError(
                f"expected every message to score below {bar}; "
                f"{len(over)} of {len(everything)} did not:\n"
                + "\n".join(grouped_report(over))
            )

    def _to_check(self) -> Messages:
        """The messages for a check of every message (`assert_clean`,
        `assert_bulk_sender_rules`, `assert_not_spam`); none is a failure:
        a check of nothing passing would hide an application that sent
        nothing."""
        __tracebackhide__ = True
        everything = self.messages
        if not everything:
            elsewhere = self._elsewhere({})
            lines = [f"expected mail to check, none arrived {self._scope}"]
            seeded = len(self._put_in())
            lines.extend(self._connections_hint(bool(elsewhere), bool(seeded)))
            lines.extend(arrived_elsewhere(elsewhere, {}))
            lines.extend(self._fault_hints())
            if seeded:
                lines.append(
                    f"Hint: {plural(seeded, 'message')} "
                    f"{'was' if seeded == 1 else 'were'} put in without SMTP "
                    "(deliver() or IMAP APPEND); these checks judge the mail the "
                    "application sent. To judge one of those, call its lint(), "
                    "bulk_sender_problems() or spam_report()."
                )
            raise AssertionError("\n".join(lines))
        return everything

    # -- waiting -------------------------------------------------------------------------

    @overload  # overlaps the next on purpose, as assert_sent's do
    def wait_for(  # type: ignore[overload-overlap]
        self,
        count: Literal[1] = 1,
        timeout: float | None = None,
        **criteria: Unpack[Criteria],
    ) -> Message: ...
    @overload
    def wait_for(
        self, count: int, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Messages: ...
    def wait_for(
        self, count: int = 1, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """Block until ``count`` messages matching ``criteria`` have arrived.

        Wakes the moment the server stores a match. Returns the first match
        (`assert_sent` returns the latest), or the first ``count`` matches;
        fails after ``timeout`` seconds (default: `default_timeout`, set by
        ``--smtpsink-timeout``) listing what arrived.
        """
        __tracebackhide__ = True
        _match.check_names(criteria, ("count", "timeout"))
        _check_wait_count(count, "wait_for")
        limit = self._timeout(timeout)

        def enough() -> bool:
            return len(self._store_filter(criteria)) >= count

        started = time.monotonic()
        if not self._wait(enough, limit):
            raise self._timeout_error(
                count,
                criteria,
                limit,
                time.monotonic() - started,
                waited_with="wait_for",
                blocked_loop=_in_a_coroutine(),
            )
        return self._waited(count, criteria)

    @overload  # overlaps the next on purpose, as assert_sent's do
    async def wait_for_async(  # type: ignore[overload-overlap]
        self,
        count: Literal[1] = 1,
        timeout: float | None = None,
        **criteria: Unpack[Criteria],
    ) -> Message: ...
    @overload
    async def wait_for_async(
        self, count: int, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Messages: ...
    async def wait_for_async(
        self, count: int = 1, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """The awaitable twin of `wait_for`: the event loop keeps running while
        it waits (asyncio, including pytest-asyncio and anyio's asyncio backend)."""
        __tracebackhide__ = True
        _match.check_names(criteria, ("count", "timeout"))
        _check_wait_count(count, "wait_for_async")
        self._check(for_waiting=True)
        limit = self._timeout(timeout)

        def enough() -> bool:
            return len(self._store_filter(criteria)) >= count

        started = time.monotonic()
        if await self._store.wait_async(enough, limit, self._check_waiting):
            return self._waited(count, criteria)
        raise self._timeout_error(
            count,
            criteria,
            limit,
            time.monotonic() - started,
            waited_with="wait_for_async",
        )

    def wait_until(self, condition: Callable[[], T], timeout: float | None = None) -> T:
        """Block until ``condition()`` is true, re-checking whenever the sink
        records something (every line of every conversation, every message),
        and return what it returned then.

        For conditions on the conversation, e.g.
        ``smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)``.
        An IndexError, KeyError or AssertionError the condition raises counts
        as "not yet": an assertion that returns what it found can be waited
        for, ``message = wait_until(lambda: box.assert_in("Handled",
        subject="Hi"))``. Fails after ``timeout`` seconds (default
        `default_timeout`), with the last assertion's report, and listing the
        sessions and messages of this mailbox.
        """
        __tracebackhide__ = True
        limit = self._timeout(timeout)
        check = _NotYet(_callable_condition(condition, "wait_until"))
        if not self._wait(check, limit):
            raise self._still_false(check, limit, "wait_until", _in_a_coroutine())
        return check.value  # type: ignore[return-value]

    async def wait_until_async(
        self, condition: Callable[[], T], timeout: float | None = None
    ) -> T:
        """The awaitable twin of `wait_until`: the event loop keeps running
        while it waits."""
        __tracebackhide__ = True
        limit = self._timeout(timeout)
        check = _NotYet(_callable_condition(condition, "wait_until_async"))
        self._check(for_waiting=True)
        if not await self._store.wait_async(
            check, limit, self._check_waiting, "wait_until"
        ):
            raise self._still_false(check, limit, "wait_until_async", None)
        return check.value  # type: ignore[return-value]

    def _still_false(
        self,
        check: _NotYet,
        limit: float,
        waited_with: str,
        blocked_loop: str | None,
    ) -> AssertionError:
        """`wait_until`'s failure: the condition, what it last raised, and
        the sessions and messages there are."""
        name = getattr(check.condition, "__name__", repr(check.condition))
        messages, sessions = self.captured()
        lines = [f"{waited_with}({name}) still false after {limit:g} s."]
        if blocked_loop is not None:
            lines.append(_blocked_loop_hint("wait_until", blocked_loop))
        if isinstance(check.error, AssertionError):
            # An assertion waited for (a mailbox's assert_in): its own
            # report says what was there instead.
            lines.append("Its last call failed:")
            lines.extend(f"  {line}" for line in str(check.error).splitlines())
        elif check.error is not None:
            # A condition that raises every time is more likely a bug in
            # it than a slow sink: show what it raised.
            lines.append(
                "Its last call raised "
                f"{type(check.error).__name__}: {check.error} "
                "(an IndexError or KeyError counts as 'not yet')."
            )
        lines.append(f"Sessions {self._scope} ({len(sessions)}):")
        lines.extend(f"  {_session_line(s)}" for s in sessions[:_LISTED])
        if not sessions:
            lines.append("  (none)")
        lines.append(f"Messages {self._scope} ({len(messages)}):")
        lines.extend(f"  {summary_or_raw(m)}" for m in messages[:_LISTED])
        if not messages:
            lines.append("  (none)")
        return AssertionError("\n".join(lines))

    def _store_filter(self, criteria: Criteria) -> list[Message]:
        __tracebackhide__ = True
        return _match.select(self._store.messages_since(self._cursor), criteria)

    def _waited(self, count: int, criteria: Criteria) -> Message | Messages:
        # Filtered from everything this view holds, as assert_sent's are: a
        # failed query on the result lists all that arrived, "since clear()"
        # when it was cleared, not just the matches.
        arrived = Messages(self._store.messages_since(self._cursor), scope=self._scope)
        found = arrived.filter(**criteria)[:count]
        return found[0] if count == 1 else found

    def _timeout(self, timeout: float | None) -> float:
        __tracebackhide__ = True
        return _wait_seconds(self.default_timeout if timeout is None else timeout)

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        __tracebackhide__ = True
        return self._store.wait(predicate, timeout, self._check_waiting)

    def _check_waiting(self) -> None:
        __tracebackhide__ = True
        self._check(for_waiting=True)

    def _timeout_error(
        self,
        count: int,
        criteria: Criteria,
        limit: float,
        waited: float,
        *,
        waited_with: str,
        blocked_loop: str | None = None,
    ) -> AssertionError:
        __tracebackhide__ = True
        everything = self.messages
        found = everything.filter(**criteria)
        elsewhere = self._elsewhere(criteria)
        put_in = self._put_in_hint(criteria)
        return AssertionError(
            failure_report(
                f"{plural(count, 'message')} within {limit:g} s (waited {waited:.2f} s)",
                criteria,
                found,
                everything,
                verb=f"{waited_with} timed out: expected",
                scope=self._scope,
                elsewhere=elsewhere,
                # First: the connections hint sends the user to check the
                # host, the port and the framework's mail settings, right
                # only if the sender is no task of the blocked loop.
                if_none=(
                    [_blocked_loop_hint("wait_for", blocked_loop)]
                    if blocked_loop is not None
                    else []
                )
                + self._connections_hint(bool(elsewhere), bool(put_in), waited=True),
                notes=[
                    *(self._refusals_hint() if everything else []),
                    *self._fault_hints(),
                    *put_in,
                ],
            )
        )

    def _put_in_hint(self, criteria: Criteria) -> list[str]:
        """Seeded mail (`deliver`, IMAP APPEND) that matches: a reader test
        that asks `assert_sent` about the mail it seeded would otherwise be
        told only that no client connected."""
        matching = Messages(self._put_in(), scope=self._scope).filter(**criteria)
        if not matching:
            return []
        lines = [
            f"Hint: {plural(len(matching), 'message')}"
            f"{' matching' if criteria else ''} "
            f"{'was' if len(matching) == 1 else 'were'} put in without SMTP "
            "(deliver() or IMAP APPEND): assert_sent and wait_for count only the "
            "mail sent over SMTP; assert on a recipient's mailbox with "
            "smtpsink.mailbox(address).assert_in(...):"
        ]
        return [*lines, *_listed_summaries(matching)]

    def _fault_hints(self) -> list[str]:
        """What fault rules did that the mail list does not say: mail a
        ``drop()`` threw away, and rules this mailbox did not add."""
        return [*self._dropped_hint(), *self._foreign_faults_hint()]

    def _foreign_faults_hint(self) -> list[str]:
        """Fault rules in force on this sink that this mailbox did not add
        (through ``smtpsink_server`` in a session fixture, or another
        mailbox): they act on this test's mail too, and its own `faults`
        does not list them, so a failure would have no visible cause."""
        rules = self._fault_registry().rules
        if not rules:
            return []
        foreign = [rule for rule in rules if rule._owner is not self]
        if not foreign:
            return []
        shown = ", ".join(repr(rule) for rule in foreign[:_LISTED])
        more = f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else ""
        return [
            f"Hint: {plural(len(foreign), 'fault rule')} that this mailbox did not "
            f"add {'is' if len(foreign) == 1 else 'are'} in force on this sink "
            f"(smtpsink_server's, or another mailbox's): {shown}{more}"
        ]

    def _dropped_hint(self) -> list[str]:
        """Mail that a ``drop()`` fault of this mailbox threw away: the
        client was told ``250`` and nothing was stored, so neither the list
        of what arrived nor the sessions' last replies say where it went."""
        return [
            f"Hint: {fault!r} accepted and threw away "
            f"{plural(fault.fired, 'message')}; the client was told 250 and "
            "nothing was stored"
            for fault in self.faults
            if fault.action == "drop" and fault.fired
        ]

    def _why_none_arrived(self) -> list[str]:
        """`messages`' hints for its reports on no mail at all (one(),
        first(), [0]), as assert_sent gives them: whether any client
        connected, faults, mail put in without SMTP."""
        put_in = self._put_in_hint({})
        return [
            *self._connections_hint(False, bool(put_in)),
            *self._fault_hints(),
            *put_in,
        ]

    def _connections_hint(
        self, sent_elsewhere: bool, put_in: bool = False, waited: bool = False
    ) -> list[str]:
        """For a report where no message arrived: whether any client even
        connected. "Nothing arrived" alone does not tell a client that never
        came (an in-memory test backend, the wrong port) from one that came
        and failed before its message was stored (STARTTLS it wanted, AUTH,
        a refused recipient), and the two are fixed in different places."""
        # Inside wait_until's condition (an assert_sent waited for), the
        # test waits already: advice to wait would be no help.
        waited = waited or _CHECKING.active
        self._let_new_sessions_settle()
        let_go = self._let_go_hint()
        if let_go and not self._store.sessions_since(self._cursor):
            # Not "no client connected": clients did, and their mail is gone.
            return let_go
        return self._sessions_hint(sent_elsewhere, put_in, waited) + let_go

    def _sessions_hint(
        self, sent_elsewhere: bool, put_in: bool, waited: bool
    ) -> list[str]:
        """`_connections_hint` without its note on mail the sink let go."""
        carried = self._carried_sessions()
        # A connection kept from before that only said goodbye (QUIT) in
        # this test did not try to send in it: listed as "sent commands but
        # delivered no message", it looked like the app failed at DATA.
        closing = [s for s in carried if self._only_closed_since(s)]
        carried = [s for s in carried if s not in closing]
        smtp = [
            *carried,
            *(
                s
                for s in self._store.sessions_since(self._cursor)
                if s.protocol == "SMTP"
            ),
        ]
        if not smtp and (self._set_up_mail or self._body_mail):
            return self._set_up_mail_hint()
        if not smtp:
            if sent_elsewhere or put_in:
                # The hint about the other sink, or about the mail put in
                # without SMTP, says where the mail is; "is the code under
                # test given this host and port?" would send the reader off
                # looking for a mistake they did not make.
                return []
            # The zone exists only once the test used smtpsink.dns: a test
            # that never did gets the report it always got.
            zone = self._dns
            lookups = [] if zone is None else zone._lookups_hint(self._opened_at)
            if zone is not None and lookups and not zone._all_answered(self._opened_at):
                # An application that delivers by MX finds the host and port
                # through the stub: what it asked there, and what it got,
                # says why it connected nowhere (a mistyped name: NXDOMAIN);
                # the host-and-port and in-memory-backend advice does not.
                return [
                    f"Hint: no client connected to {self._sink.url} {self._scope} "
                    f"either; the DNS stub was asked {self._scope}:",
                    *lookups,
                    *self._closing_lines(closing),
                ]
            # Every lookup answered: the port it then used is the likelier
            # cause, and the answers it got are worth seeing beside it.
            answered = (
                [f"Hint: the DNS stub answered every lookup {self._scope}:", *lookups]
                if lookups
                else []
            )
            return [
                f"Hint: no client connected to {self._sink.url} {self._scope} "
                "either: is the code under test given this host and port? A "
                "test setting may also keep mail in memory (Django's test "
                "runner and pytest-django, Flask-Mailman and Flask-Mail with "
                "TESTING=True, unless MAIL_BACKEND='smtp' or "
                "MAIL_SUPPRESS_SEND=False is set before the extension "
                "starts): see the Recipes page of the docs."
                + (
                    ""
                    if waited
                    # The first mistake with a background sender: it had
                    # not connected yet when the check ran.
                    else " Or it sends in the background (a thread, a task "
                    "queue) and has not connected yet: wait for the mail with "
                    + (
                        # wait_for here blocks the loop the sender needs.
                        "await wait_for_async(...) in a coroutine."
                        if _in_a_coroutine() == "asyncio"
                        else "wait_for(...)."
                    )
                ),
                *_django_outbox_hint(self._django_outbox),
                *_django_on_commit_hint(),
                *answered,
                *([] if zone is None else zone._unasked_hint(self._opened_at)),
                *self._closing_lines(closing),
            ]
        if carried:  # a pooled client's connection, opened in an earlier test
            lines = [
                f"Hint: {plural(len(smtp), 'SMTP session')} sent commands "
                f"{self._scope} but delivered no message "
                f"({plural(len(carried), 'connection')} opened before and kept "
                "open); how far each got:"
            ]
        else:
            lines = [
                f"Hint: {plural(len(smtp), 'SMTP session')} connected "
                f"{self._scope} but delivered no message; how far each got:"
            ]
        hidden = self._fault_registry().hidden
        lines.extend(f"  {_undelivered_line(s, hidden)}" for s in smtp[:_LISTED])
        if len(smtp) > _LISTED:
            lines.append(f"  ... and {len(smtp) - _LISTED} more")
        # Not one that a refusal explains: "the mail may still come" would
        # send the reader off waiting for mail the sink refused.
        still_open = [
            s
            for s in smtp
            if s.end is None and s not in carried and not _refused_something(s)
        ]
        if still_open:
            # The likeliest cause then: the check came before the mail (or,
            # after a wait, the wait ended before a slow client was done).
            lines.append(
                f"  ({plural(len(still_open), 'session')} opened {self._scope} "
                f"{'is' if len(still_open) == 1 else 'are'} still open: "
                + (
                    "its client may still be sending; a slow one needs a "
                    "longer timeout=)"
                    if waited
                    else "if the mail leaves in the background (a thread, a "
                    "task, a worker), wait for it with wait_for(...), or await "
                    "wait_for_async(...) in a coroutine)"
                )
            )
        return lines

    def _refusals_hint(self) -> list[str]:
        """For a report where mail arrived: what the sink refused in this
        test. The list of what arrived cannot show a message or recipient
        that was refused (an injected 554, a size limit, a 550 for one
        recipient), which is the likeliest reason the one wanted is not
        there; without this, only the transcripts said so, and logs that
        keep a failure's message alone lost it. A report where nothing
        arrived says it in its list of sessions (`_sessions_hint`)."""
        since = self._opened_at
        refusing = [
            (session, refused)
            # A pooled client's connection, opened in an earlier test, too:
            # its refusals in this one.
            for session in [
                *self._carried_sessions(),
                *self._store.sessions_since(self._cursor),
            ]
            if session.protocol == "SMTP"
            and (refused := [e for e in _refusals(session) if e.time >= since])
        ]
        if not refusing:
            return []
        count = sum(len(refused) for _, refused in refusing)
        lines = [
            f"Hint: the sink refused {plural(count, 'command')} {self._scope} "
            "(a refused message or recipient is not listed above):"
        ]
        for session, refused in refusing[:_LISTED]:
            shown = [
                shorten(" ".join(e.lines()), 200) for e in refused[:_REFUSALS_SHOWN]
            ]
            if len(refused) > _REFUSALS_SHOWN:
                shown.append(f"and {len(refused) - _REFUSALS_SHOWN} more")
            lines.append(f"  {session.summary()}: {'; '.join(shown)}")
        if len(refusing) > _LISTED:
            lines.append(f"  ... and {len(refusing) - _LISTED} more sessions")
        return lines

    def _let_go_hint(self) -> list[str]:
        """For a mailbox made outside a test (``smtpsink_server.view()`` in
        a fixture of wider scope) whose mail the sink let go as a later test
        began: the sink keeps the running test's mail only. Its report said
        no client had connected."""
        messages, sessions = self._store.let_go_since(self._cursor)
        if not (messages or sessions):
            return []
        return [
            f"Hint: {plural(messages, 'message')} and {plural(sessions, 'session')} "
            "that arrived in this mailbox were let go since: a later test's "
            "smtpsink was made (the sink keeps only the running test's mail), or "
            "the sink's clear() was called. Read a mailbox made outside a test "
            "before that, in the fixture that made it (wait_for(...) there; the "
            "messages it returns stay readable)."
        ]

    def _let_new_sessions_settle(self) -> None:
        """Wait a moment (at most `_SETTLE` seconds) for SMTP sessions of
        this scope that have not said a word yet, when no message arrived.

        A client that speaks TLS on the plain port sends its ClientHello as
        it connects and gives up on reading the greeting; the check that
        fails next in the test may run before the sink's thread has read
        that ClientHello, and the hint then shows an open session that said
        nothing, not what the sink makes of it a moment later (what to do
        about it). Failure paths only; never in a coroutine, whose loop may
        be the client's."""
        if self.messages or _CHECKING.active or _in_a_coroutine() is not None:
            # In a wait's condition (an assertion waited for), the wait
            # itself gives the session its time.
            return

        def silent() -> bool:
            return any(
                s.protocol == "SMTP"
                and s.end is None
                and not any(e.kind != "greeting" for e in s._transcript)
                for s in self._store.sessions_since(self._cursor)
            )

        if silent():
            self._store.wait(lambda: not silent(), _SETTLE)

    def _only_closed_since(self, session: Session) -> bool:
        """Whether ``session`` sent nothing but clean-up commands (QUIT,
        RSET, NOOP) since this mailbox was opened."""
        since = self._opened_at
        return all(
            exchange.command in _CLEAN_UP
            for exchange in session._transcript
            if exchange.time >= since and exchange.kind != "notice"
        )

    def _closing_lines(self, closing: Sequence[Session]) -> list[str]:
        """The connections kept from before that only cleaned up in this
        test: said, so that their transcripts in the report do not puzzle."""
        if not closing:
            return []
        since = self._opened_at
        lines = [
            f"  ({plural(len(closing), 'connection')} kept open from before sent "
            f"only QUIT, RSET or NOOP {self._scope}:"
        ]
        for session in closing[:_LISTED]:
            delivered = sum(
                1
                for exchange in session._transcript
                if exchange.time < since and _delivered(exchange)
            )
            lines.append(
                f"   {session.summary()}; delivered {plural(delivered, 'message')} "
                "before)"
            )
        return lines

    def _set_up_mail_hint(self) -> list[str]:
        """Nothing arrived in this mailbox, but mail did arrive in the test
        before it was made: in the set-up, from a fixture that sends, set up
        before ``smtpsink`` (the order of the test's arguments decides); or
        in the body, before the test made this mailbox there. "No client
        connected: is the code given this host and port?" sent the reader
        to check settings that were right."""
        lines = []
        if self._set_up_mail:
            mail = self._set_up_mail
            lines += [
                f"Hint: {plural(len(mail), 'message')} arrived during this "
                "test's set-up, before this mailbox was made (it shows only "
                "what arrives after): a fixture set up before smtpsink sent "
                "it, or a sender still running from an earlier test. For a "
                "fixture, request smtpsink first (def test(smtpsink, "
                "sending_fixture)), or request it in that fixture; one of "
                "wider scope (session, module, class) is set up first whatever "
                "the order and cannot request it: check its mail in that "
                "fixture, with smtpsink_server.view() taken before it sends:",
                *_listed_summaries(mail),
            ]
        if self._body_mail:
            mail = self._body_mail
            # Said only of a mailbox that does have it: one made after the
            # send as well has nothing to offer.
            earlier = any(
                view._sink is self._sink
                and view._cursor < self._cursor
                and any(
                    kept is m
                    for kept in view._store.messages_since(view._cursor)
                    for m in mail
                )
                for view in self._neighbours
            )
            advice = (
                # A second mailbox of the same sink: the first one has it.
                "the test's earlier mailbox of this sink has it: assert on "
                "that one, or make this one before the code that sends:"
                if earlier
                else "make the mailbox before the code that sends (request "
                "smtpsink as an argument, or call smtpsink_factory() first):"
            )
            lines += [
                f"Hint: {plural(len(mail), 'message')} arrived in this test's "
                "body before this mailbox was made there (it shows only what "
                f"arrives after): {advice}",
                *_listed_summaries(mail),
            ]
        return lines

    def _elsewhere(self, criteria: Criteria) -> list[Elsewhere]:
        """What the test's other sinks got: the usual cause of "nothing
        arrived" in a test with two sinks is mail sent to the other one.
        Their mail that matches ``criteria``; when nothing arrived here at
        all, any mail they got."""
        found: list[Elsewhere] = []
        seen = {id(self._sink)}
        nothing_here = not self._store.messages_since(self._cursor)
        for view in self._neighbours:
            if id(view._sink) in seen:
                continue
            seen.add(id(view._sink))
            theirs = view.messages
            try:
                matching = theirs.filter(**criteria)
            except _match.CriterionError:
                # A criterion that raises on another sink's mail: no hint
                # (the assertion's own report, not this error, is the news).
                continue
            if matching:
                found.append(Elsewhere(view._sink.url, matching, matching=True))
            elif nothing_here and theirs:
                found.append(Elsewhere(view._sink.url, theirs, matching=False))
        return found

    def __repr__(self) -> str:
        where = self._sink.url if self._sink._address else "not started"
        return f"<Mailbox {where} messages={len(self._store.messages_since(self._cursor))}>"


def note_set_up_mail(
    view: Mailbox,
    since: float,
    set_up_done: float | None = None,
    first: Mailbox | None = None,
) -> None:
    """Keep, for ``view``'s failure reports, the mail stored since ``since``
    (when the test's set-up began) and before ``view`` was made: apart
    what arrived in the set-up and, for a mailbox made in the test's body
    (``set_up_done``: when the set-up ended), what arrived after it.
    ``first``: the test's first mailbox of the same sink, whose making
    dropped the mail before it from the store (it noted that mail)."""
    mail = view._store.arrived_before(view._cursor, since)
    if first is not None:
        mail = (*first._set_up_mail, *first._body_mail, *mail)
    if mail:
        # "No messages arrived in this test", over a hint that lists the
        # test's mail, would contradict it.
        view._scope = "since this mailbox was made"
    if set_up_done is None:
        view._set_up_mail = mail
        return
    view._set_up_mail = tuple(
        m for m in mail if m.received_at.timestamp() < set_up_done
    )
    view._body_mail = mail[len(view._set_up_mail) :]


def share_test(view: Mailbox, views: Sequence[Mailbox]) -> None:
    """Tell ``view`` the test's mailboxes (``views``, a list the plugin
    keeps adding to), so that its failures can point at another sink; its
    failures list the mail "in this test"."""
    view._neighbours = views
    if view._scope == Mailbox._SINCE_VIEW:  # not narrowed (note_set_up_mail)
        view._scope = "in this test"


def end_of_test(view: Mailbox, nodeid: str) -> None:
    """Refuse reads of ``view`` from now on: its test ``nodeid`` has ended,
    and the plugin has read, reported and saved its mail. Kept (in a
    global, a class attribute, a thread), it followed the sink on and listed
    later tests' mail as its own: a check on it could pass on the wrong
    test's mail."""
    view._ended = nodeid


def _session_line(session: Session) -> str:
    # A session that has not been greeted yet has no lines (one held at
    # CONNECT by a fault says so).
    lines = session.transcript[-1].lines() if session.transcript else []
    last = lines[-1] if lines else "nothing yet"
    commands = shorten(" ".join(session.commands), 200) or "-"
    return f"{session.summary()} commands={printable(commands)} last: {last}"


#: Commands a client sends after giving up on a message: their refusal is
#: not why it gave up.
_CLEAN_UP = frozenset({"RSET", "QUIT", "NOOP"})


def _django_outbox() -> list[Any] | None:
    """Django's ``mail.outbox``, if Django is loaded and has one; the module
    is looked up, never imported."""
    outbox = getattr(sys.modules.get("django.core.mail"), "outbox", None)
    return outbox if isinstance(outbox, list) else None


def _django_outbox_mark() -> tuple[list[Any], list[Any]] | None:
    """The outbox list there as a mailbox was made, and what it held then
    (a copy: the list may be emptied in place, then filled again)."""
    outbox = _django_outbox()
    return None if outbox is None else (outbox, list(outbox))


def _django_outbox_hint(mark: tuple[list[Any], list[Any]] | None) -> list[str]:
    """When Django's in-memory test backend took mail since ``mark``: the
    likeliest reason none reached the sink, said for sure. Django's test
    runner and pytest-django switch EMAIL_BACKEND to it and empty
    ``mail.outbox`` for each test (a new list); without them nothing empties
    it, and an earlier test's mail there is none of this test's business."""
    outbox = _django_outbox()
    if not outbox:
        return []
    if mark is not None and mark[0] is outbox:
        # By identity: what was there then (cleared in place, or not) is
        # none of this test's; a list replaced since is all new.
        new = [m for m in outbox if not any(m is old for old in mark[1])]
    else:
        new = outbox
    if not new:
        return []
    subjects = join_shortened(
        [repr(shorten(printable(str(getattr(m, "subject", ""))), 60)) for m in new]
    )
    return [
        f"Hint: Django's mail.outbox got {plural(len(new), 'message')} in this "
        f"test ({subjects}): its in-memory (locmem) backend took mail, as "
        "Django's test runner and pytest-django set it. Override the backend "
        "with the SMTP one and this host and port for the test (EMAIL_BACKEND, "
        "or MAILERS from Django 6.1): see the Recipes page."
    ]


def _django_on_commit_hint() -> list[str]:
    """When Django holds ``transaction.on_commit`` callbacks that have not
    run: mail sent from one (the usual "after the row is saved") never goes
    in a test whose transaction is rolled back, as pytest-django's
    ``django_db`` and Django's ``TestCase`` do. Looked up, never imported."""
    db: Any = sys.modules.get("django.db")
    if db is None:
        return []
    try:
        pending = [
            func
            for connection in db.connections.all(initialized_only=True)
            for _, func, *_ in connection.run_on_commit
        ]
    except Exception:  # another Django's insides: no hint rather than an error
        return []
    if not pending:
        return []
    names = join_shortened([repr(shorten(_callable_name(f), 60)) for f in pending])
    return [
        f"Hint: Django holds {plural(len(pending), 'on_commit callback')} that "
        f"{'has' if len(pending) == 1 else 'have'} not run ({names}): the test's "
        "transaction is rolled back, never committed (pytest-django's django_db, "
        "a TestCase), so mail sent from one never goes. Run them with "
        "django_capture_on_commit_callbacks(execute=True) (pytest-django), "
        "self.captureOnCommitCallbacks(execute=True) (a TestCase), or use "
        "django_db(transaction=True): see the Recipes page."
    ]


def _callable_name(function: object) -> str:
    """``send_welcome``, also for ``functools.partial(send_welcome, user)``
    (whose own name is "partial")."""
    inner = getattr(function, "func", function)
    return str(getattr(inner, "__qualname__", type(inner).__name__))


def _listed_summaries(messages: Sequence[Message]) -> list[str]:
    """The summary lines of ``messages`` for a hint, the first `_LISTED`."""
    lines = [f"  {message.summary()}" for message in messages[:_LISTED]]
    if len(messages) > _LISTED:
        lines.append(f"  ... and {len(messages) - _LISTED} more")
    return lines


def _delivered(exchange: Exchange) -> bool:
    """Whether ``exchange`` stored a message: the 250 after DATA's content,
    or after a BDAT ... LAST."""
    code = exchange.code
    if code is None or not 200 <= code < 300:
        return False
    if exchange.kind == "data":
        return True
    argument = exchange.argument or ""
    return exchange.command == "BDAT" and argument.upper().rstrip().endswith("LAST")


#: A TLS record of type handshake (0x16, version 3.x) as a transcript keeps
#: the bytes: what a client that speaks TLS from the first byte sends first.
_TLS_HANDSHAKE = "\\x16\\x03"


def _undelivered_line(session: Session, hidden: Collection[str] = ()) -> str:
    """`_session_line` and the last reply that refused something: after a
    refused RCPT or DATA a client sends RSET and QUIT, whose replies say
    nothing about why no message was stored. A sink that requires STARTTLS
    or AUTH refuses that RSET too: such a refusal of a clean-up command is
    named only when there is no other."""
    if session.end == "tls-on-plain-port":
        # A client that began TLS at once: the summary says so and what to
        # do (`Session.tls_error`); it sent no command.
        return session.summary()
    commands = [e for e in session.transcript if e.kind == "command"]
    if commands and commands[0].line.startswith(_TLS_HANDSHAKE):
        # The same, when its first bytes came apart (the sink looks at the
        # first packet only): its bytes, read as lines, say nothing.
        return (
            f"{session.summary()} commands=(a TLS handshake); the client began "
            "TLS at once (implicit TLS, SMTPS, smtplib.SMTP_SSL), and this sink "
            "speaks plain SMTP first: ask for one with tls='implicit', or "
            "connect without TLS (and STARTTLS on a sink with tls='starttls')"
        )
    line = _session_line(session)
    refused = [e for e in session.transcript if e.code is not None and e.code >= 400]
    refused = _refusals(session) or refused
    if refused:
        line += f"; last refusal: {shorten(' '.join(refused[-1].lines()), 200)}"
    return line + quit_after_ehlo(session, hidden)


def _why_refused(attempt: AuthInfo, table: object) -> str:
    """Why a reader's login ``attempt`` was refused, by the sink's ``auth``
    table: "user names compare exactly" blamed the name when it was the
    table's own and the password was wrong."""
    if attempt.in_use:
        return " (the mailbox was in use by another POP3 session)"
    user = attempt.username
    if not isinstance(table, Mapping) or user is None:
        return ""
    if user in table:
        # Or an authorization identity other than the user (AUTHENTICATE
        # PLAIN's first field), which the sink refuses too.
        return " (a wrong password, or an authorization identity of another user)"
    same = [
        name for name in table if isinstance(name, str) and name.lower() == user.lower()
    ]
    if same:
        return (
            f" (the auth table has {printable(repr(same[0]))}: user names "
            "compare exactly)"
        )
    return " (not in the auth table)"


def _refusals(session: Session) -> list[Exchange]:
    """The replies of the sink that refused what ``session``'s client asked.
    Not the 421 of an idle timeout or a stop (a notice), nor the replies to
    its clean-up (RSET, QUIT), which refused nothing it wanted; nor a 503
    ("need RCPT command") after another refusal, its consequence when the
    client pipelined (MAIL, RCPT and DATA sent at once, as the relay does):
    the RCPT's 550 is the cause."""
    refused = [
        e
        for e in session.transcript
        if e.code is not None
        and e.code >= 400
        and e.command not in _CLEAN_UP
        and e.kind != "notice"
    ]
    return [e for e in refused if e.code != 503] or refused


def _refused_something(session: Session) -> bool:
    """Whether the sink refused a command of ``session``'s (not a clean-up
    one, not its own notice)."""
    return bool(_refusals(session))


def quit_after_ehlo(
    session: Session, hidden: Collection[str] = (), *, standalone: bool = False
) -> str:
    """Why a client says EHLO and then only QUIT: it wanted STARTTLS or
    AUTH, and the EHLO reply did not offer it (production settings in a
    test: ``EMAIL_USE_TLS``, a user name). The client's own error is often
    swallowed (logged by the app), so this line is all the test sees. The
    last EHLO counts: one after STARTTLS (or on an implicit-TLS sink)
    that offers no AUTH is the usual mistake with a TLS sink.
    ``standalone``: advice in the smtpsink command's words."""
    verbs = [e.command for e in session.transcript if e.command is not None]
    if "EHLO" not in verbs or not set(verbs) <= {"EHLO", "STARTTLS", *_CLEAN_UP}:
        return ""
    ehlo = [e for e in session.transcript if e.command == "EHLO"][-1]
    replies = ehlo.replies
    if not replies or not replies[-1].startswith("250"):
        # EHLO itself was refused (a fault, a 421): that is why it quit.
        return ""
    # The extension keywords: each line's first word after the first line,
    # which is the server's name (a sink named auth.example offers no AUTH).
    offered = {line[4:].partition(" ")[0].upper() for line in replies[1:]}
    tls_up = session.tls is not None
    if "STARTTLS" in offered and not tls_up:
        # AUTH may come only after it; a client that wanted AUTH would
        # have started TLS first, so nothing is sure enough to say.
        return ""
    if tls_up:
        if "AUTH" in offered:
            return ""
        lacking = "AUTH"
        advice = (
            "add --auth any to the sink's options"
            if standalone
            else "ask for a sink that offers it (auth='any', keeping its tls=)"
        )
    else:
        lacking = "STARTTLS" if "AUTH" in offered else "STARTTLS or AUTH"
        advice = (
            "start the sink with --tls starttls --auth any"
            if standalone
            else "ask for a sink that offers them "
            "(@pytest.mark.smtpsink(tls='starttls', auth='any'))"
        )
    # Of a session still open, "quit" read against end=open: it may have
    # given up and left it open (Django does when its starttls() raises),
    # or be about to send MAIL (the still-open line says to wait then).
    quit = "quit after EHLO" if session.end is not None else "has sent only EHLO so far"
    if ehlo.injected and any(name in hidden for name in lacking.split(" or ")):
        # The test's own hide() rule took it out of the reply (not any
        # fault at EHLO: a delay, or a hide() of another extension).
        return (
            f"; the client {quit}, whose reply the test's hide() fault "
            f"rule changed: did it want {lacking}?"
        )
    return (
        f"; the client {quit}: did it want {lacking}, which "
        f"this sink does not offer? Turn TLS and login off for tests, or {advice}"
    )


def _in_a_coroutine() -> Literal["asyncio", "trio"] | None:
    """Which event loop runs the coroutine that made this call, if one did:
    a blocking wait here stops that loop, and a task of it (the code under
    test sending mail) cannot run meanwhile.

    A coroutine on the caller's stack, and a loop running on this thread:
    the loop alone is no proof, as pytest-playwright's sync API (and
    nest_asyncio) leave one marked running under plain ``def`` tests, whose
    mail comes from another thread or process. trio (anyio's trio backend)
    is looked for only where it was imported."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and not frame.f_code.co_flags & _COROUTINE_FLAGS:
        frame = frame.f_back
    if frame is None:
        return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio: Any = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # not in trio's run (a worker thread of it, say)
            return None
        return "trio"
    return None


_COROUTINE_FLAGS = (
    inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
)


def _blocked_loop_hint(call: str, library: str) -> str:
    """The hint of a blocking wait that timed out in a coroutine."""
    return (
        f"Hint: {call} was called in a coroutine and blocked this thread's event "
        "loop for the whole wait: mail that a task of that loop sends could not "
        "go out meanwhile. "
        + (
            f"In a coroutine, await smtpsink.{call}_async(...)."
            if library == "asyncio"
            else "Under trio, run it in a thread: await anyio.to_thread.run_sync"
            f"(lambda: smtpsink.{call}(...)) (or trio.to_thread)."
        )
    )


class _NotYet:
    """``condition()`` as a predicate for `Mailbox._wait`.

    A condition may look at state that is not there yet (``sessions[-1]``
    on an empty tuple, ``transcript[0]`` of a session whose greeting is not
    recorded yet): an IndexError or KeyError means "not yet", not an error.
    So does an AssertionError: a condition may be an assertion, a mailbox's
    ``assert_in`` waiting for a background reader to move a message. The
    last such error is kept, so that a condition that can never succeed (a
    wrong index) still shows why when the wait times out. Any other
    exception propagates at once.
    """

    def __init__(self, condition: Callable[[], object]) -> None:
        self.condition = condition
        self.error: Exception | None = None
        #: What the condition returned when it was last called.
        self.value: object = None

    def __call__(self) -> bool:
        __tracebackhide__ = True  # the condition's error, not a frame of ours
        # Restored, not cleared: a condition may itself wait (nested).
        was, _CHECKING.active = _CHECKING.active, True
        try:
            value = self.condition()
        except (IndexError, KeyError, AssertionError) as error:
            self.error = error
            return False
        finally:
            _CHECKING.active = was
        if inspect.isawaitable(value):
            # An async def condition: its coroutine, never awaited, was true,
            # and the wait returned at once.
            close = getattr(value, "close", None)
            if close is not None:
                close()  # no "never awaited" RuntimeWarning besides
            raise TypeError(
                f"the condition {getattr(self.condition, '__name__', self.condition)} "
                "returned "
                "an awaitable (an async def function?), which is never awaited "
                "here: give a plain function or lambda that returns a truth value"
            )
        self.error = None
        self.value = value
        return bool(value)


def _callable_condition(condition: Callable[[], T], method: str) -> Callable[[], T]:
    """``condition``, if it can be called: ``wait_until(len(messages) == 1)``
    (the lambda forgotten) would fail on the first call inside the wait."""
    __tracebackhide__ = True
    if not callable(condition):
        raise TypeError(
            f"{method}() takes a condition to call, e.g. "
            f"{method}(lambda: len(smtpsink.messages) == 1); got "
            f"{type(condition).__name__} {shorten(repr(condition), 80)}"
        )
    return condition


def _check_count(count: object, allow_none: bool = True) -> None:
    __tracebackhide__ = True  # a bad count points at the test's line
    if count is None and allow_none:
        return
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        hint = ""
        if isinstance(count, str) and count.strip().isdecimal():
            # count="1" (from a template, an environment variable): not a
            # subject given by position.
            hint = f" (give it as a number: count={int(count)})"
        elif isinstance(count, str):  # assert_sent("ann@example.com"), a slip
            word = "to" if "@" in count else "subject"
            hint = f" (criteria are keywords: did you mean {word}={count!r}?)"
        # A TypeError for a wrong type, as for timeout= and within=.
        if isinstance(count, int) and not isinstance(count, bool):
            raise ValueError(f"count must be a whole number >= 0, got {count!r}")
        raise TypeError(
            f"count must be a whole number >= 0, got the {type(count).__name__} "
            f"{count!r}{hint}"
        )


def _check_wait_count(count: object, waiting: str) -> None:
    """A count to wait for: at least one. Waiting for none would return at
    once and prove nothing; waiting for nothing to come is another check."""
    __tracebackhide__ = True
    _check_count(count, allow_none=False)
    if count == 0:
        raise ValueError(
            f"{waiting}(count=0) would return at once: to check that no mail "
            "arrives for a while, use assert_nothing_sent(within=SECONDS) (in a "
            "coroutine, await assert_nothing_sent_async(within=SECONDS))"
        )


_LISTED = 20
#: The refusals of one session a hint shows (`Mailbox._refusals_hint`).
_REFUSALS_SHOWN = 3

#: Seconds a failure report waits for a session that has said nothing yet
#: (`Mailbox._let_new_sessions_settle`).
_SETTLE = 0.5


def _check_envelope_address(address: object, argument: str) -> None:
    """An address given to `Mailbox.release`, before anything connects: it
    goes as it is between the angle brackets of ``MAIL FROM`` or ``RCPT TO``
    (smtplib reads it as a header address, and would send ``a@x`` for
    ``a@x\r\nRSET``, a name and brackets, or a comment, while the `Delivery`
    named what was given). ``mail_from`` may be empty: the null sender."""
    import smtplib

    if not isinstance(address, str):
        raise TypeError(f"{argument} takes address strings, got {address!r}")
    if any(ord(char) < 32 or ord(char) == 127 for char in address):
        raise ValueError(
            f"{argument}: {address!r} has a control character (a line break "
            "would end the SMTP command)"
        )
    if not address:
        if argument == "mail_from":
            return
        raise ValueError("rcpt_to has an empty address")
    sent = smtplib.quoteaddr(address)
    if sent != f"<{address}>":
        raise ValueError(
            f"{argument}: {address!r} is not an address as SMTP sends it (no "
            f"angle brackets, display name or comment): it would go as {sent}"
        )


def _release_host_problem(host: str) -> str | None:
    """What keeps ``host`` from being a host name or an address, as a
    misplaced URL or port would otherwise get a DNS lookup (or pass as a
    remote host) and fail far from here; None if nothing does."""
    if "://" in host:
        return "a URL goes to relay= (release() takes the host, port and tls= apart)"
    if host != host.strip() or any(c.isspace() or not c.isprintable() for c in host):
        return "it has blanks or control characters"
    bracketed_port = re.fullmatch(r"\[(.+)\]:(\d+)", host)
    if bracketed_port:
        address, port = bracketed_port.groups()
        return f"give the port as port= ({address!r} and {port})"
    if ".." in host or host.startswith("."):
        return "it has an empty label ('..')"
    if ":" in host:
        import ipaddress  # only here: loaded by few runs

        bracketed = host.startswith("[") and host.endswith("]")
        try:  # brackets allowed, as a URL writes the address ("[::1]")
            ipaddress.IPv6Address(host[1:-1] if bracketed else host)
        except ValueError:
            name, _, port = host.rpartition(":")
            if port.isdigit() and ":" not in name:
                return f"give the port as port= ({name!r} and {port})"
            return "it is no IPv6 address, and a host name has no ':'"
    if "/" in host or "@" in host:
        return "a host name has no '/' or '@'"
    return None


def _check_upstream_arguments(
    host: object,
    port: object,
    timeout: object,
    ca_file: object,
    ssl_context: object,
) -> None:
    """`Mailbox.release`'s arguments, before anything connects: a wrong one
    is an error naming it, not a network failure (or a socket that smtplib
    leaves open, as a negative timeout did)."""
    __tracebackhide__ = True
    if not isinstance(host, str):
        raise TypeError(f"host must be a host name or address (a str), got {host!r}")
    if not host.strip():
        raise ValueError(f"host must be a host name or address, got {host!r}")
    problem = _release_host_problem(host)
    if problem is not None:
        raise ValueError(
            f"host must be a host name or address, got {host!r}: {problem}"
        )
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port}")
    check_seconds(timeout, "timeout")
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
    if ca_file is not None:
        if not isinstance(ca_file, (str, os.PathLike)):
            raise TypeError(f"ca_file must be a path, got {ca_file!r}")
        if not os.path.isfile(ca_file):
            raise ValueError(f"ca_file {os.fspath(ca_file)!r} is not a file")
        if ssl_context is not None:
            # The context would be used as it is, the CA file not read.
            raise ValueError(
                "give ca_file= or ssl_context=, not both (load the CA into the "
                "context with its load_verify_locations())"
            )
