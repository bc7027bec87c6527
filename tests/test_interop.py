"""Real clients that rely on what real servers do: bare-LF content as Postfix
takes it, PIPELINING (RFC 2920) and DSN (RFC 3461)."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, BinaryIO

import external
import pytest
from conftest import Factory

from pytest_smtpsink import Mailbox, RecipientDSN
from pytest_smtpsink._message import BARE_LF_DEFECT

TIMEOUT = 20


def lf_message(subject: str) -> EmailMessage:
    """About 5 KB over many short lines: ``as_bytes()`` ends them with LF."""
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = subject
    message.set_content("".join(f"line {i}: {'x' * 40}\n" for i in range(100)))
    return message


# -- bare LF ------------------------------------------------------------------------


def test_bare_lf_message_from_smtplib_as_bytes(smtpsink: Mailbox) -> None:
    """smtplib sends bytes as they are: ``msg.as_bytes()`` has bare LFs and
    no CRLF before the final one smtplib adds. It was refused with 500 Line
    too long as soon as it passed 1,000 bytes."""
    message = lf_message("bare LF")
    data = message.as_bytes()
    assert len(data) > 5000
    assert b"\r\n" not in data
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        assert client.sendmail("app@example.com", ["ann@example.com"], data) == {}
    received = smtpsink.assert_sent(subject="bare LF")
    assert received.raw == data + b"\r\n"  # kept as sent; smtplib ends it
    # The text as written (the last line gains smtplib's CRLF).
    assert (received.text or "").startswith(message.get_content())
    assert BARE_LF_DEFECT in received.defects


def test_bare_lf_file_from_curl(smtpsink: Mailbox, tmp_path: Path) -> None:
    curl = external.require("curl", "apt-get install curl")
    upload = tmp_path / "message.txt"
    data = lf_message("curl LF file").as_bytes()
    upload.write_bytes(data)
    subprocess.run(
        [
            *(curl, "--silent", "--show-error"),
            *("--url", f"smtp://{smtpsink.host}:{smtpsink.port}"),
            *("--mail-from", "app@example.com", "--mail-rcpt", "ann@example.com"),
            *("--upload-file", str(upload)),
        ],
        check=True,
        timeout=TIMEOUT,
    )
    received = smtpsink.assert_sent(subject="curl LF file")
    assert received.raw.startswith(data)
    assert received.raw[len(data) :] in (b"", b"\r\n")
    assert BARE_LF_DEFECT in received.defects


def test_dot_lines_after_a_bare_lf_as_each_client_stuffs_them(
    smtpsink: Mailbox, tmp_path: Path
) -> None:
    # A leading dot is taken away after a CRLF only, as aiosmtpd does
    # (docs/conversation.rst): curl stuffs only there and keeps its dot
    # lines; smtplib doubles a dot after a bare LF too, which stays.
    data = b"Subject: dots\n\n.sig\n..two\nend\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.sendmail("app@example.com", ["ann@example.com"], data)
    assert smtpsink.wait_for().raw == b"Subject: dots\n\n..sig\n...two\nend\n\r\n"
    curl = external.require("curl", "apt-get install curl")
    upload = tmp_path / "message.txt"
    upload.write_bytes(data.replace(b"dots", b"curl dots"))
    subprocess.run(
        [
            *(curl, "--silent", "--show-error"),
            *("--url", f"smtp://{smtpsink.host}:{smtpsink.port}"),
            *("--mail-from", "app@example.com", "--mail-rcpt", "ann@example.com"),
            *("--upload-file", str(upload)),
        ],
        check=True,
        timeout=TIMEOUT,
    )
    received = smtpsink.wait_for(subject="curl dots")
    assert received.raw.startswith(upload.read_bytes())
    # CRLF line ends come through alike from either.
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.sendmail(
            "app@example.com", ["ann@example.com"], data.replace(b"\n", b"\r\n")
        )
    assert smtpsink.messages[-1].raw == data.replace(b"\n", b"\r\n")


def test_crlf_message_has_no_bare_lf_defect(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.send_message(lf_message("CRLF"))  # send_message fixes line ends
    assert BARE_LF_DEFECT not in smtpsink.assert_sent(subject="CRLF").defects


# -- PIPELINING -------------------------------------------------------------------------


def test_swaks_pipelines(smtpsink: Mailbox) -> None:
    swaks = external.require("swaks", "apt-get install swaks")
    done = subprocess.run(
        [
            *(swaks, "--pipeline", "--server", f"{smtpsink.host}:{smtpsink.port}"),
            *("--from", "app@example.com", "--to", "ann@example.com,bob@example.com"),
            *("--header", "Subject: pipelined"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert "<-  250-PIPELINING" in lines
    # swaks sent MAIL, both RCPTs and DATA before it read the first reply.
    mail = lines.index("-> MAIL FROM:<app@example.com>")
    assert lines[mail : mail + 8] == [
        "-> MAIL FROM:<app@example.com>",
        "-> RCPT TO:<ann@example.com>",
        "-> RCPT TO:<bob@example.com>",
        "-> DATA",
        "<-  250 OK",
        "<-  250 OK",
        "<-  250 OK",
        "<-  354 End data with <CR><LF>.<CR><LF>",
    ]
    smtpsink.assert_sent(1, subject="pipelined", rcpt_to="bob@example.com")


def test_pipelined_batch_gets_its_replies_in_order(smtpsink: Mailbox) -> None:
    """One write with a whole transaction and errors in it (RFC 2920): one
    reply per command, in order, and a refused RCPT does not stop the rest."""
    with socket.create_connection((smtpsink.host, smtpsink.port), TIMEOUT) as sock:
        replies = sock.makefile("rb")

        def reply() -> bytes:
            while (line := replies.readline())[3:4] == b"-":
                pass
            return line.rstrip(b"\r\n")

        assert reply().startswith(b"220")
        sock.sendall(b"EHLO client.example\r\n")
        assert reply() == b"250 HELP"
        sock.sendall(
            b"MAIL FROM:<app@example.com>\r\n"
            b"RCPT TO:<ann@example.com>\r\n"
            b"RCPT TO:<bad\x00@example.com>\r\n"
            b"NOOP\r\n"
            b"RCPT TO:<bob@example.com>\r\n"
            b"DATA\r\n"
        )
        assert [reply()[:3] for _ in range(6)] == [
            b"250",
            b"250",
            b"501",
            b"250",
            b"250",
            b"354",
        ]
        sock.sendall(b"Subject: batch\r\n\r\nhi\r\n.\r\nRSET\r\nQUIT\r\n")
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"221"]
    message = smtpsink.assert_sent(subject="batch")
    assert message.envelope.rcpt_to == ("ann@example.com", "bob@example.com")
    assert message.session.commands == [
        *("EHLO", "MAIL", "RCPT", "RCPT", "NOOP", "RCPT", "DATA", "RSET", "QUIT")
    ]


@contextlib.contextmanager
def _after_helo(sink: Mailbox) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A raw connection past the greeting and HELO, and a reader of its
    replies. Its buffer is empty then: the server says nothing unasked, so
    the socket may also be read directly."""
    with socket.create_connection((sink.host, sink.port), TIMEOUT) as sock:
        replies = sock.makefile("rb")
        try:
            assert replies.readline().startswith(b"220 ")
            sock.sendall(b"HELO client.example\r\n")
            assert replies.readline().startswith(b"250 ")
            yield sock, replies
        finally:
            replies.close()


def test_a_pipelined_group_is_answered_in_one_write(smtpsink: Mailbox) -> None:
    """The replies to a pipelined group come together (one socket write,
    one wake-up of the client), as RFC 2920 section 3.2 recommends; a group
    that ends with QUIT gets its replies before the connection closes."""
    group = b"MAIL FROM:<app@example.com>\r\nRCPT TO:<ann@example.com>\r\n"
    group += b"RCPT TO:<bad\x00@example.com>\r\nNOOP\r\nRSET\r\nMAIL FROM:<>\r\n"
    with _after_helo(smtpsink) as (sock, _):
        sock.sendall(group + b"RCPT TO:<bob@example.com>\r\nDATA\r\n")
        # One recv: the server wrote them at once. (Written one by one,
        # the first recv may return as soon as the first reply is in.)
        codes = [line[:3] for line in sock.recv(65536).splitlines()]
        assert codes == [b"250", b"250", b"501", b"250", b"250", b"250", b"250", b"354"]
        sock.sendall(b"Subject: one write\r\n\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n")
        codes = [line[:3] for line in sock.recv(65536).splitlines()]
        assert codes == [b"250", b"250", b"221"]
        assert sock.recv(4096) == b""  # then the server closed
    message = smtpsink.assert_sent(subject="one write")
    assert message.envelope.rcpt_to == ("bob@example.com",)


def test_held_replies_go_out_while_a_command_waits(
    smtpsink_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held reply does not wait for the rest of its group: while a later
    command of the group waits (here RCPT, held by the test), the reply to
    MAIL is already sent."""
    from pytest_smtpsink import _smtp

    release = threading.Event()
    handle_rcpt = _smtp._Handler.handle_RCPT

    async def waiting_rcpt(self: Any, *args: Any) -> Any:
        deadline = time.monotonic() + 60  # the test fails long before
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return await handle_rcpt(self, *args)

    monkeypatch.setattr(_smtp._Handler, "handle_RCPT", waiting_rcpt)
    sink = smtpsink_factory(hostname="waiting-rcpt.test")  # a new server
    with _after_helo(sink) as (sock, replies):
        sock.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        # RCPT waits until released (up to 60 s): a reply within TIMEOUT is
        # MAIL's, sent while RCPT waits, however slow the machine.
        sock.settimeout(TIMEOUT)
        assert replies.readline().startswith(b"250 ")  # MAIL, RCPT still waiting
        release.set()
        assert replies.readline().startswith(b"250 ")  # RCPT


def test_replies_before_the_server_closes_are_sent(smtpsink: Mailbox) -> None:
    """Unknown commands that look like pipelined ones (``MAILFROM:``) get
    their replies although aiosmtpd closes the connection after the fifth:
    no reply is held when a close may follow it."""
    with _after_helo(smtpsink) as (sock, replies):
        sock.sendall(b"MAILFROM:<a@example.com>\r\n" * 5 + b"QUIT\r\n")
        codes = [line[:3] for line in replies.readlines()]  # until the close
    assert codes == [b"500"] * 4 + [b"502"]


# -- DSN ------------------------------------------------------------------------------


def test_dsn_parameters_are_kept_on_the_envelope(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("dsn")
        assert client.has_extn("pipelining")
        client.mail("app@example.com", ["RET=HDRS", "ENVID=Order+2B42.a"])
        client.rcpt(
            "ann@example.com",
            ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Ann@example.com"],
        )
        client.rcpt("bob@example.com", ["notify=never"])
        client.rcpt("carl@example.com")
        assert client.data(b"Subject: dsn\r\n\r\nhi\r\n")[0] == 250
    envelope = smtpsink.assert_sent(subject="dsn").envelope
    assert envelope.dsn_ret == "HDRS"
    assert envelope.dsn_envid == "Order+42.a"  # xtext decoded, case kept
    assert envelope.rcpt_dsn == (
        RecipientDSN(notify=("SUCCESS", "FAILURE"), orcpt="rfc822;Ann@example.com"),
        RecipientDSN(notify=("NEVER",)),
        RecipientDSN(),
    )
    # The parameters are among the others, upper-cased as aiosmtpd does.
    assert envelope.mail_options == ("RET=HDRS", "ENVID=ORDER+2B42.A")
    assert envelope.rcpt_options[1] == ("NOTIFY=NEVER",)


def test_xtext_octets_are_read_as_utf8(smtpsink: Mailbox) -> None:
    # Postfix writes an SMTPUTF8 recipient's ORCPT as the xtext of its UTF-8
    # octets: it was read an octet a character, "rfc822;Ã¼nÃ¯@x.example".
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("app@example.com", ["ENVID=Caf+C3+A9-1"])
        client.rcpt("ann@example.com", ["ORCPT=rfc822;+C3+BCn+C3+AF@x.example"])
        # Octets that are not UTF-8: kept, as undecodable bytes are.
        client.rcpt("bob@example.com", ["ORCPT=rfc822;b+FCb@x.example"])
        assert client.data(b"Subject: utf-8 dsn\r\n\r\nhi\r\n")[0] == 250
    envelope = smtpsink.assert_sent(subject="utf-8 dsn").envelope
    assert envelope.dsn_envid == "Café-1"
    assert [dsn.orcpt for dsn in envelope.rcpt_dsn] == [
        "rfc822;ünï@x.example",
        "rfc822;b\udcfcb@x.example",
    ]


def test_rcpt_with_a_long_orcpt_fits(smtpsink: Mailbox) -> None:
    """RFC 3461 lengthens RCPT by ORCPT's 500 characters: past the 512 of a
    plain command line."""
    original = "rfc822;" + "o" * 440 + "@example.com"
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("app@example.com", ["RET=FULL", "ENVID=" + "e" * 100])
        options = ["NOTIFY=SUCCESS,FAILURE,DELAY", "ORCPT=" + original]
        assert client.rcpt("ann@example.com", options)[0] == 250
        assert client.data(b"Subject: long orcpt\r\n\r\nhi\r\n")[0] == 250
    envelope = smtpsink.assert_sent(subject="long orcpt").envelope
    assert envelope.rcpt_dsn[0].orcpt == original
    assert len(smtpsink.sessions[0].replies_to("RCPT")[0].line) > 512


def test_no_dsn_request_means_none(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: x\r\n\r\n")
    envelope = smtpsink.assert_sent(subject="x").envelope
    assert (envelope.dsn_ret, envelope.dsn_envid) == (None, None)
    assert envelope.rcpt_dsn == (RecipientDSN(),)


@pytest.mark.parametrize(
    ("command", "parameter"),
    [
        ("MAIL", "RET=ALL"),
        ("MAIL", "RET"),
        ("MAIL", "RET=FULL RET=HDRS"),
        ("MAIL", "ENVID=a=b"),  # "=" must be +3D
        ("MAIL", "ENVID=a+2b"),  # hex digits in upper case
        ("MAIL", "ENVID=" + "x" * 101),
        ("RCPT", "NOTIFY=NEVER,SUCCESS"),
        ("RCPT", "NOTIFY=SUCCESS,,DELAY"),
        ("RCPT", "NOTIFY=ALWAYS"),
        ("RCPT", "ORCPT=ann@example.com"),  # no address type
        ("RCPT", "ORCPT=rfc822;"),
        ("RCPT", "ORCPT=rfc822:x;a@example.com"),  # ":" is no atom
    ],
)
def test_bad_dsn_parameters_get_501(
    smtpsink: Mailbox, command: str, parameter: str
) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        key = parameter.partition("=")[0].upper()
        if command == "MAIL":
            code, reply = client.mail("app@example.com", parameter.split(" ", 1))
        else:
            assert client.mail("app@example.com")[0] == 250
            code, reply = client.rcpt("ann@example.com", parameter.split(" ", 1))
        assert (code, reply.decode()) == (
            501,
            f"5.5.4 Syntax error in the {key}= parameter (RFC 3461)",
        )
    assert smtpsink.sessions[0].codes[-2] == 501


def test_dsn_parameters_belong_to_their_command(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.mail("app@example.com", ["NOTIFY=NEVER"])[0] == 555
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("ann@example.com", ["RET=FULL"])[0] == 555
        client.helo()  # HELO: no ESMTP parameters at all
        assert client.mail("app@example.com", ["RET=FULL"])[0] == 501


def test_msmtp_requests_dsn(smtpsink_factory: Factory) -> None:
    """msmtp -N refuses to send to a server without DSN."""
    msmtp = external.require("msmtp", "apt-get install msmtp")
    sink = smtpsink_factory()
    subprocess.run(
        [
            *(msmtp, f"--host={sink.host}", f"--port={sink.port}"),
            *("--from=app@example.com", "-N", "delay,failure", "-R", "full"),
            "ann@example.com",
        ],
        input=b"Subject: from msmtp\n\nhi\n",
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    envelope = sink.assert_sent(subject="from msmtp").envelope
    assert envelope.dsn_ret == "FULL"
    assert envelope.rcpt_dsn == (RecipientDSN(notify=("DELAY", "FAILURE")),)
