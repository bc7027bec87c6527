"""Every undocumented aiosmtpd (and asyncio) name the sink relies on, fenced.

The SMTP protocol (`pytest_smtpsink._smtp`) extends aiosmtpd through its
documented hooks where it can (``smtp_<COMMAND>``, ``push``,
``challenge_auth``, ``_create_session``, ``_create_envelope``,
``auth_exclude_mechanism``). Where it must reach further, each name is
checked here, with the part of its behaviour the sink depends on, so that a
new aiosmtpd release that renames or changes one fails here, loudly and by
name, instead of silently losing a fast path or, worse, correctness. The
project declares no upper bound on aiosmtpd: this file is the fence.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import inspect
import logging
import smtplib
import ssl
import traceback
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import aiosmtpd
import pytest
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP, Envelope, Session

from pytest_smtpsink import SMTPSink, _setup_template
from pytest_smtpsink._smtp import RecordingSMTP


@pytest.fixture
def server() -> Iterator[SMTP]:
    loop = asyncio.new_event_loop()
    try:
        yield SMTP(Sink(), loop=loop)
    finally:
        loop.close()


def source(function: Callable[..., object]) -> str:
    return inspect.getsource(function)


def parameters(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


def relied_on(name: str, why: str) -> str:
    return (
        f"pytest-smtpsink relies on aiosmtpd's {name} ({why}); aiosmtpd "
        f"{aiosmtpd.__version__} changed it: adapt pytest_smtpsink/_smtp.py"
    )


def test_getaddr_parses_an_address_and_returns_the_rest(server: SMTP) -> None:
    # RecordingSMTP._getaddr overrides it with a fast path for plain
    # <local@domain> and defers everything else to it.
    why = "MAIL/RCPT address parsing, overridden by the fast path"
    assert parameters(SMTP._getaddr) == ["self", "arg"], relied_on("_getaddr", why)
    assert server._getaddr("<ann@example.com> SIZE=10") == (
        "ann@example.com",
        "SIZE=10",
    ), relied_on("_getaddr", why)
    assert "_getaddr" in source(SMTP._getparams) or "_getaddr" in source(
        SMTP.smtp_MAIL
    ), relied_on("_getaddr", why)


def test_timeout_callback(server: SMTP) -> None:
    why = "overridden to record the 'timeout' end of a session"
    assert parameters(SMTP._timeout_cb) == ["self"], relied_on("_timeout_cb", why)
    assert "self._timeout_cb" in source(SMTP._reset_timeout), relied_on(
        "_timeout_cb", why
    )


def test_idle_timer_is_reset_per_command_and_cancelled_at_the_end(
    server: SMTP,
) -> None:
    # RecordingSMTP._reset_timeout keeps one timer and moves a deadline; it
    # relies on where aiosmtpd resets the timer, on the timeout's attribute
    # and on connection_lost cancelling _timeout_handle.
    why = "the sink's one-timer idle timeout"
    assert parameters(SMTP._reset_timeout) == ["self", "duration"], relied_on(
        "_reset_timeout", why
    )
    assert "self._reset_timeout()" in source(SMTP._handle_client), relied_on(
        "_reset_timeout", why
    )
    assert "self._reset_timeout()" in source(SMTP.connection_made), relied_on(
        "_reset_timeout", why
    )
    assert "self._timeout_handle.cancel()" in source(SMTP.connection_lost), relied_on(
        "_timeout_handle", why
    )
    assert server._timeout_duration == 300, relied_on("_timeout_duration", why)


def test_client_connected_callback_and_its_streams() -> None:
    why = "overridden to wrap the stream reader that records each line"
    assert parameters(SMTP._cb_client_connected) == [
        "self",
        "reader",
        "writer",
    ], relied_on("_cb_client_connected", why)
    assert "client_connected_cb=self._cb_client_connected" in source(SMTP.__init__), (
        relied_on("_cb_client_connected", why)
    )
    body = source(SMTP._cb_client_connected)
    for name in ("self._reader = reader", "self._writer = writer"):
        assert name in body, relied_on(name.split(" ")[0], "read when closing")


def test_handle_client_is_the_session_coroutine() -> None:
    assert "self._handle_client()" in source(SMTP.connection_made), relied_on(
        "_handle_client", "overridden for the CONNECT fault stage"
    )
    assert inspect.iscoroutinefunction(SMTP._handle_client), relied_on(
        "_handle_client", "overridden for the CONNECT fault stage"
    )
    assert parameters(SMTP._handle_client) == ["self"]


def test_a_new_connections_set_up_is_what_the_sink_does_without_a_handler() -> None:
    # RecordingSMTP._start_lean does connection_made's work for a new plain
    # connection itself, and greets, leaving out the handler task until a
    # line needs it; _start_handler then starts _handle_client with its
    # first push (the greeting) skipped.
    why = "copied by _start_lean for connections served without a handler"
    made = " ".join(source(SMTP.connection_made).split())
    for step in (
        "self._set_rset_state()",
        "self.session = self._create_session()",
        "self.session.peer = transport.get_extra_info('peername')",
        "self._reset_timeout()",
        "super().connection_made(transport) self.transport = transport",
        "self._handler_coroutine = self.loop.create_task( self._handle_client())",
    ):
        assert step in made, relied_on("connection_made", f"{why}: {step}")
    handler = " ".join(source(SMTP._handle_client).split())
    greeting = "await self.push('220 {} {}'.format(self.hostname, self.__ident__))"
    assert greeting in handler, relied_on("_handle_client", "greets as _start_lean")
    before = handler.partition(greeting)[0]
    # Before the greeting only the PROXY handshake, which the sink never
    # asks for (it then serves with the handler from the start).
    assert before.count("self.push(") == 0, relied_on(
        "_handle_client", "its greeting is its first push, skipped once"
    )
    assert "if self._proxy_timeout is not None:" in before


def test_a_connection_without_a_handler_is_greeted_as_aiosmtpd_greets() -> None:
    """A fault rule (one that never fires) makes the sink serve a new
    connection with aiosmtpd's handler from the start: the greeting the
    client reads, and the one recorded, must be the same either way."""
    greetings = []
    with SMTPSink() as sink:
        for with_rule in (False, True):
            if with_rule:
                sink.fail("RCPT", 550, match="nobody@example.com")
            with smtplib.SMTP() as client:
                greetings.append(client.connect(sink.host, sink.port))
        sink.wait_until(lambda: [s.end for s in sink.sessions] == ["quit", "quit"])
        recorded = [s.transcript[0].replies for s in sink.sessions]
    assert greetings == [(220, b"smtpsink.test pytest-smtpsink")] * 2
    assert recorded == [["220 smtpsink.test pytest-smtpsink"]] * 2


def test_post_data_state_resets_the_transaction(server: SMTP) -> None:
    why = "called after our own DATA reader, as aiosmtpd's smtp_DATA does"
    assert parameters(SMTP._set_post_data_state) == ["self"], relied_on(
        "_set_post_data_state", why
    )
    server.envelope = Envelope()
    server.envelope.mail_from = "app@example.com"
    server._set_post_data_state()  # type: ignore[no-untyped-call]
    assert server.envelope is not None, relied_on("_set_post_data_state", why)
    assert server.envelope.mail_from is None, relied_on("_set_post_data_state", why)


@pytest.mark.parametrize("hook", ["_create_session", "_create_envelope"])
def test_session_and_envelope_factories(hook: str) -> None:
    # Documented as subclass hooks, but underscored: fenced all the same.
    assert hasattr(SMTP, hook), relied_on(hook, "our session and envelope types")
    assert f"self.{hook}()" in source(SMTP), relied_on(hook, "called per connection")


def test_auth_required_flag() -> None:
    # Set after __init__ so that aiosmtpd does not warn about AUTH over
    # plain text, which a test may ask for (auth_plaintext=True).
    assert "self._auth_required" in source(SMTP.check_auth_needed), relied_on(
        "_auth_required", "set after __init__ to require AUTH"
    )


def test_session_login_data_backing_attribute() -> None:
    # _QuietSession overrides the deprecated login_data property (which
    # warns on every AUTH) and keeps its value where aiosmtpd does.
    session = Session(asyncio.new_event_loop())
    try:
        assert "_login_data" in vars(session), relied_on(
            "Session._login_data", "the quiet login_data property"
        )
        assert isinstance(Session.__dict__.get("login_data"), property)
    finally:
        session.loop.close()


def test_stream_reader_buffer_holds_unread_bytes() -> None:
    # CPython's, not aiosmtpd's: read when a client leaves in the middle of
    # a message, to count the last line that never got its CRLF, and before
    # answering a command as it arrives (it must not end an earlier line).
    loop = asyncio.new_event_loop()
    try:
        reader = asyncio.StreamReader(loop=loop)
        reader.feed_data(b"tail")
        assert bytes(reader._buffer) == b"tail", (  # type: ignore[attr-defined]
            "pytest-smtpsink relies on asyncio.StreamReader._buffer"
        )
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["check_helo_needed", "check_auth_needed"])
def test_undocumented_checks_used_by_our_data_command(name: str) -> None:
    method = getattr(SMTP, name, None)
    assert method is not None, relied_on(name, "our smtp_DATA runs it first")
    assert inspect.iscoroutinefunction(method)
    assert f"self.{name}(" in source(SMTP.smtp_DATA), relied_on(
        name, "aiosmtpd's own smtp_DATA runs it; ours does the same"
    )


@pytest.mark.parametrize("name", ["line_length_limit", "local_part_limit"])
def test_limits_read_by_our_parsers(name: str) -> None:
    assert isinstance(getattr(SMTP, name, None), int), relied_on(
        name, "the content reader and the address fast path apply it"
    )


@pytest.mark.parametrize(
    "command", ["smtp_HELO", "smtp_EHLO", "smtp_STARTTLS", "smtp_AUTH", "smtp_DATA"]
)
def test_help_syntax_attributes(command: str) -> None:
    # Our overrides copy aiosmtpd's @syntax attributes, so HELP still works.
    assert hasattr(getattr(SMTP, command), "__smtp_syntax__"), relied_on(
        f"{command}.__smtp_syntax__", "HELP text of our overrides"
    )
    assert getattr(RecordingSMTP, command).__smtp_syntax__ == (
        getattr(SMTP, command).__smtp_syntax__
    )


def test_auth_exclude_mechanism_removes_every_mechanism() -> None:
    # Public, but the sink counts on it leaving no AUTH at all when every
    # mechanism is excluded (a sink without an auth table offers none).
    loop = asyncio.new_event_loop()
    try:
        server = SMTP(
            Sink(), loop=loop, auth_exclude_mechanism=["PLAIN", "LOGIN", "XYZ"]
        )
        assert server._auth_methods == {}, relied_on(
            "auth_exclude_mechanism", "no AUTH offered without an auth table"
        )
    finally:
        loop.close()


def test_getparams_parses_mail_and_rcpt_parameters(server: SMTP) -> None:
    # Overridden to take the DSN parameters out before aiosmtpd refuses
    # them as unknown.
    why = "overridden to accept the DSN parameters (RFC 3461)"
    assert parameters(SMTP._getparams) == ["self", "params"], relied_on(
        "_getparams", why
    )
    assert server._getparams(["SIZE=10", "RET=HDRS", "SMTPUTF8"]) == {
        "SIZE": "10",
        "RET": "HDRS",
        "SMTPUTF8": True,
    }, relied_on("_getparams", why)
    for command in (SMTP.smtp_MAIL, SMTP.smtp_RCPT):
        assert "self._getparams(" in source(command), relied_on("_getparams", why)


def test_command_size_limits_are_read_per_command() -> None:
    # Replaced per connection, with room for DSN parameters on MAIL/RCPT.
    assert "self.command_size_limits[" in source(SMTP._handle_client), relied_on(
        "command_size_limits", "longer MAIL/RCPT lines for DSN"
    )


def test_challenge_auth_is_what_the_mechanisms_call() -> None:
    # Overridden to read long responses whole and record them masked.
    expected = ["self", "challenge", "encode_to_b64", "log_client_response"]
    assert parameters(SMTP.challenge_auth) == expected, relied_on(
        "challenge_auth", "overridden to mask and bound AUTH responses"
    )
    for mechanism in (SMTP.auth_PLAIN, SMTP.auth_LOGIN):
        assert "challenge_auth(" in source(mechanism), relied_on(
            "challenge_auth", "PLAIN and LOGIN must ask through it"
        )


def test_the_log_we_mask_is_mail_log() -> None:
    import aiosmtpd.smtp

    assert aiosmtpd.smtp.log.name == "mail.log", relied_on(
        "the mail.log logger", "AUTH lines in its records are masked"
    )


def test_the_names_aiosmtpd_looks_up_per_connection_are_all_there() -> None:
    # RecordingSMTP and the handler narrow dir() to what SMTP.__init__ looks
    # for (smtp_* and auth_* on both, handle_* on the handler), to cut the
    # cost of every connection. A hook or command added to either class must
    # still be found.
    from pytest_smtpsink._smtp import _Handler

    def defined(cls: type, *prefixes: str) -> set[str]:
        return {
            name
            for klass in cls.__mro__
            for name in vars(klass)
            if name.startswith(prefixes)
        }

    assert "dir(handler)" in source(SMTP.__init__), relied_on(
        "dir(handler)", "finding the handle_* hooks"
    )
    assert set(dir(_Handler())) == defined(_Handler, "handle_", "auth_")
    assert set(RecordingSMTP.__dir__(object.__new__(RecordingSMTP))) == defined(
        RecordingSMTP, "smtp_", "auth_"
    )


# -- a connection's set-up, copied from the first one (_setup_template) --------

SETUPS = {
    "plain": {},
    "starttls": {"tls": "starttls"},
    "starttls-required": {"tls": "starttls-required"},
    "implicit-tls": {"tls": "implicit"},
    "auth": {"auth": {"ann": "secret"}, "auth_plaintext": True},
    "auth-required": {
        "auth": {"ann": "secret"},
        "auth_required": True,
        "tls": "starttls",
    },
    "limits": {"max_size": 1000, "smtputf8": False, "hostname": "mx.test"},
}


def _protocols(sink: SMTPSink) -> tuple[RecordingSMTP, ...]:
    """(the first connection's, two copied from it, one set up by aiosmtpd),
    made on the sink's loop as its server makes them."""
    runtime = sink._runtime
    assert runtime is not None
    state = runtime.state

    def kept() -> object:
        return state.setup_template

    async def make() -> tuple[RecordingSMTP, ...]:
        assert kept() is None  # no connection yet
        first = state.make_protocol()
        template = state.setup_template
        assert template, "the first connection's set-up was not kept"
        copied = state.make_protocol()
        again = state.make_protocol()
        state.setup_template = False
        try:
            reference = state.make_protocol()
        finally:
            state.setup_template = template
        return first, copied, again, reference

    return asyncio.run_coroutine_threadsafe(make(), runtime.loop).result(timeout=30)


def _same_setup(
    copied: object, reference: object, owners: tuple[object, object]
) -> None:
    """``copied`` stands where ``reference`` does, each for its own connection
    (``owners``: copied's protocol, reference's)."""
    if isinstance(reference, types.MethodType):
        assert isinstance(copied, types.MethodType)
        assert copied.__func__ is reference.__func__
        if reference.__self__ is owners[1]:
            assert copied.__self__ is owners[0], "bound to another connection"
        else:
            assert copied.__self__ is reference.__self__
    elif isinstance(reference, dict):
        assert type(copied) is type(reference)
        assert copied.keys() == reference.keys()
        for key, value in reference.items():
            _same_setup(copied[key], value, owners)
    elif isinstance(reference, tuple):
        assert type(copied) is type(reference)
        assert len(copied) == len(reference)
        for mine, theirs in zip(copied, reference, strict=True):
            _same_setup(mine, theirs, owners)
    elif isinstance(reference, asyncio.StreamReader):
        assert type(copied) is asyncio.StreamReader
        assert copied._limit == reference._limit  # type: ignore[attr-defined]
        assert copied is not reference
    elif isinstance(reference, asyncio.Future):
        assert isinstance(copied, asyncio.Future)
        assert copied is not reference
        assert not copied.done()
    elif isinstance(reference, weakref.ref):
        assert isinstance(copied, weakref.ref)
        assert isinstance(copied(), asyncio.StreamReader)
    elif isinstance(reference, traceback.StackSummary):
        # Where the protocol was made (asyncio's debug mode, as under tox):
        # each connection's own.
        assert isinstance(copied, traceback.StackSummary)
        assert copied is not reference
    elif isinstance(reference, collections.deque):
        assert isinstance(copied, collections.deque)
        assert copied is not reference
        assert list(copied) == list(reference)
    else:
        assert copied == reference or copied is reference


@pytest.mark.parametrize("settings", SETUPS.values(), ids=SETUPS.keys())
def test_a_copied_setup_is_aiosmtpd_s_own(settings: dict[str, Any]) -> None:
    # The server sets up its first connection with aiosmtpd's SMTP.__init__
    # and copies that set-up for the others. Every attribute must be what
    # aiosmtpd's own set-up gives: a new aiosmtpd that sets another one, or
    # sets one differently, fails here by name.
    with SMTPSink(**settings) as sink:
        first, copied, again, reference = _protocols(sink)
    assert vars(copied).keys() == vars(reference).keys()
    for name, value in vars(reference).items():
        try:
            _same_setup(vars(copied)[name], value, (copied, reference))
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
    # Nothing that one connection may change is shared with another.
    for name, value in vars(copied).items():
        if isinstance(value, (dict, list, set, collections.deque)):
            assert value is not vars(first)[name], name
            assert value is not vars(again)[name], name


def test_a_setup_with_values_it_cannot_copy_is_refused() -> None:
    # A value neither immutable nor known to be shared (here a list, which a
    # connection could change) refuses the template: aiosmtpd's set-up then
    # runs for every connection.
    class Protocol:
        def __init__(self) -> None:
            self.greeting = "220"
            self.seen: list[str] = []

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(_setup_template.Refused, match="seen: list"):
            _setup_template.take(Protocol(), (), loop)
    finally:
        loop.close()


def test_aiosmtpd_s_setup_runs_for_every_connection_when_its_log_is_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiosmtpd logs the AUTH mechanisms at INFO from its set-up: someone who
    # turned mail.log up sees that line for every connection, not only the
    # first.
    with caplog.at_level(logging.INFO, logger="mail.log"), SMTPSink() as sink:
        for _ in range(3):
            with smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
                client.noop()
        sink.wait_until(
            lambda: len(sink.sessions) == 3 and all(s.end for s in sink.sessions)
        )
    lines = [r for r in caplog.records if "Available AUTH mechanisms" in r.getMessage()]
    assert len(lines) == 3


@pytest.mark.parametrize(
    "settings",
    # With AUTH, the mechanisms are named tuples holding bound methods.
    [SETUPS["plain"], SETUPS["auth"]],
    ids=["plain", "auth"],
)
def test_the_first_connection_is_freed_like_any_other(
    settings: dict[str, Any],
) -> None:
    # The copied set-up must not keep the first connection (its protocol,
    # transcript and transport) alive for the sink's life.
    with SMTPSink(**settings) as sink:
        runtime = sink._runtime
        assert runtime is not None
        with smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
            client.noop()
            (connection,) = runtime.state.connections
            first = weakref.ref(connection)
            del connection
        for _ in range(2):  # copied set-ups, from the first one's
            with smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
                client.noop()
        sink.wait_until(
            lambda: len(sink.sessions) == 3 and all(s.end for s in sink.sessions)
        )
        sink.wait_until(lambda: not runtime.state.connections)
        assert runtime.state.setup_template
        sink.clear()
        gc.collect()
        assert first() is None, gc.get_referrers(first())


def test_a_tls_context_aiosmtpd_warns_of_is_set_up_by_aiosmtpd_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiosmtpd logs a warning from its set-up for a TLS context that
    # verifies clients: copying the set-up would log it for the first
    # connection only.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    with SMTPSink(tls="starttls") as sink:
        runtime = sink._runtime
        assert runtime is not None
        state = runtime.state
        state.tls_context = context  # as if the sink had been given it

        async def connections() -> None:
            for _ in range(3):
                state.make_protocol()

        with caplog.at_level(logging.WARNING, logger="mail.log"):
            asyncio.run_coroutine_threadsafe(connections(), runtime.loop).result(30)
    assert state.setup_template is False
    warnings = [r for r in caplog.records if "verify_mode" in r.getMessage()]
    assert len(warnings) == 3
