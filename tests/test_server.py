"""SMTPSink on its own: start, stop, addresses and start failures."""

from __future__ import annotations

import copy
import imaplib
import os
import pickle
import poplib
import smtplib
import socket
import sys
import threading

import pytest
from conftest import Factory, start_on_ipv6_loopback

from pytest_smtpsink import SettingsError, SinkError, SinkSettings, SMTPSink

pytest_plugins = ["pytester"]

_BEFORE: set[threading.Thread] = set()
#: Seconds a client waits for the sink (a busy machine is slow, not broken).
TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _threads_before() -> None:
    # The plugin's session sink may be running; only threads a test starts count.
    _BEFORE.clear()
    _BEFORE.update(threading.enumerate())


def _sink_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("smtpsink-") and t not in _BEFORE
    ]


def test_binds_loopback_on_a_free_port() -> None:
    with SMTPSink() as sink:
        assert sink.host == "127.0.0.1"
        assert sink.port > 0
        assert sink.url == f"smtp://127.0.0.1:{sink.port}"
        with smtplib.SMTP(sink.host, sink.port) as client:
            code, _ = client.noop()
        assert code == 250
    assert not _sink_threads()


@pytest.mark.parametrize("lines", [True, False])
def test_a_listener_hears_of_each_line_only_if_it_asks(lines: bool) -> None:
    noops = 20
    calls: list[tuple[int, int, bool]] = []  # (sessions, messages, ended)
    ended = threading.Event()
    with SMTPSink() as sink:

        def listener() -> None:
            sessions = sink.sessions
            over = bool(sessions) and sessions[-1].end is not None
            calls.append((len(sessions), len(sink.messages), over))
            if over:
                ended.set()

        stop = sink.on_change(listener, lines=lines)
        try:
            with smtplib.SMTP(sink.host, sink.port) as client:
                for _ in range(noops):
                    client.noop()
                client.sendmail("a@example.com", ["b@example.com"], b"Hi\r\n")
            assert ended.wait(30), f"no call after the session ended: {calls}"
        finally:
            stop()
    if lines:  # every command and reply: the 20 NOOPs alone are 40 lines
        assert len(calls) > 2 * noops, calls
    else:  # the session began, the message came, the session ended
        assert (1, 0, False) in calls, calls
        assert (1, 1, False) in calls, calls
        assert calls[-1] == (1, 1, True), calls
        assert len(calls) <= 4, calls


def test_two_sinks_get_different_ports() -> None:
    with SMTPSink() as one, SMTPSink() as two:
        assert one.port != two.port


def test_stop_releases_the_port_and_is_idempotent() -> None:
    sink = SMTPSink().start()
    port = sink.port
    sink.stop()
    sink.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # raises if the port were still held
    assert not sink.running
    assert not _sink_threads()


def test_stop_closes_connections_left_open_saying_421() -> None:
    # Before: closed without a word, which a client cannot tell from a crash
    # (RFC 5321 3.8: a server shut down should send 421).
    sink = SMTPSink().start()
    client = smtplib.SMTP(sink.host, sink.port)
    client.ehlo("left.open")
    client.mail("app@example.com")
    client.rcpt("ann@example.com")
    sink.stop()
    goodbye = f"421 4.3.2 {sink.settings.hostname} Service shutting down"
    assert client.getreply() == (421, goodbye[4:].encode())
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()
    session = sink.sessions[0]
    assert session.end == "server-closed"
    # No command asked for it: its own exchange. Added to the last one, it
    # made the accepted RCPT read as refused with 421.
    assert session.codes == [220, 250, 250, 250, 421]
    assert session.replies_to("RCPT")[0].code == 250
    notice = session.transcript[-1]
    assert (notice.kind, notice.command, notice.replies) == ("notice", None, [goodbye])
    assert notice.lines() == [f"S: {goodbye}"]


def test_stop_on_a_sink_never_started_is_harmless() -> None:
    SMTPSink().stop()


def test_a_stopped_sink_cannot_restart() -> None:
    sink = SMTPSink().start()
    sink.stop()
    with pytest.raises(SinkError, match="cannot be restarted"):
        sink.start()


def test_starting_twice_is_an_error() -> None:
    with SMTPSink() as sink, pytest.raises(SinkError, match="already running"):
        sink.start()


def test_port_in_use_fails_at_once_and_leaks_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sink = SMTPSink(port=port)
        # The reason is the operating system's own words (POSIX: strerror).
        reason = ".+" if sys.platform == "win32" else "Address already in use"
        with pytest.raises(
            SinkError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: {reason}$"
        ):
            sink.start()
    assert not _sink_threads()


def test_a_fixed_port_is_free_again_right_after_a_stop() -> None:
    sink = SMTPSink().start()
    port = sink.port
    client = smtplib.SMTP(sink.host, port)
    client.ehlo("left.open")
    # The sink closes this connection first, so its end of it stays in
    # TIME_WAIT on the port; on POSIX only SO_REUSEADDR lets a new server bind.
    sink.stop()
    client.close()
    assert sink.sessions[0].end == "server-closed"
    with SMTPSink(port=port) as again:
        assert again.port == port


def test_address_of_a_sink_never_started_says_so() -> None:
    with pytest.raises(SinkError, match="never started"):
        _ = SMTPSink().port


def test_mail_stays_readable_after_stop_but_waiting_says_stopped() -> None:
    with SMTPSink() as sink, smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            "a@example.com", ["b@example.com"], b"Subject: kept\r\n\r\n.\r\n"
        )
    assert sink.messages.one().subject == "kept"
    with pytest.raises(
        SinkError, match="cannot wait for mail: the SMTP sink was stopped"
    ):
        sink.wait_for(subject="more")


@pytest.mark.parametrize(
    ("size", "expected"), [("25MB", 25_000_000), (" 64K ", 65_536), ("0", 0)]
)
def test_max_size_takes_a_unit_as_the_option_does(size: str, expected: int) -> None:
    settings = SinkSettings(max_size=size)  # type: ignore[arg-type]
    assert settings.max_size == expected
    assert SMTPSink(max_size=size).settings == settings


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("port", 70000, "port: must be an integer from 0 to 65535"),
        ("port", "25", "port: must be an integer"),
        ("host", "localhost", "host: 'localhost' is not an IP address"),
        ("host", "0.0.0.0", "host: 0.0.0.0 is not a loopback address"),
        ("max_size", -1, "max_size: must be a number of bytes >= 0"),
        # EHLO advertised a 33-digit SIZE; RFC 1870 allows 20.
        ("max_size", 10**20, "max_size: .* of at most 20 digits, got 1000"),
        ("max_size", "lots", "max_size: 'lots' is not a size"),
        ("max_recipients", 0, "max_recipients: must be None or an integer >= 1"),
        ("tls", "ssl", "tls: must be None or one of 'starttls'.*'ssl'$"),
        # A typo gets the choice it was meant to be.
        ("tls", "startls", r"got 'startls' \(did you mean 'starttls'\?\)$"),
        ("tls", "IMPLICIT", r"got 'IMPLICIT' \(did you mean 'implicit'\?\)$"),
        ("event_loop", "uvlop", r"got 'uvlop' \(did you mean 'uvloop'\?\)$"),
        ("auth", "yes", "auth: must be None, 'any' or a mapping"),
        ("auth", {}, "auth: the credentials table is empty"),
        # os.environ.get("PW", "") with PW unset: no login could use it.
        ("auth", {"ann": ""}, "auth: the credentials table gives 'ann' an empty pa"),
        ("auth", {"": "pw"}, "auth: the credentials table has an empty user name"),
        # os.environ's stand-in for a byte that is not UTF-8: no client can
        # send it, and before, building the masks raised UnicodeEncodeError.
        ("auth", {"ann": "p\udcffw"}, "auth: .* gives 'ann' a password that is not"),
        ("auth", {"\udcff": "pw"}, "auth: .* has a user name that is not valid"),
        ("auth", "any", "auth: AUTH is only offered over TLS"),
        ("auth_required", True, "auth_required: needs auth="),
        ("hostname", "has space", "hostname: must be a domain name"),
        # Before: taken, and sent raw in the greeting and the EHLO reply.
        ("hostname", "a\x1b[2Jb", "hostname: must be a domain name"),
        ("hostname", "a\x00b", "hostname: must be a domain name"),
        # Before: taken, and written into relayed mail's Received: header.
        ("hostname", "a/b", "hostname: must be a domain name"),
        ("hostname", "-mx", "hostname: must be a domain name"),
        # Before: taken, and said in every greeting.
        ("hostname", "a..b", "hostname: must be a domain name"),
        ("hostname", "x" * 64 + ".example", "hostname: must be a domain name"),
        ("hostname", "a." * 130 + "b", "hostname: must be a domain name"),
        ("hostname", "[999.1.1.1]", "hostname: must be a domain name"),
        ("hostname", "[IPv6:zz]", "hostname: must be a domain name"),
        # A zone: ipaddress takes any characters in it, a CR LF too.
        ("hostname", "[IPv6:fe80::1%a\r\n554 x]", "hostname: must be a domain name"),
        ("smtputf8", "yes", "smtputf8: must be True or False"),
        ("idle_timeout", 0, "idle_timeout: must be a number of seconds > 0"),
    ],
)
def test_bad_settings_name_the_setting(
    setting: str, value: object, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        SMTPSink(None, **{setting: value})
    assert caught.value.setting == setting


def test_a_bad_setting_keeps_passwords_out_of_showlocals(
    pytester: pytest.Pytester,
) -> None:
    # pytest -l prints the variables of every frame it shows: the sink's
    # own frames, which hold auth= and relay URLs, are not shown.
    secret = "hunter2-s3cret"
    pytester.makepyfile(
        f"""
from pytest_smtpsink import SinkSettings, SMTPSink

PASSWORD = "{secret[::-1]}"[::-1]  # reversed: not in the source shown

def test_sink():
    SMTPSink(auth={{"ann": PASSWORD}}, tls="starttls", relay_timeout=-5)

def test_settings():
    SinkSettings(
        relay="smtp://ann:" + PASSWORD + "@127.0.0.1:25", relay_to=".*",
        relay_timeout=-5,
    )

def test_replace():
    SinkSettings(auth={{"ann": PASSWORD}}, tls="starttls").replace(max_size=-1)
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--showlocals")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        ["E       pytest_smtpsink.SettingsError: relay_timeout: must be *"] * 2
        + ["E       pytest_smtpsink.SettingsError: max_size: must be *"]
    )
    assert secret not in result.stdout.str()


def test_unknown_setting_lists_the_valid_ones() -> None:
    with pytest.raises(
        TypeError, match=r"unknown sink setting\(s\) 'colour'; valid .*hostname"
    ):
        SMTPSink(colour="blue")
    # A slip gets the name meant, before the list.
    with pytest.raises(TypeError) as caught:
        SMTPSink(max_sise=5, hostnme="x")
    assert str(caught.value).startswith(
        "unknown sink setting(s) 'hostnme', 'max_sise' (did you mean hostname "
        "for 'hostnme', max_size for 'max_sise'?); valid settings are: "
    )
    # Two letters swapped in a short name: below difflib's cutoff.
    with pytest.raises(TypeError, match=r"'tsl' \(did you mean tls\?\)"):
        SMTPSink(tsl="starttls")


def test_remote_bind_must_be_asked_for() -> None:
    settings = SinkSettings(host="0.0.0.0", allow_remote=True)
    assert settings.host == "0.0.0.0"


def test_a_sink_bound_to_every_ipv6_interface_takes_ipv4_clients_too() -> None:
    # asyncio makes IPv6 sockets IPv6-only: `smtpsink --host ::` refused
    # 127.0.0.1 on SMTP, POP3 and IMAP (its live view took it).
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    sink = SMTPSink(host="::", allow_remote=True)
    try:
        sink.start()
    except SinkError as error:
        pytest.skip(f"no IPv6 here: {error}")
    try:
        pop3 = sink.serve_mailboxes("pop3", 0)
        imap = sink.serve_mailboxes("imap", 0)
        for host in ("127.0.0.1", "::1"):
            with smtplib.SMTP(host, sink.port, timeout=TIMEOUT) as client:
                client.sendmail(
                    "a@example.com", ["ann@example.com"], b"Subject: x\r\n\r\nx"
                )
            pop = poplib.POP3(host, pop3.port, timeout=TIMEOUT)
            try:
                pop.user("ann@example.com")
                pop.pass_("any")
                assert pop.stat()[0] >= 1
            finally:
                pop.quit()
            with imaplib.IMAP4(host, imap.port, timeout=TIMEOUT) as client:
                client.login("ann@example.com", "any")
        assert [s.peer[0] for s in sink.sessions if s.protocol == "SMTP"] == [
            "127.0.0.1",
            "::1",
        ]
    finally:
        sink.stop()


def test_a_socket_numbered_past_1023_is_polled() -> None:
    # select() refuses a descriptor over 1023: under uvloop, whose loops
    # hold more descriptors, a long test run's relay failed with "the relay
    # failed: ValueError('filedescriptor out of range in select()')".
    resource = pytest.importorskip("resource")
    from pytest_smtpsink._listening import readable_now

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this process may open {hard} files at most")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1030:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        a, b = socket.socketpair()
        with a, b:
            assert a.fileno() > 1023
            assert readable_now(a) is False
            b.sendall(b"x")
            assert readable_now(a) is True
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_settings_are_hashable_and_keep_a_private_copy_of_credentials() -> None:
    users = {"ann": "secret"}
    settings = SinkSettings(auth=users, tls="starttls")
    users["ann"] = "changed"
    assert settings.auth == {"ann": "secret"}
    assert hash(settings) == hash(SinkSettings(auth={"ann": "secret"}, tls="starttls"))
    assert "secret" not in settings.describe()
    # key(), public too, holds digests: a test printing it prints no
    # password, and other passwords still make another key.
    relaying = SinkSettings(relay="smtp://u:pw2@127.0.0.1:25", relay_to=".*")
    shown = repr(settings.key()) + repr(relaying.key())
    assert ("secret" in shown, "pw2" in shown) == (False, False)
    assert settings.key() != SinkSettings(auth={"ann": "other"}, tls="starttls").key()


def test_settings_with_credentials_can_be_copied_and_pickled() -> None:
    # A user's config object holding settings gets deep-copied (by fixtures,
    # by parametrisation helpers) or pickled (by multiprocessing); the
    # read-only view of the auth table alone could be neither.
    settings = SinkSettings(auth={"ann": "secret"}, tls="starttls", max_size=1000)
    for copied in (copy.deepcopy(settings), pickle.loads(pickle.dumps(settings))):
        assert copied == settings
        assert hash(copied) == hash(settings)
        assert copied.auth == {"ann": "secret"}
        with pytest.raises(TypeError):
            copied.auth["ann"] = "changed"  # type: ignore[index]
    assert copy.copy(settings) == settings


def test_greeting_uses_the_configured_hostname() -> None:
    with (
        SMTPSink(hostname="mx.test.example") as sink,
        smtplib.SMTP(sink.host, sink.port) as client,
    ):
        code, name = client.ehlo("me.example")
        assert code == 250
        assert name.decode().splitlines()[0] == "mx.test.example"


def test_ipv6_loopback() -> None:
    sink = start_on_ipv6_loopback()
    try:
        assert sink.url == f"smtp://[::1]:{sink.port}"
        with smtplib.SMTP("::1", sink.port) as client:
            client.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: v6\r\n\r\nhi\r\n"
            )
        sink.assert_sent(subject="v6")
        # The peer as URLs write it: "::1:41234" read as a host of "::1:41234".
        summary = sink.sessions[0].summary()
        assert summary.startswith(f"[::1]:{sink.sessions[0].peer[1]} "), summary
    finally:
        sink.stop()


def test_clearing_a_view_leaves_other_views_alone() -> None:
    with SMTPSink() as sink:
        first, second = sink.view(), sink.view()
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: one\r\n\r\nx\r\n"
            )
        second.clear()
        assert len(second.messages) == 0
        assert [m.subject for m in first.messages] == ["one"]
        sink.clear()  # the sink's own clear frees everything
        assert len(first.messages) == 0
        assert sink._store.stored_bytes == 0


def test_stop_with_a_client_stuck_in_the_tls_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = SMTPSink(tls="implicit").start()
    with socket.create_connection((sink.host, sink.port)) as client:
        # The server has accepted once the client's first byte is acknowledged
        # by a handshake attempt; a plain-text byte never completes it.
        client.sendall(b"\x00")
        sink.stop()
    assert not sink.running
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.parametrize("tls", [None, "implicit"])
def test_stop_just_after_an_accept(
    caplog: pytest.LogCaptureFixture, tls: str | None
) -> None:
    # The window of CPython gh-109564: the loop has accepted a client but
    # not yet attached its transport when stop() closes the server. Hold the
    # loop in two callbacks so the accept and the stop land in that order.
    sink = SMTPSink(tls=tls).start()
    loop = sink._loop
    assert loop is not None
    first, second, holding_second = (threading.Event() for _ in range(3))

    def hold_second() -> None:
        holding_second.set()
        second.wait(10)

    loop.call_soon_threadsafe(first.wait, 10)
    with socket.create_connection((sink.host, sink.port)) as client:
        client.sendall(b"\x00")
        loop.call_soon_threadsafe(hold_second)
        first.set()  # next loop iteration: hold_second, then the accept
        assert holding_second.wait(10)
        # stop() queues its shutdown at once and then waits for the thread;
        # let the loop go on a moment later, after the accept was queued.
        release = threading.Timer(0.05, second.set)
        release.start()
        sink.stop()
        release.join()
    assert not sink.running
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_non_ascii_password(smtpsink_factory: Factory) -> None:
    import base64

    sink = smtpsink_factory(auth={"zoë": "pässwörd"}, auth_plaintext=True)

    def plain(user: str, password: str) -> str:
        return base64.b64encode(f"\0{user}\0{password}".encode()).decode()

    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN " + plain("zoë", "wrong-ü"))[0] == 535
        assert client.docmd("AUTH", "PLAIN " + plain("zoë", "pässwörd"))[0] == 235
    attempts = sink.sessions[0].auth_attempts
    assert [(a.username, a.success) for a in attempts] == [
        ("zoë", False),
        ("zoë", True),
    ]


@pytest.mark.parametrize(
    "separator",
    [b"\t", b"\x1f", "\u00a0".encode()],
    ids=["tab", "unit-separator", "no-break-space"],
)
def test_auth_secret_after_any_white_space_is_masked(
    smtpsink_factory: Factory, separator: bytes
) -> None:
    # aiosmtpd splits AUTH arguments with str.split(): every separator it
    # accepts must be one the masking splits on too.
    import base64

    sink = smtpsink_factory(auth={"ann": "secret"}, auth_plaintext=True)
    secret = base64.b64encode(b"\0ann\0secret")
    with socket.create_connection((sink.host, sink.port)) as client:
        reader = client.makefile("rb")
        reader.readline()
        client.sendall(b"EHLO x\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        client.sendall(b"AUTH PLAIN" + separator + secret + b"\r\n")
        assert reader.readline().startswith(b"235")
        reader.close()
    transcript = sink.sessions[0].format_transcript()
    assert "C: AUTH PLAIN ****" in transcript
    assert secret.decode() not in transcript


def test_a_sinks_own_failures_say_since_when_not_in_this_test() -> None:
    """Used without pytest, the sink is the mailbox of everything since it
    started: its failures said "in this test", where there may be no test."""
    with SMTPSink() as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail(
                "app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n"
            )
        sink.wait_for(count=1)
        with pytest.raises(AssertionError) as failure:
            sink.assert_sent(subject="Bye")
        text = str(failure.value)
        assert "Messages that arrived since the sink started (1):" in text, text
        assert "in this test" not in text
        with pytest.raises(AssertionError) as failure:
            sink.wait_until(lambda: False, timeout=0)
        text = str(failure.value)
        assert "Sessions since the sink started (1):" in text, text
        assert "Messages since the sink started (1):" in text
        # A view made by hand says since when (the plugin's say "in this test").
        with pytest.raises(AssertionError, match="arrived since this view was made"):
            sink.view().assert_sent(subject="Bye")


@pytest.mark.parametrize("service", ["pop3", "imap", "dns"])
def test_a_server_the_loop_was_too_busy_to_start_is_not_started_later(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start gave up on a busy loop with a bare TimeoutError, and the
    # server bound later all the same: serving on a port nothing knew of,
    # never closed by stop(), and the next use started a second one.
    from pytest_smtpsink import _listening

    monkeypatch.setattr(_listening, "START_TIMEOUT", 0.2)
    with SMTPSink() as sink:
        runtime = sink._runtime
        assert runtime is not None
        busy = threading.Event()
        runtime.loop.call_soon_threadsafe(busy.wait, 60)  # holds the loop
        try:
            with pytest.raises(
                SinkError,
                match=rf"could not start its {service.upper()} server: the sink's "
                r"event loop did not answer within 0.2 s \(busy",
            ):
                getattr(sink, service)
        finally:
            busy.set()
        assert service not in runtime.services
        monkeypatch.setattr(_listening, "START_TIMEOUT", 30)
        getattr(sink, service)  # the loop is free: it starts, once
        assert list(runtime.services) == [service]


@pytest.mark.parametrize("service", ["pop3", "imap", "dns"])
def test_a_server_asked_for_on_the_sinks_own_thread_is_refused_at_once(
    service: str, caplog: pytest.LogCaptureFixture
) -> None:
    # From an on_change listener, the start waited for the loop it ran on:
    # every connection of the sink held for 10 s, then "a busy loop" blamed.
    with SMTPSink() as sink:
        errors: list[BaseException] = []

        def listener() -> None:
            if not errors:
                try:
                    getattr(sink, service)
                except SinkError as error:
                    errors.append(error)

        sink.on_change(listener, lines=False)
        with smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
            client.noop()
        sink.wait_until(lambda: bool(errors))
    assert str(errors[0]) == (
        f"could not start its {service.upper()} server: it was asked for on the "
        "sink's own thread (an on_change listener), which cannot wait for the "
        "sink; use it once before, in the test"
    )


_OUT_OF_FILES = r"""
import logging, resource, sys, threading
from pytest_smtpsink import SMTPSink

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
reports = []
first = threading.Event()

class Keep(logging.Handler):
    def emit(self, record):
        # Not asyncio's debug-mode notes (a slow step, under dev mode).
        if "accept" in record.getMessage():
            reports.append(record.getMessage())
            first.set()

for name in ("pytest_smtpsink", "asyncio"):
    logging.getLogger(name).addHandler(Keep())
with SMTPSink(event_loop="asyncio") as sink:
    print(sink.port, flush=True)
    assert first.wait(60), "no report of the accept that found no file left"
    sys.stdin.readline()  # the test has read a greeting since
print(len(reports))
print(reports[0])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE as on Linux")
def test_running_out_of_file_descriptors_is_said_once_not_thousands_of_times(
    tmp_path: pytest.TempPathFactory,
) -> None:
    # Python 3.11's loop reported an accept with no file descriptor left
    # once per connection of the backlog, and tried again at once: 63,000
    # tracebacks (25 MB) in 4 s into the test's log. One line now, with
    # what to do; the sink serves the connections it has.
    import subprocess

    clients: list[socket.socket] = []
    with subprocess.Popen(
        [sys.executable, "-c", _OUT_OF_FILES],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            port = int(child.stdout.readline())
            for _ in range(100):  # more than the child's 64 files
                clients.append(socket.create_connection(("127.0.0.1", port), 30))
            # One the sink accepted: it still serves.
            assert clients[0].recv(1024).startswith(b"220 ")
            child.stdin.write("\n")
            child.stdin.flush()
            count, first = child.stdout.read().splitlines()
        finally:
            for client in clients:
                client.close()
            child.wait(60)
    assert child.returncode == 0
    assert int(count) == 1
    assert first.startswith(
        "the sink cannot accept connections: [Errno 24] Too many open files (no "
        "file descriptor left: raise the limit, ulimit -n, or close connections "
        "the test leaves open); it serves the ones it has and accepts again when "
        "it can"
    ), first
