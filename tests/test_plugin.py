"""The plugin as users meet it: fixtures, options, isolation, xdist."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import re
import smtplib
import socket

import pytest
from conftest import Factory, plugin_frames

from pytest_smtpsink import SMTPSink

pytest_plugins = ["pytester"]

SEND = """
import smtplib

def send(sink, subject):
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        f"Subject: {subject}\\r\\n\\r\\nbody\\r\\n")
"""


def test_fixtures_need_no_conftest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
def test_send(smtpsink, smtpsink_server):
    send(smtpsink, "hello")
    assert smtpsink.assert_sent(subject="hello").recipients == ("ann@example.com",)
    assert smtpsink.port == smtpsink_server.port
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_each_test_sees_only_its_own_mail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
PORTS = set()

def test_first(smtpsink):
    send(smtpsink, "first")
    PORTS.add(smtpsink.port)
    assert [m.subject for m in smtpsink.messages] == ["first"]

def test_second(smtpsink):
    assert len(smtpsink.messages) == 0
    assert smtpsink.sessions == ()
    send(smtpsink, "second")
    PORTS.add(smtpsink.port)
    assert [m.subject for m in smtpsink.messages] == ["second"]

def test_same_server_for_the_session():
    assert len(PORTS) == 1
"""
    )
    pytester.runpytest().assert_outcomes(passed=3)


def test_store_keeps_only_the_current_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
import pytest

@pytest.mark.parametrize("n", range(50))
def test_many(smtpsink, n):
    send(smtpsink, f"n{n}")

def test_last(smtpsink, smtpsink_server):
    send(smtpsink, "last")
    # Earlier tests' mail was discarded: memory stays flat over long runs.
    assert [m.subject for m in smtpsink_server.messages] == ["last"]
"""
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=51)


def test_a_connection_kept_open_across_tests_keeps_no_old_mail(
    pytester: pytest.Pytester,
) -> None:
    # Issue 13: a client that keeps one connection for the whole run (a
    # module-level smtplib.SMTP, a pooled Django backend) kept every message
    # it ever sent alive through its Session: +148 MiB over 1,500 tests.
    pytester.makepyfile(
        """
import gc, smtplib
import pytest
from pytest_smtpsink import Message

BIG = ("x" * 76 + "\\r\\n") * 1300  # 100 KB in legal lines
CLIENT = []

def send(smtpsink, subject):
    if not CLIENT:
        CLIENT.append(smtplib.SMTP(smtpsink.host, smtpsink.port))
    CLIENT[0].sendmail("app@example.com", ["ann@example.com"],
                       f"Subject: {subject}\\r\\n\\r\\n{BIG}\\r\\n")

@pytest.mark.parametrize("n", range(30))
def test_many(smtpsink, n):
    send(smtpsink, f"n{n}")
    # What a test reads of its own mail is all there.
    message = smtpsink.assert_sent(1, subject=f"n{n}")
    assert message.session.messages == (message,)

def teardown_module():  # also when a test failed: no unclosed socket later
    for client in CLIENT:
        client.close()

def test_last(smtpsink, smtpsink_server):
    send(smtpsink, "last")
    (message,) = smtpsink.messages
    session = message.session
    assert session.end is None  # the same connection, still open
    assert session.commands.count("MAIL") == 31
    assert [m.subject for m in session.messages] == ["last"]
    assert session.message_count == 31  # the earlier tests' too
    assert " messages=1 " in session.summary()  # as the test's reports count
    assert [m.subject for m in smtpsink_server.messages] == ["last"]
    assert smtpsink_server._store.stored_bytes == len(message.raw)
    gc.collect()
    # type(), not isinstance(): no lazy proxy of another test (Django's
    # settings) may be evaluated. Only this connection's: the outer run,
    # when in-process, holds messages of its own.
    alive = [
        o for o in gc.get_objects() if type(o) is Message and o.session is session
    ]
    assert alive == [message]
    CLIENT[0].quit()
"""
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=31)


def test_clear_empties_the_mailbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
def test_clear(smtpsink):
    send(smtpsink, "before")
    smtpsink.clear()
    assert len(smtpsink.messages) == 0
    send(smtpsink, "after")
    assert [m.subject for m in smtpsink.messages] == ["after"]
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_options_set_the_default_sink(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib

def test_settings(smtpsink):
    assert smtpsink.settings.hostname == "mx.options.test"
    assert smtpsink.settings.max_size == 2 * 1024 * 1024
    assert smtpsink.default_timeout == 2.5
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        code, text = client.ehlo()
    assert text.decode().splitlines()[0] == "mx.options.test"
    assert "SIZE 2097152" in text.decode()
"""
    )
    result = pytester.runpytest(
        "--smtpsink-hostname=mx.options.test",
        "--smtpsink-max-size=2MiB",
        "--smtpsink-timeout=2.5",
    )
    result.assert_outcomes(passed=1)


def test_ini_options_and_cli_precedence(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
[pytest]
smtpsink_hostname = from.ini.test
smtpsink_max_size = 1000
smtpsink_timeout = 7
"""
    )
    pytester.makepyfile(
        """
def test_settings(smtpsink):
    assert smtpsink.settings.hostname == "from.cli.test"
    assert smtpsink.settings.max_size == 1000
    assert smtpsink.default_timeout == 7
"""
    )
    pytester.runpytest("--smtpsink-hostname=from.cli.test").assert_outcomes(passed=1)


def test_fixed_port_option(pytester: pytest.Pytester) -> None:
    import socket

    # A port probed free may be taken (another test's server) before the
    # inner run binds it: then, and only then, the run is repeated on another.
    for _attempt in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # The same source every time: pytest 7's cache of rewritten test
        # files goes by mtime and size, so a retry within the second with a
        # new port written in would run the old one.
        pytester.makepyfile(
            """
def test_port(smtpsink, smtpsink_factory, pytestconfig):
    port = int(pytestconfig.getoption("--smtpsink-port"))
    assert smtpsink.port == port
    # Other sinks never take the default sink's fixed port.
    assert smtpsink_factory(hostname="other.test").port != port
"""
        )
        result = pytester.runpytest(f"--smtpsink-port={port}", "-p", "no:xdist")
        taken = f"cannot listen on 127.0.0.1:{port}: Address already in use"
        if taken not in result.stdout.str():
            break
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtpsink-port=http"], "--smtpsink-port: 'http' is not a whole number"),
        # int() reads full-width digits: those of 2525 were port 2525.
        (
            ["--smtpsink-port=\uff12\uff15\uff12\uff15"],
            "--smtpsink-port: '\uff12\uff15\uff12\uff15' is not a whole number",
        ),
        (["--smtpsink-timeout=\u0665"], "--smtpsink-timeout: '\u0665' is not a number"),
        # int() and float() also read these: port 1000, 10 s, a nanosecond.
        (["--smtpsink-port=1_000"], "--smtpsink-port: '1_000' is not a whole number"),
        (["--smtpsink-port=+25"], "--smtpsink-port: '+25' is not a whole number"),
        (["--smtpsink-timeout=1_0"], "--smtpsink-timeout: '1_0' is not a number"),
        (["--smtpsink-timeout=1e-9"], "--smtpsink-timeout: '1e-9' is not a number"),
        (
            ["--smtpsink-max-size=\u0665K"],
            "--smtpsink-max-size: '\u0665K' is not a size",
        ),
        (
            ["--smtpsink-port=99999"],
            "--smtpsink-port: must be an integer from 0 to 65535",
        ),
        (["--smtpsink-max-size=big"], "--smtpsink-max-size: 'big' is not a size"),
        (
            ["--smtpsink-timeout=-1"],
            "--smtpsink-timeout: must be a number of seconds > 0",
        ),
        (["--smtpsink-timeout=soon"], "--smtpsink-timeout: 'soon' is not a number"),
        (
            ["--smtpsink-timeout=inf"],
            "--smtpsink-timeout: 'inf' is not a number of seconds (a decimal "
            "number above 0, such as 10 or 0.5)",
        ),
        (
            ["--smtpsink-host=example.com"],
            "--smtpsink-host: 'example.com' is not an IP",
        ),
        (
            ["--smtpsink-host=0.0.0.0"],
            "--smtpsink-host: 0.0.0.0 is not a loopback address*",
        ),
        (
            ["--smtpsink-hostname=a b"],
            "--smtpsink-hostname: must be a domain name*",
        ),
    ],
)
def test_bad_option_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmtpsink_port = abc\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: smtpsink_port (ini): 'abc' is not a whole number"]
    )


def test_a_quoted_ini_value_says_ini_files_take_none(
    pytester: pytest.Pytester,
) -> None:
    # Copied from the docs' TOML into an ini file, the quotes stay in.
    pytester.makeini('[pytest]\nsmtpsink_hostname = "mail.test"\n')
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: smtpsink_hostname (ini): *'\"mail.test\"' (an ini file takes "
            "a value without quotes: remove them)"
        ]
    )
    # Not the value again: a relay URL holds a password.
    pytester.makeini(
        '[pytest]\nsmtpsink_relay = "smtp://ann:Sup3rSecret@127.0.0.1:2525"\n'
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "remove them" in result.stderr.str()
    assert "Sup3rSecret" not in result.stdout.str() + result.stderr.str()


def test_bad_value_given_with_o_is_named_so(pytester: pytest.Pytester) -> None:
    # It said "smtpsink_port (ini)", sending the reader to an ini file that
    # did not have the key.
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-o", "smtpsink_port=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: smtpsink_port (-o): 'abc' is not a whole number"]
    )


def test_non_loopback_bind_when_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_any(smtpsink):
    # Bound to every interface; clients are given an address to connect to.
    assert smtpsink.sink.bind_host == "0.0.0.0"
    assert smtpsink.host == "127.0.0.1"
"""
    )
    result = pytester.runpytest("--smtpsink-host=0.0.0.0", "--smtpsink-allow-remote")
    result.assert_outcomes(passed=1)


def test_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--smtpsink-hostname=hdr.test")
    result.stdout.fnmatch_lines(
        [
            "smtpsink: 127.0.0.1, a free port (per worker, started on first use), "
            "greeting hdr.test, max size 64 MiB"
        ]
    )


def test_sink_starts_only_when_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import threading

def test_no_sink():
    assert not [t for t in threading.enumerate() if t.name.startswith("smtpsink-")]
"""
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_marker_on_a_test_without_smtpsink_warns(pytester: pytest.Pytester) -> None:
    # It did nothing, silently: a test meant to meet a fault met none.
    pytester.makepyfile(
        """
import pytest

pytestmark = pytest.mark.smtpsink(hostname="module.test")  # covers many: no warning

@pytest.fixture
def app(smtpsink):
    return smtpsink

@pytest.mark.smtpsink_fault("fail", "MAIL", 451)
def test_factory_only(smtpsink_factory):
    smtpsink_factory()

@pytest.mark.smtpsink(hostname="m.test")
def test_server_only(smtpsink_server):
    pass

@pytest.mark.smtpsink_fault("fail", "MAIL", 451)
def test_through_a_fixture(app):
    pass

@pytest.fixture
def outbox(request):
    # Picked at run time: warned of although the markers applied.
    return request.getfixturevalue("smtpsink")

@pytest.mark.smtpsink(hostname="dynamic.test")
@pytest.mark.smtpsink_fault("fail", "RCPT", 550)
def test_through_getfixturevalue(outbox):
    assert outbox.settings.hostname == "dynamic.test"
    assert len(outbox.faults) == 1

@pytest.mark.smtpsink(hostname="skipped.test")
def test_skipped_before_it_asked(request):
    # It may have asked for smtpsink later: no warning.
    pytest.skip("not today")

def test_unmarked(smtpsink_factory):
    pass
"""
    )
    expected = [
        "*PytestWarning: @pytest.mark.smtpsink_fault does nothing here: it "
        "configures the smtpsink fixture, which test_factory_only does not use. "
        "Request smtpsink, or use box.fail(...), box.hang(...) and the like on "
        "the sink the test uses.",
        "*PytestWarning: @pytest.mark.smtpsink does nothing here: *test_server_only*"
        "smtpsink_factory(**settings)*",
    ]
    quiet = ("-p", "no:xdist", "-p", "no:cacheprovider")
    result = pytester.runpytest(*quiet, "-W", "always::pytest.PytestWarning")
    result.assert_outcomes(passed=5, skipped=1, warnings=2)
    result.stdout.fnmatch_lines(expected)
    # Under -W error, the test errors at its end (not the run, internally),
    # once it is known that it did not ask for smtpsink at run time.
    result = pytester.runpytest(*quiet, "-W", "error")
    result.assert_outcomes(passed=5, skipped=1, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_factory_only*"])


def test_a_marker_on_a_test_whose_smtpsink_is_a_conftests_own_warns(
    pytester: pytest.Pytester,
) -> None:
    # A conftest's smtpsink that does not ask for the plugin's replaces it:
    # the test asks for "smtpsink", and the marker did nothing, silently.
    replaced = pytester.mkpydir("replaced")
    (replaced / "conftest.py").write_text(
        """
import pytest

@pytest.fixture
def smtpsink(smtpsink_factory):
    return smtpsink_factory(hostname="override.test")
"""
    )
    (replaced / "test_replaced.py").write_text(
        """
import pytest

@pytest.mark.smtpsink_fault("fail", "MAIL", 451)
def test_replaced(smtpsink):
    assert smtpsink.settings.hostname == "override.test"
"""
    )
    pytester.makepyfile(
        test_wrapped="""
import pytest

@pytest.fixture
def smtpsink(smtpsink):  # wraps the plugin's: the marker applies
    return smtpsink

@pytest.mark.smtpsink(hostname="marked.test")
def test_wrapped(smtpsink):
    assert smtpsink.settings.hostname == "marked.test"
"""
    )
    quiet = ("-p", "no:xdist", "-p", "no:cacheprovider")
    result = pytester.runpytest(*quiet, "-W", "always::pytest.PytestWarning")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*PytestWarning: @pytest.mark.smtpsink_fault does nothing here: it "
            "configures the plugin's smtpsink fixture, and the smtpsink that "
            "test_replaced uses is another (a conftest's fixture of that name that "
            "does not ask for the plugin's). Ask for it in that fixture (def "
            "smtpsink(smtpsink): ...), or use box.fail(...), box.hang(...) and the "
            "like there."
        ]
    )


def test_a_lint_marker_on_a_test_without_a_sink_warns(
    pytester: pytest.Pytester,
) -> None:
    # It linted nothing, silently: the test passed its lint gate unchecked.
    pytester.makepyfile(
        """
import pytest

pytestmark = pytest.mark.smtpsink_lint("warning")  # covers many: no warning

@pytest.mark.smtpsink_lint("info")
def test_server_only(smtpsink_server):
    pass

@pytest.mark.smtpsink_lint("info")
def test_factory(smtpsink_factory):
    smtpsink_factory()

@pytest.mark.smtpsink_lint("info")
def test_fixture(smtpsink):
    pass

def test_unmarked():
    pass
"""
    )
    quiet = ("-p", "no:xdist", "-p", "no:cacheprovider")
    result = pytester.runpytest(*quiet, "-W", "always::pytest.PytestWarning")
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*PytestWarning: @pytest.mark.smtpsink_lint does nothing here: it lints "
            "the mail of the smtpsink and smtpsink_factory fixtures, and "
            "test_server_only uses neither. Request one, or call assert_clean() on "
            "the mailbox the test uses."
        ]
    )


def test_marker_selects_a_sink_with_other_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest

@pytest.mark.smtpsink(hostname="marked.test", max_recipients=2)
def test_marked(smtpsink, smtpsink_server):
    assert smtpsink.settings.hostname == "marked.test"
    assert smtpsink.port != smtpsink_server.port

@pytest.mark.smtpsink(hostname="marked.test", max_recipients=2)
class TestShared:
    def test_reuses(self, smtpsink):
        assert smtpsink.settings.max_recipients == 2

@pytest.mark.smtpsink(colour="red")
def test_unknown(smtpsink):
    pass

@pytest.mark.smtpsink(max_sise="1MB")
def test_a_slip(smtpsink):
    pass

@pytest.mark.smtpsink("starttls")
def test_positional(smtpsink):
    pass

@pytest.mark.smtpsink(max_size=-5)
def test_bad_value(smtpsink):
    pass

@pytest.mark.smtpsink(max_size="10K")
def test_size_with_a_unit(smtpsink, smtpsink_factory):
    assert smtpsink.settings.max_size == 10 * 1024
    assert smtpsink_factory(max_size="2MB").settings.max_size == 2_000_000

@pytest.mark.smtpsink(max_size="lots")
def test_bad_size(smtpsink):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=3, errors=5)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.smtpsink: unknown sink setting(s) 'colour'; valid settings are:*",
            "*@pytest.mark.smtpsink: unknown sink setting(s) 'max_sise' (did you "
            "mean max_size?); valid settings are:*",
            "*@pytest.mark.smtpsink takes keyword settings only, got 'starttls' "
            '(e.g. @pytest.mark.smtpsink(tls="starttls"))*',
            "*@pytest.mark.smtpsink: max_size: must be a number of bytes >= 0*",
            "*@pytest.mark.smtpsink: max_size: 'lots' is not a size (e.g. 1048576, 25MB,*",
        ]
    )
    # One sentence per error, not the SettingsError "during handling of" it.
    result.stdout.no_fnmatch_line("*During handling*")


def test_a_taken_factory_port_under_xdist_names_the_workers(
    pytester: pytest.Pytester,
) -> None:
    # smtpsink_factory(port=N) under -n 2: "Address already in use" alone,
    # where --smtpsink-port says that each worker starts its own sink.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pytester.makepyfile(
            f"""
def test_port(smtpsink_factory):
    smtpsink_factory(port={port})
"""
        )
        result = pytester.runpytest("-n", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*could not start a sink: cannot listen on 127.0.0.1:{port}: * (each "
            "xdist worker starts its own sinks, and another may hold this port: "
            "leave port= out for a free one)"
        ]
    )


def test_a_port_the_sessions_own_sink_holds_is_said_to_be_its(
    pytester: pytest.Pytester,
) -> None:
    # Two sinks of other settings asked for one port= : "Address already in
    # use" alone, and the user looked for another process.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pytester.makepyfile(
        f"""
def test_one(smtpsink_factory):
    smtpsink_factory(port={port}, hostname="one.test")

def test_two(smtpsink_factory):
    smtpsink_factory(port={port}, hostname="two.test")

def test_default(smtpsink, smtpsink_factory):
    smtpsink_factory(port=smtpsink.port, hostname="three.test")

def test_elsewhere(smtpsink_factory):
    # Not this port's holder: an address this machine does not have.
    smtpsink_factory(port={port}, host="192.0.2.1", allow_remote=True)
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            f"*could not start a sink: cannot listen on 127.0.0.1:{port}: * (this "
            "session's sink with other settings holds it, *hostname='one.test'*, "
            "for the rest of the run: give these settings another port, or leave "
            "port= out for a free one)",
            "*(this session's sink with other settings holds it, the default "
            "settings, for the rest of the run: *",
            f"*could not start a sink: cannot listen on 192.0.2.1:{port}: *",
        ]
    )
    assert str(result.stdout).count("this session's sink") == 2


def test_a_taken_port_fails_the_test_with_one_sentence(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
def test_port(smtpsink):
    pass
"""
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pytester.runpytest(f"--smtpsink-port={port}", "-p", "no:xdist")
        with_xdist = pytester.runpytest(f"--smtpsink-port={port}", "-n", "1")
        pytester.makeini(f"[pytest]\nsmtpsink_port = {port}\n")
        from_ini = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-smtpsink could not start a sink: cannot listen on "
            f"127.0.0.1:{port}: * (the port of --smtpsink-port)"
        ]
    )
    result.stdout.no_fnmatch_line("*During handling*")
    result.stdout.no_fnmatch_line("*direct cause*")
    # Under xdist, where a fixed port is the usual cause, it says so.
    with_xdist.assert_outcomes(errors=1)
    with_xdist.stdout.fnmatch_lines(
        [
            "*(the port of --smtpsink-port; each xdist worker needs a port of its"
            " own: use 0)"
        ]
    )
    # Named as the user gave it.
    from_ini.stdout.fnmatch_lines(["*(the port of smtpsink_port (ini))"])


def test_a_fixed_port_with_several_xdist_workers_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_port(smtpsink):\n    pass\n")
    result = pytester.runpytest("--smtpsink-port=2599", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --smtpsink-port: port 2599 cannot serve 2 xdist workers, which "
            "each start their own sink: use 0 (a free port per worker), or -n 1"
        ]
    )
    # A fixed port is named as such in the header.
    header = pytester.runpytest("--smtpsink-port=2599", "-p", "no:xdist", "--co")
    header.stdout.fnmatch_lines(
        ["smtpsink: 127.0.0.1, port 2599 (started on first use), *"]
    )


def test_factory_reuses_one_server_per_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
PORTS = []

def test_a(smtpsink_factory):
    sink = smtpsink_factory(hostname="f.test")
    send(sink, "a")
    PORTS.append(sink.port)
    assert [m.subject for m in sink.messages] == ["a"]

def test_b(smtpsink_factory, smtpsink):
    sink = smtpsink_factory(hostname="f.test")
    assert len(sink.messages) == 0
    PORTS.append(sink.port)
    assert PORTS[0] == PORTS[1] != smtpsink.port
    other = smtpsink_factory(hostname="g.test")
    assert other.port not in PORTS
"""
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=2)


def test_a_bad_factory_setting_points_at_the_call(pytester: pytest.Pytester) -> None:
    # The failure showed the message alone: a test that makes several sinks
    # could not tell which call it was.
    pytester.makepyfile(
        """
def test_two_sinks(smtpsink_factory):
    smtpsink_factory(hostname="a.test")
    smtpsink_factory(tls="implict")
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>       smtpsink_factory(tls="implict")',
            "E       Failed: smtpsink_factory(): tls: *implict*",
        ]
    )
    assert plugin_frames(result.stdout.str()) == []


XDIST_SUITE = (
    SEND
    + """
import os
import pytest

@pytest.mark.parametrize("n", range(20))
def test_isolated(smtpsink, n):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    send(smtpsink, f"{worker}-{n}")
    assert [m.subject for m in smtpsink.messages] == [f"{worker}-{n}"]
    print(f"PORT {worker} {smtpsink.port}")
"""
)


def test_xdist_gives_each_worker_its_own_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_SUITE)
    result = pytester.runpytest_subprocess("-n", "2", "-rP")
    result.assert_outcomes(passed=20)
    ports = {
        tuple(line.split()[1:3])
        for line in result.stdout.lines
        if line.startswith("PORT gw")
    }
    workers = {worker for worker, _ in ports}
    assert workers == {"gw0", "gw1"}
    assert len({port for _, port in ports}) == 2, ports


def test_runs_with_xdist_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_SUITE)
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=20)


FAILING = (
    SEND
    + """
def test_fails(smtpsink):
    send(smtpsink, "Your receipt")
    smtpsink.assert_sent(subject="Welcome")

def test_passes(smtpsink):
    send(smtpsink, "fine")
"""
)


def test_failed_test_report_shows_captured_email(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- Captured email call -*",
            "smtp://127.0.0.1:* (default settings): 1 message, 1 session",
            "  #* app@example.com -> ann@example.com | To: - | Subject: 'Your receipt' | 31 bytes",
            "  session 1: 127.0.0.1:* ehlo='*' tls=no auth=None messages=1 end=quit",
            "    S: 220 smtpsink.test pytest-smtpsink",
            "    C: ehlo *",
            "*",
            "    C: <message content: 31 bytes>",
            "    S: 250 2.0.0 OK: queued as #*",
            "    C: QUIT",
            "    S: 221 Bye",
        ]
    )
    # Passing tests show nothing.
    assert "'fine'" not in result.stdout.str()


def test_report_summary_mode_has_no_transcript(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=summary")
    result.stdout.fnmatch_lines(["*Captured email call*", "  session 1: *"])
    assert "S: 221 Bye" not in result.stdout.str()


def test_a_fault_of_smtpsink_server_lasts_and_failures_name_it(
    pytester: pytest.Pytester,
) -> None:
    # A rule added through smtpsink_server acted on a test's mail while the
    # test's own faults showed nothing: the failure had no visible cause.
    # A session fixture's rule is meant to last, for every test.
    pytester.makepyfile(
        """
import smtplib
import pytest

@pytest.fixture(scope="session")
def greylisting(smtpsink_server):
    rule = smtpsink_server.fail("RCPT", 451)
    yield rule
    rule.remove()

def send(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        try:
            client.sendmail("a@example.com", ["b@example.com"], "Subject: x\\r\\n\\r\\n")
        except smtplib.SMTPRecipientsRefused:
            pass

def test_first(greylisting, smtpsink):
    send(smtpsink)
    assert greylisting.fired == 1

def test_second(greylisting, smtpsink):
    send(smtpsink)
    assert smtpsink.faults == ()
    smtpsink.assert_sent(subject="x")
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * Hint: 1 fault rule that this mailbox did not add is in force on "
            "this sink (smtpsink_server's, or another mailbox's): "
            "<Fault RCPT reply 451 fired=2/2>"
        ]
    )


def test_a_connection_kept_open_that_was_refused_is_in_the_report(
    pytester: pytest.Pytester,
) -> None:
    # The pooled connection was shown only when it delivered: a refused
    # send on it left no session in the report, and the hint said no
    # client connected, sending the reader after the host and port.
    pytester.makepyfile(
        """
import smtplib

CLIENT = []

def send(smtpsink, to):
    if not CLIENT:
        CLIENT.append(smtplib.SMTP(smtpsink.host, smtpsink.port))
    try:
        CLIENT[0].sendmail("app@example.com", [to], "Subject: hi\\r\\n\\r\\nhi\\r\\n")
    except smtplib.SMTPRecipientsRefused:
        pass  # the application logs it and goes on

def test_opens(smtpsink):
    send(smtpsink, "ann@example.com")

def test_refused_on_it(smtpsink):
    smtpsink.fail("RCPT", 550, match="bob@example.com")
    send(smtpsink, "bob@example.com")
    smtpsink.assert_sent(to="bob@example.com")

def test_quiet_on_it(smtpsink):
    smtpsink.assert_sent(to="carl@example.com")

def teardown_module():
    CLIENT[0].quit()
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=summary")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*Hint: 1 SMTP session sent commands in this test but delivered no "
            "message (1 connection opened before and kept open); how far each got:",
            "*550*",
            "*- Captured email call -*",
            "smtp://127.0.0.1:* (default settings): 0 messages, 1 session",
            "  session 1: 127.0.0.1:* messages=0 end=open",
        ]
    )
    # A connection that said nothing in a test is not this test's.
    quiet = result.stdout.str().partition("    def test_quiet_on_it(")[2]
    assert "Hint: no client connected to" in quiet


#: A test module's start: a fixture ``name`` that sends one message with
#: ``subject`` to the default sink, in the test's set-up.
_SENDING_FIXTURE = """
import smtplib
import pytest

@pytest.fixture
def {name}(smtpsink_server):
    with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        "Subject: {subject}\\r\\n\\r\\nhi\\r\\n")
"""


def test_mail_a_fixture_sent_before_smtpsink_was_set_up_is_named(
    pytester: pytest.Pytester,
) -> None:
    # The fixture that sends was set up first (the test's argument order),
    # so its mail came before the mailbox: the hint said no client had
    # connected and asked whether the app had the host and port.
    pytester.makepyfile(
        _SENDING_FIXTURE.format(name="seeded", subject="seed")
        + """
def test_wrong_order(seeded, smtpsink):
    smtpsink.assert_sent(subject="seed")

def test_right_order(smtpsink, seeded):
    smtpsink.assert_sent(subject="seed")

def test_none_in_this_one(smtpsink):
    smtpsink.assert_sent(subject="seed")
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "E       Hint: 1 message arrived during this test's set-up, before this "
            "mailbox was made (it shows only what arrives after): a fixture set "
            "up before smtpsink sent it, or a sender still running from an "
            "earlier test. For a fixture, request smtpsink first (def "
            "test(smtpsink, sending_fixture)), or request it in that fixture; "
            "one of wider scope (session, module, class) is set up first "
            "whatever the order and cannot request it: check its mail in that "
            "fixture, with smtpsink_server.view() taken before it sends:",
            "E         #1 *app@example.com -> ann@example.com | To: - | "
            "Subject: 'seed' | * bytes",
        ]
    )
    # The previous test's mail is not this one's set-up's.
    last = result.stdout.str().partition("_ test_none_in_this_one _")[2]
    assert "Hint: no client connected to" in last, last
    assert "set-up" not in last


def test_mail_the_test_sent_before_making_its_mailbox_is_named_as_its_own(
    pytester: pytest.Pytester,
) -> None:
    # A mailbox made in the test's body, after the send: the hint blamed
    # "a fixture set up before smtpsink", which there was none of. Mail a
    # fixture did send in the set-up keeps that hint.
    pytester.makepyfile(
        """
import smtplib
import pytest

def send(sink, subject):
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        f"Subject: {subject}\\r\\n\\r\\nhi\\r\\n")

@pytest.fixture
def welcome(smtpsink_server):
    send(smtpsink_server, "welcome")

def test_lazy_fixture(smtpsink_server, request):
    send(smtpsink_server, "early")
    request.getfixturevalue("smtpsink").assert_sent(subject="late")

def test_factory(smtpsink_server, smtpsink_factory):
    send(smtpsink_server, "early")
    smtpsink_factory().assert_sent(subject="late")

def test_both(welcome, smtpsink_server, request):
    send(smtpsink_server, "early")
    request.getfixturevalue("smtpsink").assert_sent(subject="late")
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(failed=3)
    in_body = (
        "E       Hint: 1 message arrived in this test's body before this mailbox "
        "was made there (it shows only what arrives after): make the mailbox "
        "before the code that sends (request smtpsink as an argument, or call "
        "smtpsink_factory() first):"
    )
    in_set_up = "E       Hint: 1 message arrived during this test's set-up, *"
    result.stdout.fnmatch_lines(
        [
            "E       No messages arrived since this mailbox was made.",
            in_body,
            "E         #1 *Subject: 'early'*",
        ]
    )
    result.stdout.fnmatch_lines([in_body, "E         #2 *Subject: 'early'*"])
    result.stdout.fnmatch_lines(
        [
            in_set_up,
            "E         #3 *Subject: 'welcome'*",
            in_body,
            "E         #4 *Subject: 'early'*",
        ]
    )
    first_two = result.stdout.str().partition("_ test_both _")[0]
    assert "set-up" not in first_two


def test_a_second_mailbox_of_the_sink_points_at_the_first_for_earlier_mail(
    pytester: pytest.Pytester,
) -> None:
    # A second mailbox of the same sink, made after the send: the report
    # said "No messages arrived in this test" and "no client connected",
    # when the client had, and the test's first mailbox had its message.
    pytester.makepyfile(
        """
import smtplib

def test_second_mailbox(smtpsink, smtpsink_factory):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        "Subject: early\\r\\n\\r\\nhi\\r\\n")
    again = smtpsink_factory()
    assert again.sink is smtpsink.sink
    again.assert_sent(subject="early")

def test_both_made_after(smtpsink_server, smtpsink_factory):
    with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        "Subject: early\\r\\n\\r\\nhi\\r\\n")
    first = smtpsink_factory()
    second = smtpsink_factory()
    second.assert_sent(subject="early")
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(failed=2)
    # Both made after the send: the first one's making dropped that mail,
    # and the second said "no client connected".
    last = result.stdout.str().partition("_ test_both_made_after _")[2]
    assert "make the mailbox before the code that sends" in last, last
    assert "earlier mailbox" not in last
    result.stdout.fnmatch_lines(
        [
            "E       No messages arrived since this mailbox was made.",
            "E       Hint: 1 message arrived in this test's body before this "
            "mailbox was made there (it shows only what arrives after): the "
            "test's earlier mailbox of this sink has it: assert on that one, "
            "or make this one before the code that sends:",
            "E         #1 *Subject: 'early'*",
        ]
    )
    assert "no client connected" not in result.stdout.str()


#: A conftest that runs each test twice, as pytest-rerunfailures would:
#: a first, unlogged run, then pytest's own.
_RUN_TWICE = """
import pytest
from _pytest.runner import runtestprotocol

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    runtestprotocol(item, nextitem=nextitem, log=False)  # the first try
    return None  # and pytest's own run, logged
"""


def test_a_test_run_again_tells_its_set_up_mail_afresh(
    pytester: pytest.Pytester,
) -> None:
    # A plugin that reruns a failed test (pytest-rerunfailures) sets it up
    # again: the first run's mailboxes were still the test's, so the second
    # run's fixture mail went unnoticed ("No messages arrived", no hint).
    pytester.makeconftest(_RUN_TWICE)
    pytester.makepyfile(
        _SENDING_FIXTURE.format(name="welcome", subject="welcome")
        + """
def test_it(welcome, request):
    request.getfixturevalue("smtpsink").assert_sent(subject="late")
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E       Hint: 1 message arrived during this test's set-up, *"]
    )
    assert "arrived in this test's body" not in result.stdout.str()


def test_a_test_that_passes_when_run_again_is_saved_as_passed(
    pytester: pytest.Pytester,
) -> None:
    # The rerun got mailboxes of its own but kept the first run's failure:
    # --smtpsink-save=all saved it as failed, with the passing run's mail.
    pytester.makeconftest(_RUN_TWICE)
    pytester.makepyfile(
        """
import smtplib

RUNS = []

def test_flaky(smtpsink):
    RUNS.append(1)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"],
                        f"Subject: run {len(RUNS)}\\r\\n\\r\\nhi\\r\\n")
    assert len(RUNS) > 1, "the first run fails"
"""
    )
    saved = pytester.path / "saved"
    result = pytester.runpytest(
        "-p",
        "no:xdist",
        "--smtpsink-report=off",
        f"--smtpsink-save-dir={saved}",
        "--smtpsink-save=all",
    )
    result.assert_outcomes(passed=1)
    # Each run keeps its own mail: the first's failure, the second's pass.
    records = [
        json.loads((saved / name / "smtpsink.json").read_text())
        for name in (
            "test_a_test_that_passes_when_run_again_is_saved_as_passed.py__test_flaky",
            "test_a_test_that_passes_when_run_again_is_saved_as_passed.py__test_flaky"
            "+attempt2",
        )
    ]
    assert [
        (r["outcome"], r["attempt"], r["messages"][0]["subject"]) for r in records
    ] == [("failed", 1, "run 1"), ("passed", 2, "run 2")]
    assert records[1].get("reason") is None


#: pytest-rerunfailures before 16.0 (the oldest env's 14.0) logs only the
#: failed report of a run it reruns, not its teardown's.
_RERUNFAILURES_BEFORE_16 = (
    int(importlib.metadata.version("pytest-rerunfailures").split(".")[0]) < 16
)

#: A test that fails in its first two runs, and passes in the third.
_FLAKY = (
    SEND
    + """
import os

RUNS = []

def test_flaky(smtpsink):
    RUNS.append(1)
    send(smtpsink, f"run {len(RUNS)}")
    assert len(RUNS) > int(os.environ.get("FAILING_RUNS", "2")), "flaky"
"""
)


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_failed_runs_of_a_test_rerun_keep_their_mail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: list[str]
) -> None:
    # With pytest-rerunfailures, a test that passed when run again removed
    # the directory its failed run had saved: the mail of a flaky test's
    # failures, which is what a CI artifact is for, was lost.
    pytester.makepyfile(test_x=_FLAKY)
    out = pytester.path / "mail"
    first = out / "test_x.py__test_flaky"
    # An earlier run's third run: this run's first forgets it.
    (out / "test_x.py__test_flaky+attempt3").mkdir(parents=True)
    (out / "test_x.py__test_flaky+attempt3/0001-old.eml").write_bytes(b"old")
    run = [*xdist, "--reruns", "2", f"--smtpsink-save-dir={out}"]
    result = pytester.runpytest(*run)
    assert result.parseoutcomes() == {"passed": 1, "rerun": 2}
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.eml"))
    assert saved == [
        "test_x.py__test_flaky+attempt2/0001-run-2.eml",
        "test_x.py__test_flaky/0001-run-1.eml",
    ]
    index = (out / "index.html").read_text(encoding="utf-8")
    # Each run's section has an id of its own, the last one's (it saved no
    # directory) its first run's with a number after.
    ids = re.findall(r'<section class="test \w+" id="([^"]+)">', index)
    assert ids == [
        "test_x.py__test_flaky",
        "test_x.py__test_flaky+attempt2",
        "test_x.py__test_flaky-2",
    ]
    index = re.sub(r' id="[^"]+"', "", index)
    assert "1 test(s) in 3 attempts, 2 message(s)" in index
    for attempt in (1, 2):
        assert (
            '<section class="test rerun"><h2><span class="outcome">rerun</span> '
            f'test_x.py::test_flaky <span class="attempt">(attempt {attempt})</span>'
        ) in index
    # The passing run saved nothing, and is listed so: the page says how the
    # test ended.
    assert (
        '<section class="test passed"><h2><span class="outcome">passed</span> '
        'test_x.py::test_flaky <span class="attempt">(attempt 3)</span></h2>'
        '<p class="note">Its mail was not saved: --smtpsink-save=all saves '
        "passing runs too.</p>"
    ) in index
    # Its line in the contents too: "(0 message(s))" read as "sent none".
    assert re.search(r"\(attempt 3\)</span></a> \(mail not saved\)</li>", index)
    assert index.count("<section") == 3
    # A later run that passes at once leaves none of them.
    monkeypatch.setenv("FAILING_RUNS", "0")
    pytester.runpytest(*run).assert_outcomes(passed=1)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert not first.exists()


def _crashy(ending: str) -> str:
    """A test module whose test sends "run N" in its Nth run (counted in a
    file: xdist workers that crash lose their memory), then runs ``ending``
    (which may crash the worker with os._exit)."""
    return (
        SEND
        + """
import os, pathlib

COUNT = pathlib.Path(__file__).with_name("count")

def test_crashy(smtpsink):
    run = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
    COUNT.write_text(str(run))
    send(smtpsink, f"run {run}")
    """
        + ending
        + "\n"
    )


def test_the_marker_help_names_every_setting(pytester: pytest.Pytester) -> None:
    # It named eleven of them: idle_timeout, relay= and others were missing.
    import dataclasses

    from pytest_smtpsink import SinkSettings

    result = pytester.runpytest("--markers")
    (line,) = [x for x in result.outlines if x.startswith("@pytest.mark.smtpsink(")]
    for field in dataclasses.fields(SinkSettings):
        assert f" {field.name}=" in line or f"({field.name}=" in line, field.name
    # The lint marker's severity defaults to the run's level, not 'error'
    # (a marker that only ignored a code once set 'error'; its help still did).
    (line,) = [
        x for x in result.outlines if x.startswith("@pytest.mark.smtpsink_lint(")
    ]
    assert line.startswith("@pytest.mark.smtpsink_lint(severity=None, *, ignore=()):")
    assert "by default the run's --smtpsink-lint level, else 'error'" in line


def test_runs_are_listed_by_number() -> None:
    from pytest_smtpsink.plugin import _run_labels

    runs = [("t", 10), ("t", 2), ("t", 1), ("s", 3), ("t [gw0]", 1)]
    labels = _run_labels(runs)
    assert [labels[run] for run in sorted(runs)] == [
        "s (attempt 3)",
        "t (attempt 1)",
        "t (attempt 2)",
        "t (attempt 10)",
        "t [gw0]",
    ]


def test_a_stray_directory_in_the_save_directory_is_no_run(
    tmp_path: pathlib.Path,
) -> None:
    # "+attempt²" passed isdigit(), and int() then raised in saved_runs.
    from pytest_smtpsink import _report

    for name in ("t+attempt\u00b2", "t+attempt3", "t@gw0", "t"):
        (tmp_path / name).mkdir()
    runs = _report.saved_runs(tmp_path)
    assert sorted(p.name for p in runs["t"]) == ["t", "t+attempt3", "t@gw0"]
    assert _report.split_attempt("t+attempt\u00b2") == ("t+attempt\u00b2", 1)


def test_a_rerun_on_another_worker_keeps_the_failed_runs_mail(
    pytester: pytest.Pytester,
) -> None:
    # Run 2 crashes its xdist worker: pytest-rerunfailures runs the test a
    # third time on another worker, which counted it as a first run, so its
    # passing run removed run 1's directory, still listed in index.html.
    pytester.makepyfile(test_x=_crashy("if run == 2: os._exit(3)\n    assert run == 3"))
    out = pytester.path / "mail"
    result = pytester.runpytest(
        "-n", "2", "--reruns", "2", f"--smtpsink-save-dir={out}"
    )
    assert result.parseoutcomes() == {"passed": 1, "rerun": 2}
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.eml"))
    assert saved == ["test_x.py__test_crashy/0001-run-1.eml"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "unreadable record" not in index
    assert (
        '<span class="outcome">rerun</span> test_x.py::test_crashy '
        '<span class="attempt">(attempt 1)</span>'
    ) in index


def test_a_crash_after_a_saved_run_is_recorded_apart(pytester: pytest.Pytester) -> None:
    # Run 1 crashes, run 2 fails with mail, runs 3 and 4 crash: the record
    # of the last crash was written over run 2's ("No mail was captured"
    # beside its .eml, its reason lost), and the crashes before were not
    # listed at all.
    pytester.makepyfile(
        test_x=_crashy("if run != 2: os._exit(3)\n    assert False, 'run 2 fails'")
    )
    out = pytester.path / "mail"
    result = pytester.runpytest(
        "-n", "2", "--reruns", "2", f"--smtpsink-save-dir={out}"
    )
    assert result.parseoutcomes()["failed"] == 1
    records = {
        record.parent.name: json.loads(record.read_text())
        for record in out.glob("*/smtpsink.json")
    }
    failed_run = [r for r in records.values() if r["messages"]]
    assert len(failed_run) == 1
    assert "run 2 fails" in failed_run[0]["reason"]
    assert [m["subject"] for m in failed_run[0]["messages"]] == ["run 2"]
    crashes = sorted(
        r["attempt"] for r in records.values() if "crashed" in (r["reason"] or "")
    )
    assert len(crashes) == len(records) - 1 >= 2  # each crash listed, apart
    assert len(set(crashes)) == len(crashes)


def test_a_dist_each_run_forgets_a_plain_runs_files_and_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under --dist each a test's directories carry the worker's id: only
    # names of the run's own kind were forgotten, and the other kind's
    # directories of the same test stayed in the artifact.
    pytester.makepyfile(
        test_x=SEND
        + """
import os

def test_it(smtpsink):
    send(smtpsink, "hello")
    assert os.environ["OUTCOME"] == "pass"
"""
    )
    out = pytester.path / "mail"
    save = f"--smtpsink-save-dir={out}"
    monkeypatch.setenv("OUTCOME", "fail")
    pytester.runpytest("-p", "no:xdist", save).assert_outcomes(failed=1)
    monkeypatch.setenv("OUTCOME", "pass")
    pytester.runpytest("-n", "2", "--dist", "each", save).assert_outcomes(passed=2)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    monkeypatch.setenv("OUTCOME", "fail")
    pytester.runpytest("-n", "2", "--dist", "each", save).assert_outcomes(failed=2)
    monkeypatch.setenv("OUTCOME", "pass")
    pytester.runpytest("-p", "no:xdist", save).assert_outcomes(passed=1)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_a_first_run_that_fails_before_the_sink_forgets_earlier_runs_files(
    pytester: pytest.Pytester,
) -> None:
    # A flaky fixture set up before smtpsink failed the first run: only a
    # first run that reached the sink forgot an earlier run's files, and the
    # passing rerun left them in the artifact, as this run's.
    pytester.makepyfile(
        test_x=SEND
        + """
import pytest

RUNS = []

@pytest.fixture
def database():
    RUNS.append(1)
    if len(RUNS) == 1:
        raise RuntimeError("not ready")

def test_flaky(database, smtpsink):
    send(smtpsink, "hello")
"""
    )
    out = pytester.path / "mail"
    for earlier in ("test_x.py__test_flaky", "test_x.py__test_flaky+attempt3"):
        (out / earlier).mkdir(parents=True)
        (out / earlier / "0001-old.eml").write_bytes(b"old")
    result = pytester.runpytest(
        "-p", "no:xdist", "--reruns", "2", f"--smtpsink-save-dir={out}"
    )
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    assert list(out.iterdir()) == []


def test_report_shows_the_connection_kept_open_that_delivered_the_mail(
    pytester: pytest.Pytester,
) -> None:
    # A connection opened in an earlier test (a module-level smtplib.SMTP, a
    # pooled mail backend) delivered this test's mail: the report said
    # "1 message, 0 sessions" and showed no transcript, nor saved one.
    pytester.makepyfile(
        """
import smtplib

CLIENT = []

def send(smtpsink, subject):
    if not CLIENT:
        CLIENT.append(smtplib.SMTP(smtpsink.host, smtpsink.port))
    CLIENT[0].sendmail("app@example.com", ["ann@example.com"],
                       f"Subject: {subject}\\r\\n\\r\\nhi\\r\\n")

def test_opens(smtpsink):
    send(smtpsink, "first")

def test_reuses(smtpsink):
    send(smtpsink, "second")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as other:
        other.noop()
    assert len(smtpsink.sessions) == 1  # opened in this test: the other one
    assert False

def teardown_module():
    CLIENT[0].quit()
"""
    )
    result = pytester.runpytest(
        "-p", "no:xdist", "--smtpsink-save-dir=mail", "--smtpsink-report=summary"
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- Captured email call -*",
            "smtp://127.0.0.1:* (default settings): 1 message, 2 sessions",
            "  #2 * app@example.com -> ann@example.com | To: - | Subject: 'second' *",
            "  session 1: 127.0.0.1:* messages=1 end=open",
            "  session 2: 127.0.0.1:* messages=0 end=quit",
        ]
    )
    saved = (
        pytester.path
        / "mail"
        / "test_report_shows_the_connection_kept_open_that_delivered_the_mail.py__test_reuses"
    )
    transcript = (saved / "session-0001.txt").read_text()
    assert "queued as #2" in transcript, transcript
    assert (saved / "session-0002.txt").exists()


def test_report_section_is_capped_saying_what_it_left_out(
    pytester: pytest.Pytester,
) -> None:
    # Issue 13: 300 sessions printed 5,727 lines.
    from pytest_smtpsink._report import MAX_SECTION_LINES

    pytester.makepyfile(
        SEND
        + """
import smtplib

def test_many(smtpsink):
    send(smtpsink, "first")
    for _ in range(99):
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.noop()
    assert False
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Captured email call" in line)
    end = next(
        i for i in range(start + 1, len(lines)) if lines[i].startswith(("===", "---"))
    )
    section = lines[start + 1 : end]
    assert section[0].endswith(": 1 message, 100 sessions")
    shown = sum(1 for line in section if line.startswith("  session "))
    assert 0 < shown < 100
    assert section[-1] == (
        f"... {100 - shown} sessions not shown: this section stops at "
        f"{MAX_SECTION_LINES} lines. --smtpsink-save-dir=DIR saves every "
        "message and transcript as files."
    )
    assert len(section) <= MAX_SECTION_LINES + 3  # + header, blank, note
    assert "Subject: 'first'" in section[1]


def test_a_long_transcript_is_shown_with_its_end(pytester: pytest.Pytester) -> None:
    # Its first 60 lines alone: the refusal after 40 recipients, the very
    # line that explained the failure, was cut, with no word of where the
    # rest was.
    pytester.makepyfile(
        """
import smtplib

def test_refused(smtpsink):
    smtpsink.fail("EOD", 554, "5.7.1 rejected by policy")
    recipients = [f"user{i}@example.com" for i in range(40)]
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", recipients, b"Subject: bulk\\r\\n\\r\\nx\\r\\n")
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "S: 554 5.7.1 rejected by policy  [injected]" in text
    assert "C: QUIT" in text
    result.stdout.fnmatch_lines(
        [
            "    C: rcpt *:<user*@example.com>",  # "TO:" up to 3.12, "to:" on 3.13
            "    ... * lines not shown (--smtpsink-save-dir=DIR saves the whole "
            "transcript) ...",
        ]
    )


def test_report_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    assert "Captured email" not in result.stdout.str()


def test_bad_report_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--smtpsink-report=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --smtpsink-report: must be one of off, summary, full, got 'loud'"]
    )


def test_a_misspelt_ini_key_is_a_usage_error_naming_the_one_meant(
    pytester: pytest.Pytester,
) -> None:
    """pytest only warns of an unknown ini key, at the end of collection,
    and the run went on with the default (a 10 s timeout taken as 5 s)."""
    pytester.makepyfile("def test_nothing(): pass")
    pytester.makeini("[pytest]\nsmtpsink_timout = 10\n")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: unknown ini option 'smtpsink_timout' (did you mean "
            "smtpsink_timeout?); pytest-smtpsink's are smtpsink_allow_remote, *"
        ]
    )
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("-p", "no:xdist", "-o", "smtpsink_lnt=error")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: unknown ini option 'smtpsink_lnt' (did you mean smtpsink_lint?)*"]
    )
    # A key another plugin or a conftest registered is theirs (review F3).
    pytester.makeconftest(
        "def pytest_addoption(parser):\n"
        "    parser.addini('smtpsink_extra_users', 'a conftest key')\n"
    )
    pytester.makeini("[pytest]\nsmtpsink_extra_users = ann\n")
    pytester.runpytest("-p", "no:xdist", "-W", "error").assert_outcomes(passed=1)
    # A slip in a value's choice names the one meant.
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=ful")
    result.stderr.fnmatch_lines(
        [
            "ERROR: --smtpsink-report: must be one of off, summary, full, got "
            "'ful' (did you mean 'full'?)"
        ]
    )


#: A bad value for every option (the bool flags take none: see below).
BAD_VALUES = {
    "host": "not-an-ip",
    "port": "eighty",
    "hostname": "two words",
    "max_size": "lots",
    "timeout": "-1",
    "report": "loud",
    "save_dir": "a-file",  # exists, and is not a directory
    "save": "some",
    "summary": "maybe",
    "lint": "loud",
    "spamd": "no-port",
    "tls_cert": "missing.pem",
    "tls_key": "missing-key.pem",
    "allow_remote": "maybe",
    "relay": "ftp://127.0.0.1:25",
    "relay_to": "(",
    "relay_allow_remote": "maybe",
    "event_loop": "trio",
}


#: Options whose error does not repeat the value, and why.
NOT_ECHOED = {
    "save_dir": "the error is about what the path is, not its text",
    "relay": "a relay URL may hold a password: only its scheme is shown",
    "tls_key": "the error is the missing tls_cert",
}


def test_bad_values_cover_every_option() -> None:
    from pytest_smtpsink.plugin import _OPTIONS

    assert sorted(BAD_VALUES) == sorted(o.name for o in _OPTIONS)


@pytest.mark.parametrize("where", ["flag", "ini"])
@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_names_its_option(
    pytester: pytest.Pytester, name: str, where: str
) -> None:
    # Issue 13: a bad bool ini value gave pytest's own error, without the key.
    pytester.makepyfile("def test_nothing(): pass")
    pytester.makefile("", **{"a-file": "not a directory"})
    value = BAD_VALUES[name]
    flag = "--smtpsink-" + name.replace("_", "-")
    if where == "ini":
        pytester.makeini(f"[pytest]\nsmtpsink_{name} = {value}\n")
        result = pytester.runpytest("-p", "no:xdist")
        expected = f"ERROR: smtpsink_{name} (ini): *"
    else:
        result = pytester.runpytest("-p", "no:xdist", f"{flag}={value}")
        if name in ("summary", "allow_remote", "relay_allow_remote"):  # no value
            expected = f"*error: argument {flag}: ignored explicit argument 'maybe'"
        else:
            expected = f"ERROR: {flag}: *"
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    if name not in NOT_ECHOED:
        assert value in result.stderr.str()


def test_a_save_dir_in_an_ini_file_expands_the_home_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "~/mail" made a directory named "~" in the project.
    monkeypatch.setenv("HOME", str(pytester.path / "home"))
    pytester.makepyfile(test_mail=FAILING)
    pytester.makeini("[pytest]\nsmtpsink_save_dir = ~/mail\n")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(failed=1, passed=1)
    assert not (pytester.path / "~").exists()
    assert (pytester.path / "home" / "mail" / "index.html").is_file()


def test_a_relative_save_dir_in_an_ini_file_is_taken_from_its_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken from the current directory, a run started in tests/ saved under
    # tests/mail, where the one started at the top saved under mail.
    tests = pytester.mkdir("tests")
    (tests / "test_mail.py").write_text(FAILING)
    pytester.makeini("[pytest]\nsmtpsink_save_dir = mail\n")
    monkeypatch.chdir(tests)
    pytester.runpytest("-p", "no:xdist").assert_outcomes(failed=1, passed=1)
    assert (pytester.path / "mail" / "index.html").is_file()
    assert not (tests / "mail").exists()
    # On the command line, a path is the shell's: from the current directory.
    pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=here").assert_outcomes(
        failed=1, passed=1
    )
    assert (tests / "here" / "index.html").is_file()
    # With -o, pytest's ini value: from the ini file's directory, as the docs
    # say (errors name it "(-o)", not "(ini)").
    pytester.runpytest(
        "-p", "no:xdist", "-o", "smtpsink_save_dir=other"
    ).assert_outcomes(failed=1, passed=1)
    assert (pytester.path / "other" / "index.html").is_file()
    assert not (tests / "other").exists()


def test_a_save_dir_that_cannot_be_made_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    # Under a file: nothing was saved, and nothing said so.
    pytester.makepyfile("def test_nothing(): pass")
    pytester.makefile("", **{"a-file": "not a directory"})
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=a-file/mail")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --smtpsink-save-dir: cannot make the directory 'a-file/mail': "
            "Not a directory"
        ]
    )


def test_a_save_dir_never_replaces_or_removes_files_it_did_not_write(
    pytester: pytest.Pytester,
) -> None:
    # --smtpsink-save-dir=. replaced the project's own index.html, and
    # removed a directory named as a test's with whatever was in it.
    pytester.makepyfile(test_mail=FAILING)
    pytester.makefile(".html", index="<title>My project</title>")
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=.")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --smtpsink-save-dir: '.' holds an index.html that "
            "pytest-smtpsink did not write, *"
        ]
    )
    assert (pytester.path / "index.html").read_text() == "<title>My project</title>"
    # The plugin's own index, of an earlier run, is replaced as before; a
    # test's directory holding the user's files is left alone, and said.
    (pytester.path / "index.html").unlink()
    pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=.")
    (own,) = pytester.path.glob("test_mail.py__*")
    (own / "notes.txt").write_text("mine")
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-save-dir=.")
    assert (own / "notes.txt").read_text() == "mine"
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: mail of 1 test not saved =*",
            "*: could not save the mail in *test_mail.py__*: * holds files "
            "pytest-smtpsink did not write; left as it is *",
        ]
    )


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_mail_that_could_not_be_saved_is_said_at_the_end(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    # The reason went to a section of the teardown report, which pytest
    # never shows for a teardown that passed: the artifact was just empty.
    pytester.makepyfile(
        """
import pathlib, shutil, smtplib

def test_sends(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
    smtpsink.wait_for()
    shutil.rmtree("mail")
    pathlib.Path("mail").write_text("now a file")  # the disk is full, say
    assert False
"""
    )
    result = pytester.runpytest(*xdist, "--smtpsink-save-dir=mail")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: mail of 1 test not saved =*",
            "test_mail_that_could_not_be_saved_is_said_at_the_end.py::test_sends: "
            "could not save the mail in */mail/test_mail_that_could_not_be_saved_*: *",
        ]
    )


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_mail_of_runs_that_could_not_be_saved_says_which_run(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    # With pytest-rerunfailures, one line said the test's mail was not
    # saved: the last run's reason, under the test's name alone.
    pytester.makepyfile(
        test_x=SEND
        + """
import pathlib, shutil

def test_sends(smtpsink):
    send(smtpsink, "hi")
    shutil.rmtree("mail", ignore_errors=True)
    pathlib.Path("mail").write_text("now a file")  # the disk is full, say
    assert False
"""
    )
    result = pytester.runpytest(*xdist, "--reruns", "1", "--smtpsink-save-dir=mail")
    assert result.parseoutcomes() == {"failed": 1, "rerun": 1}
    result.stdout.fnmatch_lines(
        [
            "*= smtpsink: mail of 1 test not saved =*",
            "test_x.py::test_sends (attempt 1): could not save the mail in *",
            "test_x.py::test_sends (attempt 2): could not save the mail in *",
        ]
    )


@pytest.mark.parametrize(
    "flag",
    ["--smtpsink-report= ", "--smtpsink-timeout= ", "--smtpsink-event-loop= "],
)
def test_a_blank_value_is_the_default(pytester: pytest.Pytester, flag: str) -> None:
    # "An empty value means the option's default": a blank one was an
    # error quoting '' (which the user did not type).
    pytester.makepyfile("def test_nothing(smtpsink): pass")
    pytester.runpytest("-p", "no:xdist", flag).assert_outcomes(passed=1)


def test_the_event_loop_option_takes_any_case(pytester: pytest.Pytester) -> None:
    # As --smtpsink-report=FULL and --smtpsink-lint=ERROR are taken.
    pytester.makepyfile(
        "def test_loop(smtpsink):\n"
        "    assert smtpsink.settings.event_loop == 'asyncio'\n"
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-event-loop=ASYNCIO")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("text", "shown"), [("yes", True), ("On", True), ("0", False), ("false", False)]
)
def test_bool_ini_values(pytester: pytest.Pytester, text: str, shown: bool) -> None:
    pytester.makepyfile("def test_silent(smtpsink): pass")
    pytester.makeini(f"[pytest]\nsmtpsink_summary = {text}\n")
    result = pytester.runpytest("-p", "no:xdist", "-v")
    result.assert_outcomes(passed=1)
    assert ("smtpsink: mail captured per test" in result.stdout.str()) is shown


@pytest.mark.skipif(
    pytest.version_tuple[:2] < (9, 2), reason="a union ini type needs pytest 9.2"
)
@pytest.mark.parametrize(
    ("value", "shown"), [("true", True), ("false", False), ('"yes"', True)]
)
def test_bool_keys_take_native_toml_bools(
    pytester: pytest.Pytester, value: str, shown: bool
) -> None:
    # pytest 9's native [tool.pytest] table: pytest refused a bare true
    # ("expects a string, got bool") before the plugin saw it.
    pytester.makepyfile("def test_silent(smtpsink): pass")
    pytester.makepyprojecttoml(f"[tool.pytest]\nsmtpsink_summary = {value}\n")
    result = pytester.runpytest("-p", "no:xdist", "-v")
    result.assert_outcomes(passed=1)
    assert ("smtpsink: mail captured per test" in result.stdout.str()) is shown


def test_a_test_whose_xdist_worker_crashed_is_in_the_index(
    pytester: pytest.Pytester,
) -> None:
    # Its worker gone, no teardown came, and the index, which lists every
    # failed test, left it out.
    pytester.makepyfile(
        SEND
        + """
import os

def test_crashes(smtpsink):
    send(smtpsink, "Lost")
    os._exit(3)  # as a segfault in a C extension would
"""
    )
    out = pytester.path / "mail"
    result = pytester.runpytest("-n", "1", f"--smtpsink-save-dir={out}")
    result.assert_outcomes(failed=1)
    (record,) = out.rglob("smtpsink.json")
    saved = json.loads(record.read_text("ascii"))
    assert (saved["nodeid"], saved["outcome"], saved["messages"]) == (
        "test_a_test_whose_xdist_worker_crashed_is_in_the_index.py::test_crashes",
        "failed",
        [],
    )
    assert saved["reason"].startswith("worker 'gw0' crashed"), saved["reason"]
    assert saved["reason"].endswith(
        " (the mail it captured was lost with the worker)"
    ), saved["reason"]
    assert "test_crashes" in (out / "index.html").read_text("utf-8")
    # Under --dist each, one record per worker that crashed, each where
    # that worker would have saved it.
    result = pytester.runpytest(
        "-n", "2", "--dist", "each", f"--smtpsink-save-dir={out}"
    )
    result.assert_outcomes(failed=2)
    names = sorted(p.parent.name for p in out.rglob("smtpsink.json"))
    workers = [name.rpartition("@")[2] for name in names if "@" in name]
    assert workers == ["gw0", "gw1"], names


def test_a_child_a_test_forked_does_not_hold_the_save_directory(
    pytester: pytest.Pytester,
) -> None:
    # flock belongs to the open file, which fork() shares: a helper a test
    # forked and left running kept the directory "in use" after the run.
    done = pytester.path / "done"
    pytester.makepyfile(
        f"""
import os, time

def test_forks(smtpsink):
    if os.fork() == 0:  # a helper left running, until the outer test ends
        for _ in range(600):
            if os.path.exists({str(done)!r}):
                break
            time.sleep(0.1)
        os._exit(0)
"""
    )
    out = pytester.path / "mail"
    try:
        first = pytester.runpytest_subprocess(f"--smtpsink-save-dir={out}")
        first.assert_outcomes(passed=1)
        second = pytester.runpytest_subprocess(f"--smtpsink-save-dir={out}")
        second.assert_outcomes(passed=1)
    finally:
        done.touch()  # the child ends


def test_two_runs_cannot_save_to_one_directory(pytester: pytest.Pytester) -> None:
    # tox -p with the directory in the ini file: each run replaced the
    # other's files and removed its failed tests as passed ones, silently.
    from test_cli import Sink

    pytester.makepyfile(FAILING)
    out = pytester.path / "mail"
    out.mkdir()
    holder = Sink("--save-dir", str(out))  # another run, saving there now
    try:
        result = pytester.runpytest(f"--smtpsink-save-dir={out}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"*--smtpsink-save-dir: another run is saving to '{out}' now (a "
                "pytest run or an smtpsink command); each would replace and "
                "remove the other's files: give each run a directory of its "
                "own (under tox: mail/{envname})"
            ]
        )
        assert list(out.iterdir()) == []
        # A run that saves nothing is not refused (an IDE's collection).
        for nothing in ("--co", "--setup-plan", "--markers"):
            quiet = pytester.runpytest(nothing, f"--smtpsink-save-dir={out}")
            assert quiet.ret == pytest.ExitCode.OK, (nothing, quiet.stderr.str())
    finally:
        holder.stop()
    # Free once that run ended; the lock leaves no file of its own.
    result = pytester.runpytest("-n", "2", f"--smtpsink-save-dir={out}")
    result.assert_outcomes(failed=1, passed=1)
    assert ".smtpsink.lock" not in [p.name for p in out.iterdir()]


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_save_dir_keeps_failed_tests_only(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    pytester.makepyfile(FAILING)
    out = pytester.path / "mail"
    result = pytester.runpytest(*xdist, f"--smtpsink-save-dir={out}")
    result.assert_outcomes(failed=1, passed=1)
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert saved == [
        "index.html",
        "test_save_dir_keeps_failed_tests_only.py__test_fails/0001-Your-receipt.eml",
        "test_save_dir_keeps_failed_tests_only.py__test_fails/session-0001.txt",
        "test_save_dir_keeps_failed_tests_only.py__test_fails/smtpsink.json",
    ]
    eml = (
        out
        / "test_save_dir_keeps_failed_tests_only.py__test_fails/0001-Your-receipt.eml"
    )
    assert eml.read_bytes() == b"Subject: Your receipt\r\n\r\nbody\r\n"
    transcript = (eml.parent / "session-0001.txt").read_text()
    assert transcript.splitlines()[1] == "S: 220 smtpsink.test pytest-smtpsink"


def test_save_dir_under_dist_each_keeps_each_workers_files(
    pytester: pytest.Pytester,
) -> None:
    # --dist each runs every test on every worker: both wrote the test's one
    # directory, and the last to finish replaced the other's mail.
    pytester.makepyfile(
        SEND
        + """
import os

def test_fails(smtpsink):
    send(smtpsink, "from " + os.environ["PYTEST_XDIST_WORKER"])
    assert False
"""
    )
    out = pytester.path / "mail"
    args = ["-n", "2", "--dist", "each", f"--smtpsink-save-dir={out}"]
    pytester.runpytest(*args).assert_outcomes(failed=2)
    test = "test_save_dir_under_dist_each_keeps_each_workers_files.py__test_fails"
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.eml"))
    assert saved == [f"{test}@gw0/0001-from-gw0.eml", f"{test}@gw1/0001-from-gw1.eml"]
    index = (out / "index.html").read_text(encoding="utf-8")
    # Each heading says whose run it is, as the summary does (it did not).
    for worker in ("gw0", "gw1"):
        assert index.count(f"::test_fails [{worker}]</h2>") == 1
    assert "2 test(s), 2 message(s)" in index  # each worker's, no rerun
    assert f"{test}@gw0/</a>" in index
    assert f"{test}@gw1/</a>" in index
    # Without --dist each a test runs once: its directory has no worker id.
    pytester.runpytest("-n", "2", f"--smtpsink-save-dir={out}")
    assert (out / test / "session-0001.txt").exists()


def test_save_all(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    out = pytester.path / "mail"
    pytester.makeini(f"[pytest]\nsmtpsink_save_dir = {out}\nsmtpsink_save = all\n")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(failed=1, passed=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "index.html",
        "test_save_all.py__test_fails",
        "test_save_all.py__test_passes",
    ]


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_save_dir_keeps_tests_apart_whose_ids_clean_to_one_name(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    # Issue 13: "a b", "a/b" and "a:b" all clean to "a_b", and "a_b" is
    # already clean: four failed tests once left one directory.
    pytester.makepyfile(
        SEND
        + """
import pytest

@pytest.mark.parametrize("who", ["a b", "a/b", "a:b", "a_b"])
def test_fails(smtpsink, who):
    send(smtpsink, who.replace("/", "slash").replace(":", "colon"))
    assert False
"""
    )
    out = pytester.path / "mail"
    args = [*xdist, f"--smtpsink-save-dir={out}"]
    pytester.runpytest(*args).assert_outcomes(failed=4)
    first = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.suffix in (".eml", ".txt")  # not index.html or smtpsink.json
    )
    directories = {name.split("/")[0] for name in first}
    assert len(directories) == 4, first
    assert len(first) == 8  # each test's message and transcript
    subjects = sorted(name.split("/")[1] for name in first if name.endswith(".eml"))
    assert subjects == sorted(
        ["0001-a-b.eml", "0001-aslashb.eml", "0001-acolonb.eml", "0001-a_b.eml"]
    )
    # The clean id keeps its plain name; the names are the same every run.
    assert (
        "test_save_dir_keeps_tests_apart_whose_ids_clean_to_one_name.py__test_fails[a_b]"
        in directories
    )
    pytester.runpytest(*args).assert_outcomes(failed=4)
    again = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.suffix in (".eml", ".txt")
    )
    assert again == first


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_save_dir_keeps_tests_apart_whose_names_differ_in_case_or_slash(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    # "test_a/test_x.py" and "test_a_test_x.py" were both "test_a_test_x.py__...";
    # "[A]" and "[a]" are one directory on macOS and Windows: the last test
    # saved replaced the others' files, and index.html listed it alone.
    body = (
        SEND
        + """
import pytest

@pytest.mark.parametrize("who", ["A", "a"])
def test_1(smtpsink, who):
    send(smtpsink, __name__ + who)
    assert False
"""
    )
    pytester.mkpydir("test_a")
    (pytester.path / "test_a" / "test_x.py").write_text(body)
    (pytester.path / "test_a_test_x.py").write_text(body)
    out = pytester.path / "mail"
    pytester.runpytest(*xdist, f"--smtpsink-save-dir={out}").assert_outcomes(failed=4)
    saved = sorted(p.parent.name.casefold() for p in out.rglob("*.eml"))
    assert len(set(saved)) == 4, saved
    assert all(re.search(r"-[0-9a-f]{8}$", name) for name in saved), saved
    index = (out / "index.html").read_text()
    for nodeid in ("test_a/test_x.py::test_1[A]", "test_a_test_x.py::test_1[a]"):
        assert nodeid in index


def test_a_test_passing_later_leaves_none_of_its_saved_directories(
    pytester: pytest.Pytester,
) -> None:
    # Its directory's name depends on the tests a run selects: run with
    # test_1[a], test_1[A] has a hashed one; run alone, its plain one. A run
    # in which it passed removed only the name it had in that run.
    pytester.makepyfile(
        SEND
        + """
import os, pytest

@pytest.mark.parametrize("who", ["A", "a"])
def test_1(smtpsink, who):
    send(smtpsink, who)
    assert not os.environ.get("SMTPSINK_TEST_FAIL")
"""
    )
    out = pytester.path / "mail"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMTPSINK_TEST_FAIL", "1")
        pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2  # both hashed
    module = pytester.path / f"{pytester.path.name}.py"
    if not module.exists():  # pytester names the module after the test
        (module,) = pytester.path.glob("*.py")
    selected = pytester.runpytest(
        "-p", "no:xdist", f"--smtpsink-save-dir={out}", f"{module.name}::test_1[A]"
    )  # fmt: skip
    selected.assert_outcomes(passed=1)
    (left,) = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert left.endswith("[a]") or "[a]-" in left, left


def test_save_dir_names_are_those_the_docs_show(tmp_path: pathlib.Path) -> None:
    # docs/debugging.rst lists these names; "10% off" has a run of two
    # replaced characters, which become one "_".
    from pytest_smtpsink._report import test_directory

    def name(nodeid: str) -> str:
        return test_directory(tmp_path, nodeid, None, False, 1).name

    assert name("tests/test_checkout.py::test_receipt") == (
        "tests_test_checkout.py__test_receipt"
    )
    assert name("tests/test_checkout.py::test_coupon[10% off]") == (
        "tests_test_checkout.py__test_coupon[10_off]-374c04fe"
    )
    assert name("tests/test_checkout.py::test_coupon[10_off]") == (
        "tests_test_checkout.py__test_coupon[10_off]"
    )


def test_nothing_written_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    before = set(pytester.path.rglob("*"))
    pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    after = {p for p in pytester.path.rglob("*") if "__pycache__" not in p.parts}
    assert after <= before


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_terminal_summary_counts(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makepyfile(
        FAILING
        + """
def test_silent(smtpsink):
    pass
"""
    )
    result = pytester.runpytest(*xdist, "--smtpsink-summary", "-rA")
    result.stdout.fnmatch_lines(
        [
            # A section of its own, not a part of the PASSES section of -rA.
            "=* smtpsink: mail captured per test =*",
            "*::test_fails: 1 message, 1 session",
            "*::test_passes: 1 message, 1 session",
        ]
    )
    assert "test_silent: 0 messages" not in result.stdout.str()
    verbose = pytester.runpytest(*xdist, "--smtpsink-summary", "-v")
    verbose.stdout.fnmatch_lines(["*::test_silent: 0 messages, 0 sessions"])
    # The counts are the plugin's: not a property of every test in JUnit XML.
    junit = pytester.path / "junit.xml"
    pytester.runpytest(*xdist, "--smtpsink-summary", f"--junitxml={junit}")
    assert "<testcase" in junit.read_text()
    assert "<property" not in junit.read_text()


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]])
def test_terminal_summary_counts_each_run_of_a_rerun_test(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    # The last run's counts replaced the earlier runs', under the test's
    # name alone: as if the test had captured that much in all.
    pytester.makepyfile(
        test_x=SEND
        + """
RUNS = []

def test_flaky(smtpsink):
    RUNS.append(1)
    for _ in RUNS:  # run N sends N messages
        send(smtpsink, f"run {len(RUNS)}")
    assert len(RUNS) > 2, "flaky"
"""
    )
    result = pytester.runpytest(*xdist, "--reruns", "2", "--smtpsink-summary")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 2}
    listed = [line for line in result.outlines if line.startswith("test_x.py::")]
    last = "test_x.py::test_flaky (attempt 3): 3 messages, 3 sessions"
    if _RERUNFAILURES_BEFORE_16:  # it logs no teardown of a run it reruns
        assert listed == [last]
    else:
        assert listed == [
            "test_x.py::test_flaky (attempt 1): 1 message, 1 session",
            "test_x.py::test_flaky (attempt 2): 2 messages, 2 sessions",
            last,
        ]


def test_terminal_summary_of_tests_that_captured_nothing_says_so(
    pytester: pytest.Pytester,
) -> None:
    # Without -v it was the section's title alone, as if cut off.
    pytester.makepyfile("def test_silent(smtpsink): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-summary")
    result.stdout.fnmatch_lines(
        [
            "=* smtpsink: mail captured per test =*",
            "no mail and no SMTP session in 1 test using the sink (-v lists each)",
        ]
    )


def test_terminal_summary_under_dist_each_counts_every_worker(
    pytester: pytest.Pytester,
) -> None:
    # Every worker runs every test: one line per test said one worker's
    # counts, as if the test had run once.
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-n", "2", "--dist", "each", "--smtpsink-summary")
    lines = [
        line
        for line in result.stdout.lines
        if "::test_" in line and line.endswith(("session", "sessions"))
    ]
    assert sorted(line.split("::", 1)[1] for line in lines) == [
        "test_fails [gw0]: 1 message, 1 session",
        "test_fails [gw1]: 1 message, 1 session",
        "test_passes [gw0]: 1 message, 1 session",
        "test_passes [gw1]: 1 message, 1 session",
    ]


def test_reporting_options_run_without_the_terminal_plugin(
    pytester: pytest.Pytester,
) -> None:
    # `-p no:terminal` (an IDE's runner, say): --smtpsink-summary read the
    # verbosity option, which that plugin adds, and was an INTERNALERROR.
    pytester.makepyfile(FAILING)
    out = pytester.path / "mail"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "-p",
        "no:terminal",
        "-p",
        "no:xdist",
        "--smtpsink-summary",
        f"--smtpsink-save-dir={out}",
        f"--junitxml={junit}",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stderr.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert junit.read_text().count("<testcase") == 2
    assert (out / "index.html").exists()


def test_two_mailboxes_on_one_sink_are_reported_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        SEND
        + """
def test_both(smtpsink, smtpsink_factory):
    same = smtpsink_factory()  # default settings: the same sink
    send(smtpsink, "once")
    assert len(same.messages) == 1
    assert False
"""
    )
    out = pytester.path / "mail"
    result = pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    result.stdout.fnmatch_lines(["smtp://*: 1 message, 1 session"])
    assert result.stdout.str().count("Subject: 'once'") == 1
    assert sorted(p.name for p in out.rglob("*.eml")) == ["0001-once.eml"]


def test_a_second_mailbox_on_a_sink_keeps_the_first_ones_mail(
    pytester: pytest.Pytester,
) -> None:
    # Only a test's first mailbox on a sink empties it of earlier tests' mail.
    pytester.makepyfile(
        SEND
        + """
import pytest

def test_earlier(smtpsink):
    send(smtpsink, "earlier")

def test_default_then_factory(smtpsink, smtpsink_factory):
    send(smtpsink, "first")
    second = smtpsink_factory()
    send(second, "second")
    assert [m.subject for m in smtpsink.messages] == ["first", "second"]
    assert [m.subject for m in second.messages] == ["second"]

@pytest.mark.smtpsink(hostname="other.test")
def test_marker_then_factory(smtpsink, smtpsink_factory):
    send(smtpsink, "first")
    second = smtpsink_factory(hostname="other.test")
    assert second.sink is smtpsink.sink
    assert [m.subject for m in smtpsink.messages] == ["first"]

def test_factory_twice(smtpsink_factory):
    first = smtpsink_factory(hostname="other.test")
    send(first, "first")
    smtpsink_factory(hostname="other.test")
    assert [m.subject for m in first.messages] == ["first"]

def test_later(smtpsink):
    assert len(smtpsink.messages) == 0
"""
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=5)


def test_saving_again_replaces_the_earlier_run(pytester: pytest.Pytester) -> None:
    out = pytester.path / "mail"
    pytester.makepyfile(
        SEND
        + "def test_x(smtpsink):\n    send(smtpsink, 'a')\n    send(smtpsink, 'b')\n    assert False\n"
    )
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    pytester.makepyfile(
        SEND + "def test_x(smtpsink):\n    send(smtpsink, 'c')\n    assert False\n"
    )
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    assert sorted(p.name for p in out.rglob("*.eml")) == ["0001-c.eml"]


@pytest.mark.parametrize(
    "mode", ["--collect-only", "--setup-only", "--setup-plan", "--fixtures"]
)
def test_a_run_of_no_test_leaves_the_saved_mail_alone(
    pytester: pytest.Pytester, mode: str
) -> None:
    # --setup-only "passed" every test without running it, and so removed
    # the mail of the last real run's failures; each of these modes wrote
    # an empty index.html over that run's.
    out = pytester.path / "mail"
    pytester.makepyfile(FAILING)
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}")
    before = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file()
    }
    assert "index.html" in before
    assert any(name.endswith("Your-receipt.eml") for name in before)
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}", mode)
    after = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file()
    }
    assert after == before
    # Nor does it make a directory that is not there.
    pytester.runpytest("-p", "no:xdist", f"--smtpsink-save-dir={out}-new", mode)
    assert not (pytester.path / "mail-new").exists()


def test_plugin_import_stays_light() -> None:
    # pytest imports the plugin in every run; the server stack loads only
    # when a test uses the sink.
    import subprocess
    import sys

    code = (
        "import sys, pytest_smtpsink.plugin\n"
        "heavy = {'asyncio', 'aiosmtpd', 'mailparser', 'email.parser', 'trustme',\n"
        "         'dkim', 'dns', 'cryptography', 'smtplib',\n"
        "         'pytest_smtpsink._dns', 'pytest_smtpsink._relay'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    import pytest_smtpsink

    for name in pytest_smtpsink.__all__:
        assert getattr(pytest_smtpsink, name) is not None
    assert sorted(dir(pytest_smtpsink)) == sorted(pytest_smtpsink.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = pytest_smtpsink.Nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["option", "ini"])
def test_loaded_by_name_without_autoload(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # docs/reference: with autoloading off, the entry point's name loads it
    # (on every supported pytest; a conftest's pytest_plugins needs 8).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile("def test_x(smtpsink):\n    assert smtpsink.port\n")
    args: tuple[str, ...] = ("-p", "smtpsink")
    if how == "ini":
        pytester.makeini("[pytest]\naddopts = -p smtpsink\n")
        args = ()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)


def test_no_sink_thread_outlives_the_session(pytester: pytest.Pytester) -> None:
    # In-process, so the inner session's threads are this process's: every
    # sink the pool started (the default one, a factory's TLS one, a relaying
    # one with its relay thread, POP3, IMAP and the DNS stub on them) must be
    # stopped and joined when the inner session ends. The outer session's own
    # sinks (this xdist worker's) were running before and do not count.
    import threading

    pytester.makepyfile(
        SEND
        + """
import poplib

def test_everything(smtpsink, smtpsink_factory):
    send(smtpsink, "plain")
    smtpsink.assert_sent(subject="plain")
    smtpsink.dns.a("mail.example.com", "127.0.0.1")
    upstream = smtpsink_factory(hostname="upstream.test")
    relaying = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}", relay_to=".*"
    )
    send(relaying, "relayed")
    message = relaying.wait_for(subject="relayed")
    relaying.wait_until(lambda: message.relay.done)
    upstream.assert_sent(subject="relayed")
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port)
    client.user("ann@example.com")
    client.pass_("any")
    assert client.stat()[0] == 1
    client.quit()
    smtpsink_factory(tls="starttls").imap.port
"""
    )
    before = set(threading.enumerate())
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)
    left = [
        t.name
        for t in threading.enumerate()
        if t not in before and t.name.startswith("smtpsink-")
    ]
    assert left == [], f"expected no sink threads after the session, found {left}"


def test_what_a_person_leaves_in_a_saved_folder_keeps_it_the_plugins(
    tmp_path: pathlib.Path,
) -> None:
    # A look at a failed test's folder (Finder's .DS_Store) made it
    # "foreign": the next run refused to save there, and a passing test's
    # old mail stayed. So did the 10,000th message's file name.
    from pytest_smtpsink import _report

    saved = tmp_path / "test_x.py__test_x"
    (saved / "10000-attachments").mkdir(parents=True)
    for name in ("0001-Hi.eml", "10000-Hi.eml", "session-10000.txt", ".DS_Store"):
        (saved / name).write_text("x")
    _report.forget_saved(saved)
    assert not saved.exists()
    # The user's own file keeps the folder; a file of the folder's name is
    # left too, and never an error.
    (saved).mkdir()
    (saved / "notes.txt").write_text("mine")
    _report.forget_saved(saved)
    assert (saved / "notes.txt").read_text() == "mine"
    clash = tmp_path / "test_y.py__test_y"
    clash.write_text("my notes")
    _report.forget_saved(clash)
    assert clash.read_text() == "my notes"


def test_an_empty_index_is_no_foreign_one(tmp_path: pathlib.Path) -> None:
    from pytest_smtpsink import _html

    (tmp_path / "index.html").write_text("")
    assert not _html.foreign_index(tmp_path)
    (tmp_path / "index.html").write_text("<title>Mine</title>")
    assert _html.foreign_index(tmp_path)


def test_a_save_dir_of_an_unknown_users_home_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(
        "-p", "no:xdist", "--smtpsink-save-dir=~no-such-user-here/mail"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --smtpsink-save-dir: *"])


def test_help_names_each_option_s_value_as_the_reference_page_does(
    pytester: pytest.Pytester,
) -> None:
    # --help showed argparse's words (--smtpsink-timeout=TIMEOUT,
    # --smtpsink-save-dir=SAVE_DIR) where the reference page says SECONDS
    # and DIR.
    reference = (
        pathlib.Path(__file__).parent.parent / "docs" / "reference.rst"
    ).read_text()
    documented = re.findall(r"``(--smtpsink-[a-z-]+=[A-Z:]+)``", reference)
    assert len(documented) >= 14, documented
    shown = pytester.runpytest("--help").stdout.str()
    missing = [option for option in documented if option not in shown]
    assert missing == [], shown


def test_a_run_inside_a_test_gives_the_fixture_back_its_test(
    pytester: pytest.Pytester,
) -> None:
    # The smtpsink fixture learns its test from the plugin's set-up hook (a
    # `request` argument costs 40 µs per test): a pytester run inside a
    # test must not leave the inner run's last test as the running one.
    pytester.makeconftest("pytest_plugins = ['pytester']")
    pytester.makepyfile(
        """
import pytest

@pytest.mark.smtpsink(hostname="outer.test")
def test_outer(pytester, request):
    pytester.makepyfile(test_inner=(
        "import pytest\\n"
        "@pytest.mark.smtpsink(hostname='inner.test')\\n"
        "def test_inner(smtpsink):\\n"
        "    assert smtpsink.settings.hostname == 'inner.test'\\n"
    ))
    # (pytester clears PYTEST_ADDOPTS: pytest-asyncio would warn, unset.)
    inner = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:asyncio")
    inner.assert_outcomes(passed=1)
    box = request.getfixturevalue("smtpsink")
    assert box.settings.hostname == "outer.test"

@pytest.mark.smtpsink(hostname="outer.test")
def test_outer_of_a_broken_run(pytester, request):
    # Its configure fails before the plugin's: nothing of ours to undo (it
    # set the running test to None, so the fixture raised RuntimeError).
    pytester.makeconftest(
        "import pytest\\n"
        "@pytest.hookimpl(tryfirst=True)\\n"
        "def pytest_configure(config):\\n"
        "    raise pytest.UsageError('inner config is broken')\\n"
    )
    pytester.makepyfile(test_inner="def test_inner(): pass\\n")
    inner = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:asyncio")
    assert inner.ret == pytest.ExitCode.USAGE_ERROR
    box = request.getfixturevalue("smtpsink")
    assert box.settings.hostname == "outer.test"
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "pytester")
    result.assert_outcomes(passed=2)


def test_a_mailbox_read_after_its_test_ended_is_refused(
    pytester: pytest.Pytester,
) -> None:
    # Kept in a global, test one's mailbox followed the sink on: in test two
    # it listed test two's mail "in this test", and a check on it passed.
    pytester.makepyfile(
        """
        import smtplib

        import pytest

        KEPT = []

        BOXES = []

        def test_keeps(smtpsink, smtpsink_factory):
            KEPT.extend([smtpsink, smtpsink_factory(hostname="other.test")])
            BOXES.append(smtpsink.mailbox("ann@example.com"))

        def test_reads_a_kept_recipients_mailbox(smtpsink):
            smtpsink.deliver(b"Subject: later\\r\\n\\r\\n", to="ann@example.com")
            for read in (lambda b: b.messages(), lambda b: b.assert_in(subject="later")):
                with pytest.raises(RuntimeError, match="which has ended"):
                    read(BOXES[0])

        @pytest.mark.parametrize("read", [
            lambda s: s.assert_sent(subject="from the next test"),
            lambda s: s.messages,
            lambda s: s.sessions,
            lambda s: s.wait_for(timeout=1),
            lambda s: s.mailbox("ann@example.com"),
        ])
        def test_reads_it(smtpsink, read):
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                client.sendmail(
                    "a@example.com", ["ann@example.com"],
                    b"Subject: from the next test\\r\\n\\r\\n",
                )
            for kept in KEPT:
                with pytest.raises(RuntimeError) as refused:
                    read(kept)
                assert str(refused.value) == (
                    "this mailbox belongs to test_a_mailbox_read_after_its_test_ended"
                    "_is_refused.py::test_keeps, which has ended: it would show the "
                    "mail of the tests that ran after it, as if it were that test's. "
                    "Use the smtpsink (or smtpsink_factory()) of the running test; a "
                    "mailbox kept in a global, a class attribute or a thread that "
                    "outlived its test is read after its end."
                )
            smtpsink.assert_sent(subject="from the next test")
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)


def test_a_wider_fixtures_view_read_in_a_later_test_is_refused(
    pytester: pytest.Pytester,
) -> None:
    # A module fixture's view of the session's sink, read in a test after
    # that test's smtpsink was made: its own mail was let go (the report
    # said no client had connected), and it listed the running test's mail
    # as its own, so that a check on it passed on another test's mail, in
    # the first test (whose set-up made it) too.
    pytester.makepyfile(
        """
        import smtplib

        import pytest

        def send(sink, to):
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("app@example.com", [to], b"Subject: Welcome\\r\\n\\r\\n")

        @pytest.fixture(scope="module")
        def seeded(smtpsink_server):
            box = smtpsink_server.view()
            send(smtpsink_server, "admin@example.com")
            box.wait_for(rcpt_to="admin@example.com")  # read where it was made
            return box

        def test_first_would_pass_on_its_own_mail(seeded, smtpsink):
            # The seed's mail was let go as this test's smtpsink was made.
            send(smtpsink, "bob@example.com")
            smtpsink.wait_for(rcpt_to="bob@example.com")
            seeded.assert_sent(subject="Welcome")

        def test_later_reads_it(seeded, smtpsink):
            seeded.assert_sent(subject="Welcome")

        def test_cleared_first(seeded, smtpsink):
            seeded.clear()  # afresh in this test: it reads this test's mail
            send(smtpsink, "cy@example.com")
            assert seeded.wait_for().envelope.rcpt_to == ("cy@example.com",)

        KEPT = []

        def test_a_view_made_in_the_test_reads(smtpsink_server, smtpsink):
            box = smtpsink_server.view()
            send(smtpsink, "dee@example.com")
            assert box.wait_for().envelope.rcpt_to == ("dee@example.com",)
            KEPT.append(smtpsink_server.view())  # nothing comes after it here

        def test_a_kept_view_that_lost_nothing(smtpsink):
            send(smtpsink, "eve@example.com")
            KEPT[0].assert_sent(rcpt_to="eve@example.com")

        @pytest.fixture(scope="module")
        def probed(smtpsink_server):
            box = smtpsink_server.view()
            with smtplib.SMTP(smtpsink_server.host, smtpsink_server.port) as client:
                client.noop()  # connects, sends nothing
            return box

        def test_set_up_that_only_connected(probed, smtpsink):
            probed.assert_nothing_sent()
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(failed=4, passed=2)
    module = "test_a_wider_fixtures_view_read_in_a_later_test_is_refused.py"
    in_its_set_up = (
        "E       RuntimeError: this view was made in this test's set-up (or in "
        "an earlier run of it, before a rerun), and the test's smtpsink let go "
        "of the 1 message and 1 session it had received since (the sink keeps "
        "the running "
        "test's mail only): it would show the test's mail as its own. Have the "
        "fixture that made it request smtpsink before it sends, read its mail "
        "there (wait_for(...); the messages it returns stay readable), or call "
        "the view's clear() in the test first."
    )
    later = (
        "E       RuntimeError: this view was made during {} (in a fixture of wider "
        "scope, or kept since), and the sink let go of its mail when a later "
        "smtpsink was made (it keeps the running test's mail only): it would show "
        "the running test's mail as its own. Read it in the fixture that made it "
        "(wait_for(...) there; the messages it returns stay readable), call its "
        "clear() in the test first, or use the running test's smtpsink."
    )
    lines = result.stdout.lines
    assert lines.count(in_its_set_up) == 1, result.stdout.str()
    # What went is said, a session without mail too (not "the 0 messages").
    only_connected = in_its_set_up.replace("1 message and", "0 messages and")
    assert lines.count(only_connected) == 1, result.stdout.str()
    first = later.format(f"{module}::test_first_would_pass_on_its_own_mail")
    assert lines.count(first) == 1, result.stdout.str()
    # Made in another test, even with nothing let go since: refused too.
    made_in_a_test = later.format(f"{module}::test_a_view_made_in_the_test_reads")
    assert lines.count(made_in_a_test) == 1, result.stdout.str()


def test_a_view_whose_mail_the_sink_let_go_says_so() -> None:
    # The sink's clear() lets every view's mail go: the report said no
    # client had connected, sending the reader to check the app's port.
    with SMTPSink() as sink:
        box = sink.view()
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail("app@example.com", ["a@example.com"], b"Subject: W\r\n\r\n")
        box.wait_for()
        sink.clear()
        with pytest.raises(AssertionError) as caught:
            box.assert_sent(subject="W")
    assert str(caught.value).splitlines()[1:3] == [
        "No messages arrived since this view was made.",
        "Hint: 1 message and 1 session that arrived in this mailbox were let go "
        "since: a later test's smtpsink was made (the sink keeps only the running "
        "test's mail), or the sink's clear() was called. Read a mailbox made "
        "outside a test before that, in the fixture that made it (wait_for(...) "
        "there; the messages it returns stay readable).",
    ]


def test_a_sink_stopped_by_a_test_is_not_handed_to_later_ones(
    pytester: pytest.Pytester,
) -> None:
    # The next test got the stopped sink: its app met a refused connection,
    # and assert_sent said no client had connected.
    pytester.makepyfile(
        """
        def test_stops_it(smtpsink_server):
            smtpsink_server.stop()

        def test_after(smtpsink):
            smtpsink.assert_nothing_sent()
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "pytest-smtpsink: the sink smtp://127.0.0.1:* was stopped "
            "during the run (smtpsink_server.stop()?), and the tests after it "
            "cannot use it. The plugin stops its sinks at the end of the session; "
            "for a sink of your own to start and stop, make an SMTPSink() (see "
            "the Reference)",
        ]
    )


def test_the_factory_takes_keyword_settings_only(smtpsink_factory: Factory) -> None:
    with pytest.raises(TypeError) as refused:
        smtpsink_factory("starttls")
    assert str(refused.value) == (
        "smtpsink_factory() takes keyword settings only, got 'starttls' "
        '(e.g. smtpsink_factory(tls="starttls"))'
    )


def test_a_session_keeps_at_most_32_sinks_running(pytester: pytest.Pytester) -> None:
    # Each test asked for a sink of its own settings, and every sink ran
    # until the session ended: two threads and four file descriptors each,
    # "Too many open files" after some 250 tests.
    pytester.makepyfile(
        """
        import smtplib
        import threading

        import pytest

        def running():
            return sum(t.name.startswith("smtpsink-") for t in threading.enumerate())

        BEFORE = running()  # the outer run's sinks, in this process too
        SINKS = []

        @pytest.mark.parametrize("n", range(40))
        def test_own_sink(smtpsink, smtpsink_factory, n):
            sink = smtpsink_factory(hostname=f"h{n}.test")
            SINKS.append(sink.sink)
            with smtplib.SMTP(sink.host, sink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\\r\\n\\r\\n")
            assert sink.wait_for().session.summary()
            # Its own, the default one, and at most 31 others.
            assert running() - BEFORE <= 33
            # A sink let go keeps no mail: the tests that used it keep it
            # alive, and it held its last test's mail to the session's end.
            let_go = [s for s in SINKS if not s.running]
            assert len(let_go) == max(0, n - 30)  # the default sink is one of 32
            assert [len(s.messages) for s in let_go] == [0] * len(let_go)

        def test_more_than_32_in_one_test(smtpsink_factory):
            # All in use: none is let go, the one just started least of all.
            sinks = [smtpsink_factory(hostname=f"many{n}.test") for n in range(34)]
            for sink in sinks:
                with smtplib.SMTP(sink.host, sink.port) as client:
                    client.noop()

        def test_the_first_again(smtpsink_factory):
            sink = smtpsink_factory(hostname="h0.test")  # let go: started anew
            with smtplib.SMTP(sink.host, sink.port) as client:
                assert client.ehlo()[1].startswith(b"h0.test")
            # Back under the cap: one let go for each new sink left the 35
            # of the test before running for good.
            assert running() - BEFORE <= 33
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--smtpsink-report=off")
    result.assert_outcomes(passed=42)
