"""TLS and AUTH, proved with real clients over real TLS on loopback.

Every client here verifies the sink's certificate (``ssl_context()`` or the
``ca_path`` PEM): there is no CERT_NONE anywhere, and one test shows that a
client which does not trust the session CA is refused.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import imaplib
import logging
import os
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable, Coroutine
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import external
import pytest
import trustme
from conftest import slow_step_report
from cryptography.hazmat.primitives import serialization

from pytest_smtpsink import (
    AuthInfo,
    Mailbox,
    Session,
    SettingsError,
    SinkSettings,
    SMTPSink,
)
from pytest_smtpsink._faults import AUTH_MECHANISMS

Factory = Callable[..., Mailbox]

USERS = {"ann": "s3cr3t-pa55", "bob": "hunter2-xyz"}
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def run_client(coroutine: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` for an aiosmtplib client over TLS.

    aiosmtplib before 4.0 on Python 3.10 leaves the client's transport of a
    TLS connection unclosed when the loop closes mid-shutdown (measured with
    3.0.0 to 3.0.2; not with 4.0 or on 3.11). Its ResourceWarning would then
    fail whichever test the garbage collector happens to run in, so collect
    that garbage here, where the warning is expected. The socket is the
    client's own, not the sink's.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed", ResourceWarning)
        asyncio.run(coroutine)
        gc.collect()


def message(subject: str = "Hello", to: str = "ann@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hi.\n")
    return msg


def auth_with(client: smtplib.SMTP, mechanism: str, user: str, password: str) -> None:
    """AUTH with one named mechanism (``login()`` would choose for us)."""
    client.user, client.password = user, password
    method: Any = {
        "PLAIN": client.auth_plain,
        "LOGIN": client.auth_login,
        "CRAM-MD5": client.auth_cram_md5,
    }[mechanism]
    client.auth(mechanism, method)


def secrets_of(user: str, password: str) -> list[str]:
    """A password in every form a client may put on the wire."""
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    ]


def assert_no_secrets(session: Session, user: str, password: str) -> None:
    shown = repr(session) + "\n" + session.format_transcript()
    shown += "\n".join(e.line for e in session.transcript)
    for secret in secrets_of(user, password):
        assert secret not in shown


def auth_outcome(session: Session) -> int | None:
    """The final reply code of the (last) AUTH dialogue.

    The transcript pairs each client line with its replies, so LOGIN and
    CRAM-MD5 end on an ``auth-response`` exchange, not on the AUTH command.
    """
    dialogue = [
        e
        for e in session.transcript
        if e.command == "AUTH" or e.kind == "auth-response"
    ]
    return dialogue[-1].code


def ehlo_features(client: smtplib.SMTP) -> dict[str, str]:
    client.ehlo()
    return dict(client.esmtp_features)


# -- STARTTLS and implicit TLS with smtplib -------------------------------------


def test_starttls_with_smtplib(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls")
    assert sink.url == f"smtp://127.0.0.1:{sink.port}"
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert "starttls" in ehlo_features(client)
        client.starttls(context=sink.ssl_context())
        assert "starttls" not in ehlo_features(client)
        client.send_message(message("over STARTTLS"))

    msg = sink.assert_sent(subject="over STARTTLS")
    tls = msg.session.tls
    assert tls is not None
    assert tls.implicit is False
    assert tls.version in ("TLSv1.2", "TLSv1.3")
    assert tls.cipher
    assert msg.session.before("STARTTLS", "MAIL")
    assert msg.session.authenticated_as is None


def test_implicit_tls_with_smtp_ssl(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit")
    assert sink.url == f"smtps://127.0.0.1:{sink.port}"
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        assert "starttls" not in ehlo_features(client)
        client.send_message(message("over SMTPS"))

    tls = sink.assert_sent(subject="over SMTPS").session.tls
    assert tls is not None
    assert tls.implicit is True
    assert tls.version in ("TLSv1.2", "TLSv1.3")
    assert not sink.sessions[0].used("STARTTLS")


def test_tls_is_settled_when_the_client_call_returns(
    smtpsink_factory: Factory,
) -> None:
    """The client's starttls() returns when its side of the handshake is
    done, a moment before the server's: `Session.tls` must not be None then
    (it was in 9 of 10 runs before it waited for the server's side)."""
    starttls = smtpsink_factory(tls="starttls")
    implicit = smtpsink_factory(tls="implicit")
    context = starttls.ssl_context()
    for _ in range(200):
        with smtplib.SMTP(starttls.host, starttls.port, timeout=10) as client:
            client.ehlo()
            client.starttls(context=context)
            tls = starttls.sessions[-1].tls
            assert tls is not None
            assert tls.implicit is False
    for _ in range(20):  # no race: the greeting comes after the handshake
        with smtplib.SMTP_SSL(
            implicit.host, implicit.port, context=context, timeout=10
        ) as client:
            tls = implicit.sessions[-1].tls
            assert tls is not None
            assert tls.implicit is True


def test_certificate_names_localhost_too(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit")
    # server_hostname is "localhost" here, "127.0.0.1" everywhere else.
    with smtplib.SMTP_SSL("localhost", sink.port, context=sink.ssl_context()) as client:
        client.send_message(message("via localhost"))
    sink.assert_sent(subject="via localhost")


def test_certificate_has_a_common_name(smtpsink_factory: Factory) -> None:
    # fetchmail, mbsync and offlineimap's implicit TLS refuse a certificate
    # without one ("cannot get certificate common name"); Python reads only
    # the alternative names, so every test here passed.
    sink = smtpsink_factory(tls="implicit")
    with (
        socket.create_connection((sink.host, sink.port), timeout=10) as raw,
        sink.ssl_context().wrap_socket(raw, server_hostname=sink.host) as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    assert (("commonName", sink.host),) in certificate["subject"]
    assert ("IP Address", sink.host) in certificate["subjectAltName"]


def test_a_name_too_long_for_a_common_name_leaves_it_to_the_next() -> None:
    # X.509 caps a common name at 64 characters (cryptography refuses a
    # longer one): the first name that fits is the common name, and every
    # name stays an alternative name.
    from pytest_smtpsink._tls import authority

    long_name = "a" * 60 + ".mail.example"  # 73 characters
    server = authority().server_context(long_name, ("mail.example",))
    client = authority().client_context()
    # A handshake in memory: no socket, no thread.
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(to_client, to_server, server_hostname=long_name)
    theirs = server.wrap_bio(to_server, to_client, server_side=True)
    done = {ours: False, theirs: False}
    for _ in range(10):  # a TLS 1.3 handshake takes two turns
        for end in done:
            try:
                end.do_handshake()
                done[end] = True
            except ssl.SSLWantReadError:
                pass
    assert all(done.values())
    certificate = ours.getpeercert()
    assert certificate is not None
    assert (("commonName", "mail.example"),) in certificate["subject"]
    assert (("commonName", long_name),) not in certificate["subject"]
    assert ("DNS", long_name) in certificate["subjectAltName"]
    assert ("DNS", "mail.example") in certificate["subjectAltName"]


def test_plain_sink_has_no_tls(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        assert "starttls" not in ehlo_features(client)
        client.send_message(message())
    assert smtpsink.assert_sent().session.tls is None
    with pytest.raises(RuntimeError, match="tls=None"):
        smtpsink.ssl_context()
    with pytest.raises(RuntimeError, match="tls=None"):
        _ = smtpsink.ca_path


def test_client_that_does_not_trust_the_ca_is_refused(
    smtpsink_factory: Factory,
) -> None:
    """Verification is real: without the session CA the handshake fails."""
    sink = smtpsink_factory(tls="starttls")
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts nobody
    with (
        smtplib.SMTP(sink.host, sink.port) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=stranger)
    (session,) = sink.sessions
    assert session.used("STARTTLS")
    assert session.tls is None


def _failed_handshake(sink: Mailbox) -> Session:
    sink.wait_until(lambda: any(s.end is not None for s in sink.sessions))
    (session,) = sink.sessions
    return session


def _logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings and errors logged, but asyncio's reports of a slow step."""
    logged = (r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    return [message for message in logged if not slow_step_report(message)]


def test_starttls_rejected_by_the_client_is_a_tls_failed_session(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = smtpsink_factory(tls="starttls")
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, trusts nobody
    with (
        smtplib.SMTP(sink.host, sink.port) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=stranger)
    session = _failed_handshake(sink)
    # Before: end was "client-closed", and aiosmtpd logged an ERROR traceback.
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert session.tls_error.startswith("TLSV1_ALERT_UNKNOWN_CA: ")
    assert "the client rejected the sink's certificate" in session.tls_error
    assert "tls-failed (TLSV1_ALERT_UNKNOWN_CA" in repr(session)
    assert _logged_warnings(caplog) == []


def test_plain_client_on_an_implicit_tls_sink_is_a_tls_failed_session(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = smtpsink_factory(tls="implicit")
    with socket.create_connection((sink.host, sink.port), timeout=5) as raw:
        raw.sendall(b"EHLO plain.example\r\n")
        # The server gives up on the handshake and closes (an alert or EOF).
        while raw.recv(4096):
            pass
        local = raw.getsockname()[:2]
    session = _failed_handshake(sink)  # before: no session at all
    assert session.peer == local
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert "the client did not start TLS" in session.tls_error
    assert session.transcript == ()
    assert _logged_warnings(caplog) == []


@pytest.mark.parametrize(
    "settings",
    [
        # Served by aiosmtpd's handler task from the first byte (no commands
        # answered at once): on uvloop the ClientHello could come in before
        # the handler greeted, and was then ended before the greeting.
        {"tls": "starttls-required"},
        {"tls": "starttls-required", "event_loop": "asyncio"},
        {"fault": True},
    ],
    ids=["handler", "handler-asyncio", "fault-rule"],
)
def test_a_tls_client_on_a_plain_smtp_port_gets_the_greeting_first(
    smtpsink_factory: Factory, settings: dict[str, Any]
) -> None:
    fault = settings.pop("fault", False)
    sink = smtpsink_factory(**settings)
    if fault:
        sink.fail("RCPT", 550)
    for _ in range(5):
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            smtplib.SMTP_SSL(sink.host, sink.port, timeout=10)
    sink.wait_until(lambda: len([s for s in sink.sessions if s.end]) == 5)
    for session in sink.sessions:
        assert session.end == "tls-on-plain-port"
        greeting, handshake = session.transcript
        assert greeting.code == 220
        assert handshake.line.startswith("[a TLS handshake (ClientHello), ")
        assert handshake.replies == []
        assert session.tls_error is not None
        assert "or give the sink tls='implicit')" in session.tls_error
    # Only the first bytes of a connection: the same bytes after a command
    # are a line of garbage, answered as before.
    with socket.create_connection((sink.host, sink.port), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        raw.sendall(b"NOOP\r\n")
        assert reader.readline().startswith(b"250 ")
        raw.sendall(b"\x16\x03\x01\x02\x00\x01\r\n")
        assert reader.readline()[:1] == b"5"  # 500, or 530 before STARTTLS
        raw.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221 ")
        reader.close()
    sink.wait_until(lambda: len([s for s in sink.sessions if s.end]) == 6)
    assert sink.sessions[-1].end == "quit"


def test_implicit_tls_client_leaving_during_the_handshake(
    smtpsink_factory: Factory,
) -> None:
    sink = smtpsink_factory(tls="implicit")
    socket.create_connection((sink.host, sink.port), timeout=5).close()
    session = _failed_handshake(sink)
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert session.tls_error.startswith(
        "the client closed the connection during the handshake"
    )
    # Either a plain client that gave up waiting, or a TLS one that rejected
    # the certificate without an alert: both named.
    assert "a plain client on an implicit-TLS port" in session.tls_error
    assert session.tls_error.endswith(
        "imaplib.IMAP4_SSL; or a client that rejects the sink's certificate may "
        "close without saying why, as asyncio clients such as aiosmtplib do: does "
        "it trust the sink's CA? see ssl_context() and ca_path)"
    ), session.tls_error


def test_a_plain_smtp_client_on_an_implicit_tls_port_gets_a_hint(
    smtpsink_factory: Factory,
) -> None:
    # The likeliest mistake: smtplib.SMTP waits for a greeting, sends nothing
    # (so OpenSSL has nothing to call a wrong version), and gives up.
    sink = smtpsink_factory(tls="implicit")
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(sink.host, sink.port, timeout=0.5)
    session = _failed_handshake(sink)
    assert session.tls_error is not None
    assert "a plain client on an implicit-TLS port waits for a greeting" in (
        session.tls_error
    )
    assert "smtplib.SMTP_SSL" in session.tls_error


def test_a_plain_client_that_waits_past_the_handshake_limit_gets_the_hint(
    smtpsink_factory: Factory,
) -> None:
    # A plain client with a long timeout (smtplib's default is none) is cut
    # off at the handshake's 2 s: the reason had no hint, while one that
    # gave up sooner got it.
    sink = smtpsink_factory(tls="implicit")
    with socket.create_connection((sink.host, sink.port), timeout=30) as plain:
        session = _failed_handshake(sink)
        assert plain.recv(1) == b""  # closed, no greeting
    assert session.tls_error == (
        "the client did not finish the handshake within 2 s (a plain client on "
        "an implicit-TLS port waits for a greeting that never comes: connect "
        "with TLS from the start, e.g. smtplib.SMTP_SSL, poplib.POP3_SSL, "
        "imaplib.IMAP4_SSL)"
    )


def test_wrong_host_name_is_refused(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit")
    with (
        socket.create_connection((sink.host, sink.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match=r"mail\.example\.com"),
    ):
        sink.ssl_context().wrap_socket(raw, server_hostname="mail.example.com")


def test_each_call_gives_a_fresh_verifying_context(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls")
    first, second = sink.ssl_context(), sink.ssl_context()
    assert first is not second  # callers may change theirs safely
    assert first.verify_mode == ssl.CERT_REQUIRED
    assert first.check_hostname is True


def test_ca_path_with_ssl_cert_file(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps that build ``ssl.create_default_context()`` themselves trust the
    sink when SSL_CERT_FILE names ``ca_path`` (OpenSSL reads it each time a
    default context loads its verify paths)."""
    sink = smtpsink_factory(tls="starttls")
    assert Path(sink.ca_path).read_text().startswith("-----BEGIN CERTIFICATE-----")
    monkeypatch.setenv("SSL_CERT_FILE", sink.ca_path)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=ssl.create_default_context())
        client.send_message(message("default context"))
    sink.assert_sent(subject="default context")


def test_ca_path_is_written_again_if_removed(smtpsink_factory: Factory) -> None:
    # A /tmp cleaner during a long run: a client given the path must find it.
    sink = smtpsink_factory(tls="starttls")
    first = Path(sink.ca_path)
    pem = first.read_text()
    shutil.rmtree(first.parent)
    assert Path(sink.ca_path).read_text() == pem
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=ssl.create_default_context(cafile=sink.ca_path))
        client.send_message(message("after a cleaner"))
    sink.assert_sent(subject="after a cleaner")


def test_env_for_tls_sinks(smtpsink_factory: Factory, smtpsink: Mailbox) -> None:
    starttls = smtpsink_factory(tls="starttls-required")
    implicit = smtpsink_factory(tls="implicit")
    assert starttls.env() == {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(starttls.port),
        "SMTP_URL": f"smtp://127.0.0.1:{starttls.port}",
        "SMTP_TLS": "starttls",
        "SMTP_CA_FILE": starttls.ca_path,
    }
    env = implicit.env(prefix="MAIL_")
    assert env["MAIL_TLS"] == "implicit"
    assert env["MAIL_URL"] == f"smtps://127.0.0.1:{implicit.port}"
    assert Path(env["MAIL_CA_FILE"]).is_file()
    assert "SMTP_TLS" not in smtpsink.env()
    assert "SMTP_CA_FILE" not in smtpsink.env()
    with pytest.raises(TypeError, match="prefix must be a str such as 'SMTP_', got 3"):
        smtpsink.env(prefix=3)  # type: ignore[arg-type]


def test_env_drives_a_subprocess(smtpsink_factory: Factory) -> None:
    """The variables are enough for another process to send over verified TLS."""
    sink = smtpsink_factory(tls="implicit", auth=USERS)
    script = (
        "import os, smtplib, ssl\n"
        "ctx = ssl.create_default_context(cafile=os.environ['SMTP_CA_FILE'])\n"
        "with smtplib.SMTP_SSL(os.environ['SMTP_HOST'], int(os.environ['SMTP_PORT']),"
        " context=ctx) as c:\n"
        "    c.login('ann', os.environ['PW'])\n"
        "    c.sendmail('app@example.com', ['ann@example.com'],"
        " 'Subject: from a child\\r\\n\\r\\nhi\\r\\n')\n"
    )
    env = {**os.environ, **sink.env(), "PW": USERS["ann"]}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    msg = sink.assert_sent(subject="from a child")
    assert msg.session.authenticated_as == "ann"


# -- aiosmtplib ------------------------------------------------------------------


def test_aiosmtplib_start_tls(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls-required", auth=USERS, auth_required=True)

    async def main() -> None:
        client = aiosmtplib.SMTP(
            hostname=sink.host,
            port=sink.port,
            start_tls=True,
            tls_context=sink.ssl_context(),
        )
        async with client:
            await client.login("bob", USERS["bob"])
            await client.send_message(message("aiosmtplib STARTTLS"))

    run_client(main())
    session = sink.assert_sent(subject="aiosmtplib STARTTLS").session
    assert session.tls is not None
    assert session.tls.implicit is False
    assert session.authenticated_as == "bob"
    assert session.before("STARTTLS", "AUTH")
    assert_no_secrets(session, "bob", USERS["bob"])


def test_a_refused_starttls_is_not_tls_before_the_password(
    smtpsink_factory: Factory,
) -> None:
    # before("STARTTLS", "AUTH") was true when STARTTLS was refused and the
    # password then went in clear: the documented check for a client that
    # falls back to plain text passed on that very bug.
    sink = smtpsink_factory(tls="starttls", auth=USERS, auth_plaintext=True)
    sink.fail("STARTTLS", 454)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.docmd("STARTTLS")[0] == 454
        client.login("ann", USERS["ann"])  # in clear, after the refusal
        client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ann\0no").decode())
    session = sink.sessions[-1]
    assert session.tls is None
    assert session.used("STARTTLS")
    assert not session.before("STARTTLS", "AUTH")
    # An AUTH refused in the end does not count either; the accepted one does.
    assert session.before("AUTH", "QUIT")
    refused = smtpsink_factory(auth=USERS, auth_plaintext=True)
    with smtplib.SMTP(refused.host, refused.port) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("ann", "wrong")
    assert not refused.sessions[-1].before("AUTH", "QUIT")


def test_auth_any_still_needs_a_user_name(smtpsink_factory: Factory) -> None:
    # An empty PLAIN authcid (RFC 4616: it is not empty), or a CRAM-MD5
    # response without the space before its digest: no user, no login,
    # as on the read side (found by a fuzz run: both got 235).
    sink = smtpsink_factory(auth="any", auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert (
            client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0\0pw").decode())[0]
            == 535
        )
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 334
        assert client.docmd(base64.b64encode(b"nospace").decode())[0] == 535
        assert (
            client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ann\0pw").decode())[0]
            == 235
        )
    session = sink.sessions[-1]
    assert [(a.username, a.success) for a in session.auth_attempts] == [
        ("", False),
        ("", False),
        ("ann", True),
    ]


def test_a_user_name_that_is_not_utf8_is_recorded_as_its_bytes(
    smtpsink_factory: Factory,
) -> None:
    # AuthInfo.username had U+FFFD for the byte: a test could not tell which
    # was sent, where the transcript writes \xeb. No table user matches it.
    latin1 = base64.b64encode(b"\0zo\xeb\0s3cret").decode()
    for auth in ("any", {"zo\\xeb": "s3cret", "zo\ufffd": "s3cret"}):
        sink = smtpsink_factory(auth=auth, auth_plaintext=True)
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.ehlo()
            code = client.docmd("AUTH", f"PLAIN {latin1}")[0]
        (attempt,) = sink.sessions[-1].auth_attempts
        assert (attempt.username, attempt.success) == ("zo\\xeb", auth == "any")
        assert code == (235 if auth == "any" else 535)
        assert "s3cret" not in sink.sessions[-1].format_transcript()


def test_auth_any_still_needs_a_password(smtpsink_factory: Factory) -> None:
    # RFC 4616: PLAIN's password is not empty. POP3 and IMAP refused one
    # where SMTP said 235, also with auth="any".
    sink = smtpsink_factory(auth="any", auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        plain = base64.b64encode(b"\0ann\0").decode()
        assert client.docmd("AUTH", "PLAIN " + plain)[0] == 535
        assert client.docmd("AUTH", "LOGIN")[0] == 334
        assert client.docmd(base64.b64encode(b"ann").decode())[0] == 334
        assert client.docmd("")[0] == 535  # an empty password, base64
        # CRAM-MD5's digest shows an empty password too (smtplib's login
        # tries CRAM-MD5 first: login("ann", "") got 235).
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("ann", "")
    session = sink.sessions[-1]
    assert [(a.username, a.success) for a in session.auth_attempts][:3] == [
        ("ann", False),
        ("ann", False),
        ("ann", False),
    ]
    assert session.auth_attempts[2].mechanism == "CRAM-MD5"
    assert session.authenticated_as is None


def test_a_host_name_the_certificate_lacks_is_named_as_a_cause(
    smtpsink_factory: Factory,
) -> None:
    # Python's ssl answers a name mismatch with a "bad certificate" alert,
    # which the sink reported as a CA the client does not trust only.
    sink = smtpsink_factory(tls="starttls")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        client._host = "mail.example.com"  # type: ignore[attr-defined] # checked name
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=sink.ssl_context())
    session = _failed_handshake(sink)
    assert session.tls_error == (
        "SSLV3_ALERT_BAD_CERTIFICATE: the client rejected the sink's certificate "
        "(does it connect by a name the certificate holds, 127.0.0.1, ::1 or "
        "localhost for the test CA's? does it trust the sink's CA? see "
        "ssl_context() and ca_path)"
    )


def test_starttls_once_tls_is_up_is_refused(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # aiosmtpd answered 220 and nested a second handshake in the first: it
    # failed with a TypeError in asyncio's TLS layer, logged as an ERROR.
    sink = smtpsink_factory(tls="starttls")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=sink.ssl_context())
        assert client.docmd("STARTTLS") == (554, b"5.5.1 TLS already active")
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: x\r\n\r\n")
    session = sink.assert_sent().session
    assert session.tls is not None
    assert [e.code for e in session.replies_to("STARTTLS")] == [220, 554]
    assert _logged_warnings(caplog) == []
    # Over implicit TLS too: it got 454 "TLS not available".
    implicit = smtpsink_factory(tls="implicit")
    with smtplib.SMTP_SSL(
        implicit.host, implicit.port, context=implicit.ssl_context()
    ) as client:
        client.ehlo()
        assert client.docmd("STARTTLS") == (554, b"5.5.1 TLS already active")


def test_aiosmtplib_without_the_ca_gets_the_trust_hint(
    smtpsink_factory: Factory,
) -> None:
    # asyncio's TLS layer rejects the certificate and closes without an alert
    # (smtplib's says UNKNOWN_CA): the sink sees the connection go, and the
    # hint names the likeliest cause all the same.
    sink = smtpsink_factory(tls="starttls")

    async def main() -> None:
        client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=True)
        with pytest.raises(ssl.SSLCertVerificationError):
            async with client:
                pass

    run_client(main())
    session = _failed_handshake(sink)
    assert session.end == "tls-failed"
    assert session.tls_error == (
        "the client closed the connection during the handshake (a client that "
        "rejects the sink's certificate may close without saying why, as asyncio "
        "clients such as aiosmtplib do: does it trust the sink's CA? see "
        "ssl_context() and ca_path)"
    )
    with pytest.raises(AssertionError) as failure:
        sink.assert_sent()
    assert "does it trust the sink's CA? see ssl_context() and ca_path" in str(
        failure.value
    )


def test_aiosmtplib_use_tls(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit", auth="any")

    async def main() -> None:
        await aiosmtplib.send(
            message("aiosmtplib SMTPS"),
            hostname=sink.host,
            port=sink.port,
            use_tls=True,
            tls_context=sink.ssl_context(),
            username="carol",
            password="whatever-she-likes",
        )

    run_client(main())
    session = sink.assert_sent(subject="aiosmtplib SMTPS").session
    assert session.tls is not None
    assert session.tls.implicit is True
    assert session.authenticated_as == "carol"
    assert_no_secrets(session, "carol", "whatever-she-likes")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_aiosmtplib_each_mechanism(smtpsink_factory: Factory, mechanism: str) -> None:
    sink = smtpsink_factory(tls="implicit", auth=USERS)
    method = {"PLAIN": "auth_plain", "LOGIN": "auth_login", "CRAM-MD5": "auth_crammd5"}

    async def main() -> None:
        async with aiosmtplib.SMTP(
            hostname=sink.host,
            port=sink.port,
            use_tls=True,
            tls_context=sink.ssl_context(),
        ) as client:
            await client.ehlo()  # the auth_* methods do not greet by themselves
            await getattr(client, method[mechanism])("ann", USERS["ann"])
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failed:
                await client.auth_plain("ann", "again")  # already authenticated
            assert failed.value.code == 503

    run_client(main())
    (session,) = sink.sessions
    assert session.auth == AuthInfo(mechanism=mechanism, username="ann", success=True)


# -- curl --------------------------------------------------------------------------


def _curl_smtp() -> str:
    # CI installs curl (.ci/run): missing there, the test fails, not skips.
    curl = external.require("curl", "apt-get install curl")
    version = subprocess.run([curl, "-V"], capture_output=True, text=True, check=True)
    protocols = next(
        (
            line.split(":", 1)[1].split()
            for line in version.stdout.splitlines()
            if line.startswith("Protocols:")
        ),
        [],
    )
    if not {"smtp", "smtps"} <= set(protocols):
        external.missing("a curl with smtp and smtps", "apt-get install curl")
    return curl


@pytest.mark.parametrize(
    ("tls", "scheme", "extra"),
    [("implicit", "smtps", []), ("starttls-required", "smtp", ["--ssl-reqd"])],
)
def test_curl_with_cacert(
    smtpsink_factory: Factory, tmp_path: Path, tls: str, scheme: str, extra: list[str]
) -> None:
    curl = _curl_smtp()
    sink = smtpsink_factory(tls=tls, auth=USERS, auth_required=True)
    mail = tmp_path / "mail.eml"
    mail.write_bytes(
        b"From: app@example.com\r\nTo: ann@example.com\r\n"
        b"Subject: from curl\r\n\r\nHello from curl.\r\n"
    )
    subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--cacert",
            sink.ca_path,
            *extra,
            "--user",
            f"ann:{USERS['ann']}",
            "--login-options",
            "AUTH=LOGIN",
            "--mail-from",
            "app@example.com",
            "--mail-rcpt",
            "ann@example.com",
            "--upload-file",
            str(mail),
            f"{scheme}://127.0.0.1:{sink.port}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    msg = sink.assert_sent(subject="from curl", mail_from="app@example.com")
    assert msg.session.tls is not None
    assert msg.session.tls.implicit is (tls == "implicit")
    assert msg.session.auth == AuthInfo("LOGIN", "ann", True)
    assert_no_secrets(msg.session, "ann", USERS["ann"])


def test_curl_refuses_without_the_ca(smtpsink_factory: Factory, tmp_path: Path) -> None:
    curl = _curl_smtp()
    sink = smtpsink_factory(tls="implicit")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))  # valid, but not the sink's
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--max-time",
            "20",
            "--cacert",
            str(other_ca),
            "--mail-from",
            "a@example.com",
            "--mail-rcpt",
            "b@example.com",
            "--upload-file",
            os.devnull,
            f"smtps://127.0.0.1:{sink.port}",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 60  # "Peer certificate cannot be authenticated"
    sink.assert_nothing_sent()


# -- AUTH ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_success_with_table(smtpsink_factory: Factory, mechanism: str) -> None:
    sink = smtpsink_factory(tls="starttls", auth=USERS)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=sink.ssl_context())
        features = ehlo_features(client)
        # The fault rules refuse an AUTH match of any other (_faults).
        assert set(features["auth"].split()) == set(MECHANISMS) == set(AUTH_MECHANISMS)
        auth_with(client, mechanism, "ann", USERS["ann"])
        client.send_message(message(f"auth {mechanism}"))

    session = sink.assert_sent(subject=f"auth {mechanism}").session
    assert session.authenticated_as == "ann"
    assert session.auth == AuthInfo(mechanism=mechanism, username="ann", success=True)
    assert session.auth_attempts == (session.auth,)
    assert auth_outcome(session) == 235
    assert_no_secrets(session, "ann", USERS["ann"])


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize(
    ("user", "password"),
    [("ann", "wrong-password"), ("ann", USERS["bob"]), ("nobody", "s3cr3t-pa55")],
    ids=["wrong-password", "other-users-password", "unknown-user"],
)
def test_auth_failure_is_535_and_recorded(
    smtpsink_factory: Factory, mechanism: str, user: str, password: str
) -> None:
    sink = smtpsink_factory(tls="starttls", auth=USERS)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=sink.ssl_context())
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            auth_with(client, mechanism, user, password)
        assert refused.value.smtp_code == 535

    (session,) = sink.sessions
    assert session.auth == AuthInfo(mechanism=mechanism, username=user, success=False)
    assert session.auth_attempts == (session.auth,)
    assert session.authenticated_as is None
    assert auth_outcome(session) == 535
    assert_no_secrets(session, user, password)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_any_accepts_every_login(
    smtpsink_factory: Factory, mechanism: str
) -> None:
    sink = smtpsink_factory(tls="implicit", auth="any")
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        client.ehlo()
        auth_with(client, mechanism, "zoe", "anything-at-all")
        client.send_message(message())
    session = sink.assert_sent().session
    assert session.auth == AuthInfo(mechanism, "zoe", True)
    assert_no_secrets(session, "zoe", "anything-at-all")


def test_failed_then_successful_login(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit", auth=USERS, auth_required=True)
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            auth_with(client, "PLAIN", "bob", "guess")
        auth_with(client, "CRAM-MD5", "bob", USERS["bob"])
        client.send_message(message("second try"))
    session = sink.assert_sent(subject="second try").session
    assert session.auth_attempts == (
        AuthInfo("PLAIN", "bob", False),
        AuthInfo("CRAM-MD5", "bob", True),
    )
    assert session.authenticated_as == "bob"
    assert session.codes.count(535) == 1


def test_user_names_are_compared_exactly_over_smtp_pop3_and_imap(
    smtpsink_factory: Factory,
) -> None:
    """One rule for every login, as documented: a user name in another
    case is another user (many servers fold it; a test should see the
    application send the name it was configured with)."""
    sink = smtpsink_factory(auth={"Ann@Example.com": "pw"}, auth_plaintext=True)
    for user, smtp, pop3, imap in [
        ("Ann@Example.com", 235, b"+OK", "OK"),
        ("ann@example.com", 535, b"-ERR [AUTH]", "NO"),
    ]:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.ehlo()
            plain = base64.b64encode(f"\0{user}\0pw".encode()).decode()
            assert client.docmd("AUTH", f"PLAIN {plain}")[0] == smtp
        pop = poplib.POP3(sink.pop3.host, sink.pop3.port, timeout=10)
        try:
            pop.user(user)
            try:
                answer = pop.pass_("pw")
            except poplib.error_proto as refused:
                answer = refused.args[0]
            assert answer.startswith(pop3)
        finally:
            pop.quit()
        with imaplib.IMAP4(sink.imap.host, sink.imap.port, timeout=10) as reader:
            status: str
            try:
                status = reader.login(user, "pw")[0]
            except imaplib.IMAP4.error:
                status = "NO"
            assert status == imap
    assert [
        (session.protocol, attempt.username, attempt.success)
        for session in sink.sessions
        for attempt in session.auth_attempts
    ] == [
        ("SMTP", "Ann@Example.com", True),
        ("POP3", "Ann@Example.com", True),
        ("IMAP", "Ann@Example.com", True),
        ("SMTP", "ann@example.com", False),
        ("POP3", "ann@example.com", False),
        ("IMAP", "ann@example.com", False),
    ]


def test_auth_required_refuses_mail_before_auth(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls", auth=USERS, auth_required=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=sink.ssl_context())
        client.ehlo()
        code, reply = client.mail("app@example.com")
        assert code == 530
        assert b"Authentication required" in reply
        client.rset()
        client.login("ann", USERS["ann"])
        client.send_message(message("after auth"))
    session = sink.assert_sent(subject="after auth").session
    assert session.replies_to("MAIL")[0].code == 530
    assert session.replies_to("MAIL")[-1].code == 250


def test_auth_required_refuses_unauthenticated_sender(
    smtpsink_factory: Factory,
) -> None:
    sink = smtpsink_factory(tls="implicit", auth="any", auth_required=True)
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(message())
        assert refused.value.smtp_code == 530
    sink.assert_nothing_sent()


def test_auth_not_offered_before_tls(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls", auth=USERS)
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert "auth" not in ehlo_features(client)
        code, _ = client.docmd(
            "AUTH", "PLAIN " + base64.b64encode(b"\0ann\0x").decode()
        )
        assert code == 538  # encryption required
        client.starttls(context=sink.ssl_context())
        assert "auth" in ehlo_features(client)
    (session,) = sink.sessions
    assert session.auth_attempts == ()


@pytest.mark.parametrize("tls", [None, "starttls"])
def test_auth_on_a_sink_without_auth_says_it_is_not_enabled(
    smtpsink_factory: Factory, tls: str | None
) -> None:
    # aiosmtpd answered "538 Encryption required": no TLS would have helped.
    sink = smtpsink_factory(tls=tls)
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert "auth" not in ehlo_features(client)
        reply = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0ann\0x").decode())
        assert reply == (503, b"5.5.1 Error: authentication not enabled")
        assert client.docmd("NOOP")[0] == 250
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    assert "AUTH PLAIN ****" in sink.sessions[-1].format_transcript()


def test_auth_without_tls_or_plaintext_is_refused_up_front() -> None:
    # It could never be used: AUTH is offered only over TLS by default.
    with pytest.raises(SettingsError, match=r"auth: AUTH is only offered over TLS"):
        SinkSettings(auth=USERS)


@pytest.mark.parametrize(
    "users",
    [
        ("ANN@example.com", "ann@example.com"),
        ("ann@xn--strae-oqa.de", "ann@straße.de"),
        ('"ann"@example.com', "ann@example.com"),
    ],
)
def test_two_users_of_one_mailbox_are_refused_up_front(users: tuple[str, str]) -> None:
    # Only the standalone sink refused them; the marker and the factory took
    # the table, and each password opened the one POP3 and IMAP mailbox.
    table = dict.fromkeys(users, "pw")
    expected = (
        f"auth: users {users[0]!r} and {users[1]!r} name one mailbox (mailbox "
        "names compare without regard to case, needless quotes or the domain's "
        "spelling): give it once"
    )
    with pytest.raises(SettingsError, match=f"^{re.escape(expected)}$"):
        SinkSettings(auth=table, tls="starttls")


def test_two_users_of_one_mailbox_by_its_delimiter_are_refused_up_front() -> None:
    # With recipient_delimiter="+", ann+a@ logged in to ann@'s mailbox, and
    # so did ann+b@ with the other password.
    table = {"ann+a@example.com": "pw-one", "ann+b@example.com": "pw-two"}
    with pytest.raises(SettingsError, match=r"^auth: users 'ann\+a@example\.com' and"):
        SinkSettings(auth=table, tls="starttls", recipient_delimiter="+")
    assert SinkSettings(auth=table, tls="starttls").auth == table


def test_a_token_user_of_one_mailbox_is_not_named_in_the_refusal() -> None:
    # A service's token used as user name and password, given twice in
    # two cases: the refusal printed it, where the settings' repr shows
    # such a user as '****'.
    table = {"tok-A1b2": "tok-A1b2", "TOK-A1B2": "x"}
    with pytest.raises(SettingsError) as refused:
        SinkSettings(auth=table, tls="starttls")
    assert "a1b2" not in str(refused.value).lower()
    assert str(refused.value).startswith("auth: users '****' and '****' name one")


def test_auth_plaintext_allows_auth_without_tls(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(auth=USERS, auth_plaintext=True, auth_required=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.has_extn("auth")
        client.login("ann", USERS["ann"])
        client.send_message(message("plain text login"))
    session = sink.assert_sent(subject="plain text login").session
    assert session.tls is None
    assert session.authenticated_as == "ann"
    assert_no_secrets(session, "ann", USERS["ann"])


def test_starttls_forgets_a_plain_text_login(smtpsink_factory: Factory) -> None:
    """RFC 3207: after STARTTLS the server discards what it knew, AUTH too."""
    sink = smtpsink_factory(
        tls="starttls", auth=USERS, auth_plaintext=True, auth_required=True
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        client.login("ann", USERS["ann"])
        client.starttls(context=sink.ssl_context())
        client.ehlo()
        assert client.mail("app@example.com")[0] == 530
    (session,) = sink.sessions
    assert session.authenticated_as is None
    assert session.auth is None
    assert [a.success for a in session.auth_attempts] == [True]
    # Not logged in, and no login failed: the session line says no more.
    assert " auth=None messages=" in session.summary()


def test_a_session_shows_tls_only_with_its_plain_text_login_forgotten(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TLS was published (waking who waited for it) before the login was
    # forgotten: a reader saw TLS and the plain-text login together.
    from pytest_smtpsink._session import Session

    seen: list[str | None] = []
    tls_started = Session._tls_started

    def watched(self: Session, info: object) -> None:
        seen.append(self.authenticated_as)
        tls_started(self, info)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "_tls_started", watched)
    sink = smtpsink_factory(tls="starttls", auth=USERS, auth_plaintext=True)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        client.login("ann", USERS["ann"])
        client.starttls(context=sink.ssl_context())
    # At the handshake (and at the end, which wakes readers again).
    assert seen[0] is None, seen


def test_no_auth_setting_means_no_auth(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit")
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        assert "auth" not in ehlo_features(client)
        assert client.docmd("AUTH", "PLAIN") == (
            503,
            b"5.5.1 Error: authentication not enabled",
        )
    assert sink.sessions[0].auth is None


def test_auth_aborted_with_star(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit", auth=USERS)
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        client.ehlo()
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 334
        assert client.docmd("*")[0] == 501
    (session,) = sink.sessions
    assert session.authenticated_as is None
    assert [e.line for e in session.transcript if e.kind == "auth-response"] == ["*"]


def test_secrets_masked_in_transcript(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="implicit", auth=USERS)
    with smtplib.SMTP_SSL(sink.host, sink.port, context=sink.ssl_context()) as client:
        client.ehlo()
        auth_with(client, "LOGIN", "ann", USERS["ann"])
    (session,) = sink.sessions
    auth = [
        e
        for e in session.transcript
        if e.command == "AUTH" or e.kind == "auth-response"
    ]
    # "AUTH LOGIN <user>" then the password line: both masked.
    assert [e.line for e in auth] == ["AUTH LOGIN ****", "****"]
    assert_no_secrets(session, "ann", USERS["ann"])
    assert USERS["ann"] not in repr(sink.sink)
    assert USERS["ann"] not in repr(sink.settings)


# -- STARTTLS required -------------------------------------------------------------


def test_starttls_required_refuses_mail_before_starttls(
    smtpsink_factory: Factory,
) -> None:
    sink = smtpsink_factory(tls="starttls-required")
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.ehlo()
        assert client.noop()[0] == 250
        code, reply = client.mail("app@example.com")
        assert code == 530
        assert b"STARTTLS" in reply
        client.starttls(context=sink.ssl_context())
        client.send_message(message("after STARTTLS"))
    session = sink.assert_sent(subject="after STARTTLS").session
    assert session.replies_to("MAIL")[0].code == 530
    assert session.tls is not None


def test_starttls_required_sender_without_tls_fails(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls-required")
    with smtplib.SMTP(sink.host, sink.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(message())
        assert refused.value.smtp_code == 530
    sink.assert_nothing_sent()
    assert sink.sessions[0].tls is None


# -- several sinks, the factory and the marker ----------------------------------------


def test_two_sinks_with_different_settings(
    smtpsink_factory: Factory, smtpsink: Mailbox
) -> None:
    submission = smtpsink_factory(
        tls="starttls-required", auth=USERS, auth_required=True
    )
    smtps = smtpsink_factory(tls="implicit")
    assert len({submission.port, smtps.port, smtpsink.port}) == 3

    with smtplib.SMTP(submission.host, submission.port) as client:
        client.starttls(context=submission.ssl_context())
        client.login("ann", USERS["ann"])
        client.send_message(message("to submission"))
    with smtplib.SMTP_SSL(
        smtps.host, smtps.port, context=smtps.ssl_context()
    ) as client:
        client.send_message(message("to smtps"))

    submission.assert_sent(1, subject="to submission")
    smtps.assert_sent(1, subject="to smtps")
    smtps.assert_not_sent(subject="to submission")
    smtpsink.assert_nothing_sent()
    # Both TLS sinks share the session CA: one context trusts both.
    assert submission.ca_path == smtps.ca_path


def test_same_settings_share_one_server(smtpsink_factory: Factory) -> None:
    first = smtpsink_factory(tls="starttls", auth={"ann": "pw"})
    with smtplib.SMTP(first.host, first.port) as client:
        client.send_message(message())
    second = smtpsink_factory(auth={"ann": "pw"}, tls="starttls")
    assert second.sink is first.sink
    second.assert_nothing_sent()  # a new view starts empty
    assert len(first.messages) == 1


@pytest.mark.smtpsink(tls="starttls", auth=USERS)
def test_marker_gives_the_fixture_a_tls_sink(smtpsink: Mailbox) -> None:
    assert smtpsink.settings.tls == "starttls"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.starttls(context=smtpsink.ssl_context())
        client.login("bob", USERS["bob"])
        client.send_message(message("marked"))
    session = smtpsink.assert_sent(subject="marked").session
    assert session.tls is not None
    assert session.authenticated_as == "bob"


@pytest.mark.smtpsink(tls="implicit")
class TestMarkerOnAClass:
    def test_implicit(self, smtpsink: Mailbox) -> None:
        assert smtpsink.url.startswith("smtps://")
        with smtplib.SMTP_SSL(
            smtpsink.host, smtpsink.port, context=smtpsink.ssl_context()
        ) as client:
            client.noop()
        assert smtpsink.sessions[0].tls is not None


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"tls": "bogus"}, "tls"),
        ({"tls": True}, "tls"),
        ({"auth": "everyone"}, "auth"),
        ({"auth": {}}, "auth"),
        ({"auth": {"ann": 1234}}, "auth"),
        ({"auth_required": True}, "auth_required"),
        ({"auth_plaintext": "yes"}, "auth_plaintext"),
        ({"tsl": "starttls"}, "tsl"),
    ],
)
def test_factory_bad_settings_name_the_setting(
    smtpsink_factory: Factory, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(pytest.fail.Exception, match=rf"smtpsink_factory\(\).*{named}"):
        smtpsink_factory(**settings)


def test_marker_with_bad_tls_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.smtpsink(tls="bogus")
        def test_it(smtpsink):
            pass

        @pytest.mark.smtpsink(auth_required=True)
        def test_auth_required_alone(smtpsink):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.smtpsink: tls: must be None or one of*got 'bogus'*",
            "*@pytest.mark.smtpsink: auth_required: needs auth=*",
        ]
    )


def test_xdist_with_tls_sinks(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.parametrize("tls", ["starttls-required", "implicit"])
        def test_send(smtpsink_factory, tls, n):
            sink = smtpsink_factory(tls=tls, auth={"ann": "pw"}, auth_required=True)
            context = sink.ssl_context()
            if tls == "implicit":
                client = smtplib.SMTP_SSL(sink.host, sink.port, context=context)
            else:
                client = smtplib.SMTP(sink.host, sink.port)
                client.starttls(context=context)
            with client:
                client.login("ann", "pw")
                client.sendmail("a@example.com", ["b@example.com"],
                                f"Subject: {tls} {n}\\r\\n\\r\\nhi\\r\\n")
            msg = sink.assert_sent(1)
            assert msg.subject == f"{tls} {n}"
            assert msg.session.tls.implicit is (tls == "implicit")
            assert msg.session.authenticated_as == "ann"
        """
    )
    result = pytester.runpytest("-n", "2", "-W", "error")
    result.assert_outcomes(passed=12)


# -- all interfaces, and the user's own certificate ------------------------------------


def test_sink_on_all_interfaces_gives_clients_a_verifiable_address() -> None:
    with SMTPSink(host="0.0.0.0", allow_remote=True, tls="starttls") as sink:
        # Before: host and env() gave 0.0.0.0, which no certificate names.
        assert sink.host == "127.0.0.1"
        assert sink.bind_host == "0.0.0.0"
        assert sink.env()["SMTP_HOST"] == "127.0.0.1"
        assert sink.url == f"smtp://127.0.0.1:{sink.port}"
        with smtplib.SMTP(sink.env()["SMTP_HOST"], sink.port, timeout=10) as client:
            client.starttls(context=sink.ssl_context())  # verifies 127.0.0.1
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\n.")
        assert sink.wait_for(timeout=10).session.tls is not None


def test_all_interfaces_by_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib, pytest

@pytest.mark.smtpsink(tls="implicit")
def test_verified(smtpsink):
    assert smtpsink.host == "127.0.0.1" and smtpsink.sink.bind_host == "0.0.0.0"
    env = smtpsink.env()
    with smtplib.SMTP_SSL(
        env["SMTP_HOST"], int(env["SMTP_PORT"]), context=smtpsink.ssl_context()
    ) as client:
        client.noop()
"""
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--smtpsink-host=0.0.0.0", "--smtpsink-allow-remote"
    )
    result.assert_outcomes(passed=1)


@pytest.fixture(scope="module")
def own_ca() -> trustme.CA:
    """A CA that is not the sink's: the user's own."""
    return trustme.CA(organization_name="The user's own CA")


@pytest.fixture
def own_files(own_ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    leaf = own_ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _only_trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


def test_own_certificate_files(
    smtpsink_factory: Factory, own_ca: trustme.CA, own_files: tuple[Path, Path]
) -> None:
    cert, key = own_files
    sink = smtpsink_factory(tls="starttls", tls_cert=cert, tls_key=str(key))
    assert sink.settings.tls_cert == str(cert)  # a Path is taken too
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.starttls(context=_only_trusting(own_ca))
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\n.")
    assert sink.wait_for(timeout=10).session.tls is not None
    # The sink's own CA does not vouch for this certificate...
    sink_ca = smtpsink_factory(tls="starttls").ssl_context()
    with (
        smtplib.SMTP(sink.host, sink.port, timeout=10) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=sink_ca)
    # ...so the helpers for it say so rather than mislead.
    with pytest.raises(RuntimeError, match=r"serves your certificate \(tls_cert=\)"):
        sink.ssl_context()
    assert "SMTP_CA_FILE" not in sink.env()


def test_own_certificate_and_key_in_one_file(
    own_ca: trustme.CA, own_files: tuple[Path, Path], tmp_path: Path
) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(own_files[1].read_bytes() + own_files[0].read_bytes())
    with (
        SMTPSink(tls="implicit", tls_cert=str(both)) as sink,
        smtplib.SMTP_SSL(
            sink.host, sink.port, context=_only_trusting(own_ca), timeout=10
        ) as client,
    ):
        assert client.noop()[0] == 250


def test_own_ssl_context(smtpsink_factory: Factory, own_ca: trustme.CA) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own_ca.issue_cert("127.0.0.1").configure_cert(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    sink = smtpsink_factory(tls="implicit", tls_context=context)
    with smtplib.SMTP_SSL(
        sink.host, sink.port, context=_only_trusting(own_ca), timeout=10
    ) as client:
        client.noop()
    sink.wait_until(lambda: sink.sessions and sink.sessions[-1].tls is not None)
    tls = sink.sessions[-1].tls
    assert tls is not None
    assert tls.version == "TLSv1.3"


def _tls13_only(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def test_own_certificate_is_validated_up_front(
    own_ca: trustme.CA, own_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = own_files
    other_key = tmp_path / "other.key"
    own_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert": str(tmp_path / "missing.pem")}, r"^tls_cert: no such file"),
        # Said "no such file" of a directory there is.
        ({"tls_cert": str(tmp_path)}, r"^tls_cert: a directory, not a file: "),
        ({"tls_cert": str(cert), "tls_key": str(tmp_path / "x")}, r"^tls_key: no such"),
        (
            {"tls_cert": str(cert), "tls_key": str(other_key)},
            r"^tls_key: the private key in .* does not match the certificate",
        ),
        ({"tls_cert": str(cert)}, r"^tls_cert: cannot load .*\(no tls_key given"),
        ({"tls_cert": str(not_pem), "tls_key": str(key)}, r"^tls_key: cannot load"),
        ({"tls_key": str(key)}, r"^tls_key: is the key of tls_cert"),
        (
            {"tls_context": ssl.create_default_context()},
            r"^tls_context: is a client context",
        ),
        ({"tls_context": "server.pem"}, r"^tls_context: must be None or an ssl"),
        # Before: taken, then every handshake failed (NO_SHARED_CIPHER).
        (
            {"tls_context": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)},
            r"^tls_context: has no certificate .*load_cert_chain\(",
        ),
        # Limited to TLS 1.3, OpenSSL finds it no version to speak instead.
        (
            {"tls_context": _tls13_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))},
            r"^tls_context: has no certificate .*UNSUPPORTED_PROTOCOL when "
            r"limited to TLS 1.3",
        ),
        (
            {"tls_context": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "tls_cert": cert},
            r"^tls_context: give either",
        ),
    ]
    for changes, expected in cases:
        with pytest.raises(SettingsError, match=expected):
            SinkSettings(tls="starttls", **changes)
    with pytest.raises(SettingsError, match=r"^tls_cert: is for TLS sinks"):
        SinkSettings(tls_cert=str(cert), tls_key=str(key))


def test_own_certificate_by_option_for_every_tls_sink(
    pytester: pytest.Pytester, own_files: tuple[Path, Path], own_ca: trustme.CA
) -> None:
    ca_file = pytester.path / "own-ca.pem"
    own_ca.cert_pem.write_to_path(str(ca_file))
    pytester.makeini(
        f"""
[pytest]
smtpsink_tls_cert = {own_files[0]}
smtpsink_tls_key = {own_files[1]}
"""
    )
    pytester.makepyfile(
        f"""
import smtplib, ssl, pytest

def test_plain_default_sink(smtpsink):
    assert smtpsink.settings.tls is None and smtpsink.settings.tls_cert is None

@pytest.mark.smtpsink(tls="starttls")
def test_tls_sink_serves_the_own_certificate(smtpsink):
    context = ssl.create_default_context(cafile={str(ca_file)!r})
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.starttls(context=context)
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", f"--smtpsink-tls-key={pytester.path / 'nope.pem'}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--smtpsink-tls-key: no such file: *nope.pem*"])


def test_relative_tls_files_in_the_ini_file_are_taken_from_its_directory(
    pytester: pytest.Pytester,
    own_files: tuple[Path, Path],
    own_ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Taken from the current directory, a run started in tests/ stopped with
    # "no such file", as pytest's own path options do not.
    (pytester.path / "certs").mkdir()
    for own, name in zip(own_files, ("cert.pem", "key.pem"), strict=True):
        (pytester.path / "certs" / name).write_bytes(own.read_bytes())
    ca_file = pytester.path / "own-ca.pem"
    own_ca.cert_pem.write_to_path(str(ca_file))
    pytester.makeini(
        "[pytest]\nsmtpsink_tls_cert = certs/cert.pem\n"
        "smtpsink_tls_key = certs/key.pem\n"
    )
    tests = pytester.mkdir("tests")
    (tests / "test_tls.py").write_text(
        f"""
import smtplib, ssl, pytest

@pytest.mark.smtpsink(tls="starttls")
def test_tls_sink_serves_the_own_certificate(smtpsink):
    context = ssl.create_default_context(cafile={str(ca_file)!r})
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.starttls(context=context)
"""
    )
    monkeypatch.chdir(tests)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_tls_file_options_errors_name_the_options(
    pytester: pytest.Pytester, own_files: tuple[Path, Path]
) -> None:
    """The errors name --smtpsink-tls-cert and --smtpsink-tls-key (or their
    ini keys), not the API's tls_cert=, tls_key= or tls_context=, which the
    user never wrote."""
    cert, key = own_files
    locked = pytester.path / "locked.key"
    locked.write_bytes(
        serialization.load_pem_private_key(
            key.read_bytes(), password=None
        ).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"not-given"),
        )
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    cases = [
        (
            [f"--smtpsink-tls-key={key}"],
            "ERROR: --smtpsink-tls-key: is the key of --smtpsink-tls-cert; give "
            "--smtpsink-tls-cert too (ini: smtpsink_tls_cert)",
        ),
        (
            [f"--smtpsink-tls-cert={cert}"],
            "ERROR: --smtpsink-tls-cert: cannot load the certificate * and its "
            "key (no --smtpsink-tls-key given: the certificate file must hold it): *",
        ),
        (
            [f"--smtpsink-tls-cert={cert}", f"--smtpsink-tls-key={locked}"],
            "ERROR: --smtpsink-tls-key: the private key is encrypted; give an "
            "unencrypted key",
        ),
    ]
    for args, expected in cases:
        result = pytester.runpytest("-p", "no:cacheprovider", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([expected])
    pytester.makeini(f"[pytest]\nsmtpsink_tls_key = {key}\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: smtpsink_tls_key (ini): is the key of --smtpsink-tls-cert; "
            "give --smtpsink-tls-cert too (ini: smtpsink_tls_cert)"
        ]
    )


@pytest.mark.parametrize("client_leaves", [True, False], ids=["closes", "stalls"])
def test_starttls_never_finished_is_a_tls_failed_session(
    smtpsink_factory: Factory, client_leaves: bool
) -> None:
    # A client that stalled after the 220 held its session open for
    # asyncio's 60 s (or until the sink stopped, then "server-closed" with
    # no tls_error); the sink's other handshakes have a 2 s limit.
    sink = smtpsink_factory(tls="starttls")
    sock = socket.create_connection((sink.host, sink.port), timeout=30)
    with sock, sock.makefile("rb") as replies:
        replies.readline()
        sock.sendall(b"EHLO client.test\r\nSTARTTLS\r\n")
        while replies.readline()[3:4] == b"-":
            pass
        assert replies.readline().startswith(b"220 ")
        if client_leaves:
            sock.shutdown(socket.SHUT_WR)
        sink.wait_until(lambda: sink.sessions[-1].end is not None, timeout=30)
    (session,) = sink.sessions
    assert session.end == "tls-failed"
    assert session.tls_error is not None
    assert "handshake" in session.tls_error


def test_a_tls_context_without_a_certificate_is_refused_up_front(
    pytester: pytest.Pytester,
) -> None:
    # Before: the sink started, and each session's tls_error said so only
    # after the client's handshake had failed.
    pytester.makepyfile(
        """
import ssl, pytest

@pytest.mark.smtpsink(
    tls="starttls", tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
)
def test_marker(smtpsink):
    pass

def test_factory(smtpsink_factory):
    smtpsink_factory(
        tls="implicit", tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    )
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*tls_context: has no certificate*NO_SHARED_CIPHER*load_cert_chain*"] * 2,
        consecutive=False,
    )


def _client_with_certificate(ca: trustme.CA) -> ssl.SSLContext:
    context = _only_trusting(ca)
    ca.issue_cert("client.example").configure_cert(context)
    return context


def test_contexts_the_probe_handshake_cannot_complete_are_taken(
    smtpsink_factory: Factory, own_ca: trustme.CA
) -> None:
    """Only a missing certificate is refused: a context that requires client
    certificates (the probe has none) or that the probe cannot judge (an SNI
    callback that picks the certificate) serves real clients as before."""
    requiring = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own_ca.issue_cert("127.0.0.1").configure_cert(requiring)
    own_ca.configure_trust(requiring)
    requiring.verify_mode = ssl.CERT_REQUIRED
    with_certificate = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own_ca.issue_cert("127.0.0.1").configure_cert(with_certificate)
    by_name = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate itself

    def pick(tls: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        tls.context = with_certificate

    by_name.sni_callback = pick
    for context in (by_name, requiring):
        sink = smtpsink_factory(tls="implicit", tls_context=context)
        with smtplib.SMTP_SSL(
            sink.host,
            sink.port,
            context=_client_with_certificate(own_ca),
            timeout=10,
        ) as client:
            assert client.noop()[0] == 250
    # And the client certificate is still required.
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPException)):
        smtplib.SMTP_SSL(
            sink.host, sink.port, context=_only_trusting(own_ca), timeout=10
        ).quit()


def test_a_tls_context_without_a_certificate_is_named_as_a_cause(
    smtpsink_factory: Factory,
) -> None:
    # A context with an SNI callback is not probed up front (the callback
    # may pick the certificate per name); one that picks none fails every
    # handshake, and tls_error blamed the client alone.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda tls, name, context: None
    sink = smtpsink_factory(tls="starttls", tls_context=context)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    with (
        smtplib.SMTP(sink.host, sink.port) as client,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        client.starttls(context=client_context)
    sink.wait_until(lambda: bool(sink.sessions) and sink.sessions[-1].end is not None)
    (session,) = sink.sessions
    assert session.tls_error is not None
    assert "no certificate in the sink's tls_context" in session.tls_error


def test_commands_sent_before_the_starttls_handshake_are_discarded_and_logged(
    smtpsink_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 3207: what the client sent after STARTTLS, before the handshake,
    is discarded (it must not run as if sent over TLS). On aiosmtpd 1.4.5
    (the oldest supported; tox's "oldest" env) it ran after the handshake
    (CVE-2024-34083); 1.4.6 discarded it without a word. Now the sink
    discards it itself, and a warning says how much (never what: it may
    hold a password)."""
    sink = smtpsink_factory(tls="starttls")
    caplog.set_level(logging.WARNING, logger="pytest_smtpsink")
    sock = socket.create_connection((sink.host, sink.port), timeout=30)
    with sock, sock.makefile("rb") as replies:
        replies.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while replies.readline()[3:4] == b"-":
            pass
        smuggled = b"MAIL FROM:<evil@example.com>\r\n"
        sock.sendall(b"STARTTLS\r\n" + smuggled)
        assert replies.readline().startswith(b"220 ")
        with (
            sink.ssl_context().wrap_socket(sock, server_hostname=sink.host) as tls,
            tls.makefile("rb") as secure,
        ):
            tls.sendall(b"EHLO client.test\r\nMAIL FROM:<app@example.com>\r\n")
            while secure.readline()[3:4] == b"-":
                pass
            # The MAIL sent over TLS is the only one: no "nested MAIL" 503.
            assert secure.readline().startswith(b"250 ")
            tls.sendall(b"QUIT\r\n")
            assert secure.readline().startswith(b"221 ")
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert "evil" not in session.format_transcript()
    # In the transcript too: a test of the client sees that it did not wait.
    notes = [e for e in session.transcript if "before the TLS handshake" in e.line]
    assert [(e.line, e.command) for e in notes] == [
        (
            f"[not run: {len(smuggled)} octets sent after STARTTLS before the TLS "
            "handshake, discarded unread]",
            None,
        )
    ]
    commands = [e.command for e in session.transcript]
    # Right after the STARTTLS exchange (its 220 on it), before the EHLO over TLS.
    at = commands.index("STARTTLS")
    assert session.transcript[at + 1] is notes[0]
    assert session.transcript[at].replies[0].startswith("220 ")
    assert commands[at + 2] == "EHLO"
    (record,) = [r for r in caplog.records if "STARTTLS" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert f"sent {len(smuggled)} byte(s) after STARTTLS before the TLS handshake" in (
        record.getMessage()
    )
    assert "evil" not in record.getMessage()


def _starttls_naming(sink: SMTPSink, name: str) -> None:
    """STARTTLS over loopback, verifying the certificate for ``name``, as
    a client of another machine that names the sink so would."""
    with socket.create_connection(("127.0.0.1", sink.port), timeout=30) as raw:
        with raw.makefile("rb") as replies:
            assert replies.readline().startswith(b"220")
            raw.sendall(b"EHLO client.example\r\n")
            while not replies.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert replies.readline().startswith(b"220")
        context = ssl.create_default_context(cafile=sink.ca_path)
        with context.wrap_socket(raw, server_hostname=name):
            pass  # the handshake verified the name


def test_a_sink_the_network_reaches_has_a_certificate_for_its_names() -> None:
    # With allow_remote (a container, a machine of the network) the
    # throwaway certificate covered loopback only: a client that named the
    # sink by its hostname setting (a compose service) or the machine's
    # name failed to verify it.
    with SMTPSink(
        host="0.0.0.0", allow_remote=True, tls="starttls", hostname="mail.compose.test"
    ) as sink:
        for name in ("mail.compose.test", socket.gethostname(), "127.0.0.1"):
            _starttls_naming(sink, name)
    # On loopback alone, no other name.
    with (
        SMTPSink(tls="starttls", hostname="mail.compose.test") as sink,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        _starttls_naming(sink, "mail.compose.test")


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_reader_left_open_over_tls_does_not_hold_the_sinks_stop(
    pytester: pytest.Pytester, protocol: str, tls: str
) -> None:
    # A POP3 or IMAP client over TLS that the application never logged out
    # when the sink stopped: the stop's TLS close waited for the client's
    # close_notify, which it never sent; the transport stayed open, a
    # ResourceWarning that -W error made a hang after "2 passed".
    connect = {
        ("imap", "starttls"): "client = imaplib.IMAP4(endpoint.host, endpoint.port)\n"
        "    client.starttls(ssl_context=endpoint.ssl_context())",
        (
            "imap",
            "implicit",
        ): "client = imaplib.IMAP4_SSL(endpoint.host, endpoint.port, "
        "ssl_context=endpoint.ssl_context())",
        ("pop3", "starttls"): "client = poplib.POP3(endpoint.host, endpoint.port)\n"
        "    client.stls(context=endpoint.ssl_context())",
        ("pop3", "implicit"): "client = poplib.POP3_SSL(endpoint.host, endpoint.port, "
        "context=endpoint.ssl_context())",
    }[(protocol, tls)]
    pytester.makepyfile(
        f"""
import atexit
import imaplib
import poplib

import pytest

@pytest.mark.smtpsink(tls={tls!r})
def test_reader_left_open(smtpsink):
    endpoint = smtpsink.{protocol}
    {connect}
    # Never logged out, and closed only at exit, once the sink has stopped:
    # its own ResourceWarning (dev mode) is not the sink's.
    atexit.register(client.sock.close)

def test_next(smtpsink):
    pass
"""
    )
    result = pytester.runpytest_subprocess(
        "-W", "error", "-p", "no:cacheprovider", timeout=120
    )
    result.assert_outcomes(passed=2)
    assert "ResourceWarning" not in result.stdout.str() + result.stderr.str()
