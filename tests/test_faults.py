"""Fault injection: real clients (smtplib, aiosmtplib) against scripted failures."""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

import aiosmtplib
import pytest
from conftest import Factory, make_message, plugin_frames, replies_at_the_end

from pytest_smtpsink import Fault, Mailbox, SMTPSink
from pytest_smtpsink._fault_api import apply_marker
from pytest_smtpsink._faults import FaultError

if TYPE_CHECKING:
    from typing_extensions import Unpack

BODY = "Subject: hi\r\n\r\nhello\r\n"
THREE = ["ann@example.com", "bob@example.com", "cy@example.com"]


class ClientOptions(TypedDict, total=False):
    timeout: float


def sendmail(
    sink: Mailbox,
    to: list[str],
    sender: str = "app@example.com",
    **kw: Unpack[ClientOptions],
) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(sink.host, sink.port, **kw) as client:
        return client.sendmail(sender, to, BODY)


def injected(sink: Mailbox) -> list[str]:
    return [
        f"{e.command or e.kind}:{e.code}"
        for s in sink.sessions
        for e in s.transcript
        if e.injected
    ]


# -- replies ------------------------------------------------------------------------------


def test_one_refused_recipient_gives_partial_delivery(smtpsink: Mailbox) -> None:
    fault = smtpsink.fail("RCPT", 550, match="bob@EXAMPLE.com")
    refused = sendmail(smtpsink, THREE)
    assert refused == {"bob@example.com": (550, b"5.1.1 Mailbox unavailable")}
    message = smtpsink.assert_sent()
    assert message.envelope.rcpt_to == ("ann@example.com", "cy@example.com")
    assert (fault.seen, fault.fired) == (1, 1)
    assert injected(smtpsink) == ["RCPT:550"]


def test_match_is_exact_on_the_local_part(smtpsink: Mailbox) -> None:
    smtpsink.fail("RCPT", 550, match="Bob@example.com")
    assert sendmail(smtpsink, ["bob@example.com"]) == {}


def test_match_takes_either_spelling_of_a_domain(smtpsink: Mailbox) -> None:
    # As mailboxes, criteria and relay_to do: the Unicode rule missed the
    # A-label recipient, and the other way round.
    smtpsink.fail("RCPT", 550, match="ann@straße.example")
    smtpsink.fail("RCPT", 551, match="bob@xn--bcher-kva.example")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        refused = client.sendmail(
            "app@example.com",
            ["ann@xn--strae-oqa.example", "bob@bücher.example", "cy@example.com"],
            b"Subject: idn\r\n\r\nhi\r\n",
            mail_options=["SMTPUTF8"],
        )
    assert {address: code for address, (code, _) in refused.items()} == {
        "ann@xn--strae-oqa.example": 550,
        "bob@bücher.example": 551,
    }
    # A different domain that IDNA 2003 would map to the same (ß as ss).
    smtpsink.fail("RCPT", 552, match="cy@strasse.example")
    assert sendmail(smtpsink, ["cy@xn--strae-oqa.example"]) == {}


def test_all_recipients_refused_raises(smtpsink: Mailbox) -> None:
    smtpsink.fail("RCPT", 550, match=re.compile(r"@example\.com$"))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        sendmail(smtpsink, THREE)
    assert set(caught.value.recipients) == set(THREE)
    smtpsink.assert_not_sent()


def test_partial_delivery_with_aiosmtplib(smtpsink: Mailbox) -> None:
    smtpsink.fail("RCPT", 550, "5.1.1 No such user", match="bob@example.com")
    message = make_message(to=THREE)

    async def main() -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        return await aiosmtplib.send(
            message, hostname=smtpsink.host, port=smtpsink.port, timeout=5
        )

    errors, _ = asyncio.run(main())
    assert errors["bob@example.com"].code == 550
    assert errors["bob@example.com"].message == "5.1.1 No such user"
    assert smtpsink.assert_sent().envelope.rcpt_to == (
        "ann@example.com",
        "cy@example.com",
    )


def test_multi_line_reply(smtpsink: Mailbox) -> None:
    # A final newline ends the text: no empty "550 " line after it.
    smtpsink.fail("RCPT", 550, "5.1.1 No such user\nSee https://example.com/bounce\n")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        sendmail(smtpsink, ["bob@example.com"])
    assert caught.value.recipients["bob@example.com"] == (
        550,
        b"5.1.1 No such user\nSee https://example.com/bounce",
    )
    (rcpt,) = smtpsink.sessions[0].replies_to("RCPT")
    assert rcpt.replies == [
        "550-5.1.1 No such user",
        "550 See https://example.com/bounce",
    ]
    assert rcpt.injected
    assert rcpt.lines()[-1].endswith("[injected]")


def test_reply_text_up_to_the_line_limit_goes_out_whole(smtpsink: Mailbox) -> None:
    # 506 characters and a tab: "550-" or "550 ", the text and CRLF make
    # reply lines of exactly 512 octets, the most RFC 5321 allows.
    first, last = "a\t" + "x" * 504, "y" * 506
    smtpsink.fail("RCPT", 550, f"{first}\r\n{last}")
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=10) as sock:
        replies = sock.makefile("rb")
        replies.readline()
        sock.sendall(b"HELO client.test\r\nMAIL FROM:<a@example.com>\r\n")
        replies.readline(), replies.readline()
        sock.sendall(b"RCPT TO:<b@example.com>\r\nQUIT\r\n")
        lines = [replies.readline(), replies.readline()]
        replies.close()
    assert lines == [f"550-{first}\r\n".encode(), f"550 {last}\r\n".encode()]
    assert [len(line) for line in lines] == [512, 512]


def test_greylisting_succeeds_on_the_third_attempt(smtpsink: Mailbox) -> None:
    fault = smtpsink.fail("MAIL", 451, times=2)
    attempts = 0
    while True:
        attempts += 1
        try:
            sendmail(smtpsink, ["ann@example.com"])
            break
        except smtplib.SMTPSenderRefused as error:
            refusal = error
        assert refusal.smtp_code == 451
        assert attempts < 5
    assert attempts == 3
    assert fault.fired == 2
    smtpsink.assert_sent(1)
    assert injected(smtpsink) == ["MAIL:451", "MAIL:451"]


def test_greylisting_with_aiosmtplib(smtpsink: Mailbox) -> None:
    smtpsink.fail("MAIL", 451, times=2)
    message = make_message()

    async def main() -> int:
        for attempt in range(1, 6):
            try:
                await aiosmtplib.send(
                    message, hostname=smtpsink.host, port=smtpsink.port
                )
            except aiosmtplib.SMTPSenderRefused as error:
                refusal = error
            else:
                return attempt
            assert refusal.code == 451
        raise AssertionError("never delivered")

    assert asyncio.run(main()) == 3
    smtpsink.assert_sent(1)


def test_every_nth(smtpsink: Mailbox) -> None:
    smtpsink.fail("RCPT", 452, every=2)
    refused = sendmail(smtpsink, [f"u{i}@example.com" for i in range(1, 7)])
    assert sorted(refused) == ["u2@example.com", "u4@example.com", "u6@example.com"]


def test_probability_with_a_seed_replays(smtpsink: Mailbox) -> None:
    rcpts = [f"u{i}@example.com" for i in range(30)]
    runs = []
    for _ in range(2):
        fault = smtpsink.fail("RCPT", 450, probability=0.5, seed=1234)
        runs.append(sorted(sendmail(smtpsink, rcpts)))
        fault.remove()
    assert runs[0] == runs[1]
    assert 0 < len(runs[0]) < len(rcpts)
    other = smtpsink.fail("RCPT", 450, probability=0.5, seed=99)
    assert sorted(sendmail(smtpsink, rcpts)) != runs[0]
    assert other.seed == 99


def test_probability_without_seed_records_one(smtpsink: Mailbox) -> None:
    fault = smtpsink.fail("RCPT", 450, probability=0.3)
    assert isinstance(fault.seed, int)
    assert f"seed={fault.seed}" in repr(fault)


def test_eod_554_stores_nothing(smtpsink: Mailbox) -> None:
    smtpsink.fail("EOD", 554, "5.7.1 Message rejected as spam")
    with pytest.raises(smtplib.SMTPDataError) as caught:
        sendmail(smtpsink, ["ann@example.com"])
    assert caught.value.smtp_code == 554
    smtpsink.assert_not_sent()
    assert injected(smtpsink) == ["data:554"]


def test_eod_451_then_accepts(smtpsink: Mailbox) -> None:
    smtpsink.fail("EOD", 451, times=1)
    with pytest.raises(smtplib.SMTPDataError):
        sendmail(smtpsink, ["ann@example.com"])
    sendmail(smtpsink, ["ann@example.com"])
    smtpsink.assert_sent(1)


def test_data_command_refused(smtpsink: Mailbox) -> None:
    smtpsink.fail("DATA", 554)
    with pytest.raises(smtplib.SMTPDataError):
        sendmail(smtpsink, ["ann@example.com"])
    smtpsink.assert_not_sent()


def test_drop_answers_250_and_keeps_nothing(smtpsink: Mailbox) -> None:
    smtpsink.drop(match="void@example.com")
    assert sendmail(smtpsink, ["void@example.com"]) == {}
    sendmail(smtpsink, ["ann@example.com"])
    assert [m.envelope.rcpt_to for m in smtpsink.messages] == [("ann@example.com",)]
    assert injected(smtpsink) == ["data:250"]


def test_a_failure_report_names_the_drop_fault_that_took_the_mail(
    smtpsink: Mailbox,
) -> None:
    # The client was told 250; the report listed what arrived and the
    # sessions, and nothing in it said the mail was thrown away.
    smtpsink.drop(match="void@example.com")
    sendmail(smtpsink, ["void@example.com"])
    sendmail(smtpsink, ["void@example.com"])
    hint = (
        "\nHint: <Fault EOD drop match='void@example.com' fired=2/2> accepted and "
        "threw away 2 messages; the client was told 250 and nothing was stored"
    )
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(rcpt_to="void@example.com")
    assert str(caught.value).endswith(hint), caught.value
    sendmail(smtpsink, ["ann@example.com"])  # something arrived: still said
    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_for(rcpt_to="void@example.com", timeout=0.01)
    assert str(caught.value).endswith(hint), caught.value


def test_a_failure_report_without_a_drop_that_fired_says_nothing_of_faults(
    smtpsink: Mailbox,
) -> None:
    smtpsink.drop(match="void@example.com")
    sendmail(smtpsink, ["ann@example.com"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(rcpt_to="void@example.com")
    assert "Fault" not in str(caught.value)


def test_greeting_421_closes(smtpsink: Mailbox) -> None:
    smtpsink.fail("CONNECT", 421, times=1)
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5)
    assert caught.value.smtp_code == 421
    sendmail(smtpsink, ["ann@example.com"])
    first = smtpsink.sessions[0]
    assert first.end == "server-closed"
    assert first.transcript[0].injected
    assert first.transcript[0].code == 421


def test_a_closing_reply_is_recorded_whole_before_the_session_ends(
    smtpsink: Mailbox, smtpsink_server: SMTPSink
) -> None:
    # Look at the moment the end is set (on the sink's thread): a test that
    # waits for the end must find every line of the last reply.
    smtpsink.fail("MAIL", 421, "first line\nsecond line")
    with replies_at_the_end(smtpsink, smtpsink_server) as at_end:
        client = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5)
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@example.com", ["b@example.com"], b"x\r\n")
        client.close()
        smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    assert at_end == [["421-first line", "421 second line"]]


def test_greeting_554_with_aiosmtplib(smtpsink: Mailbox) -> None:
    smtpsink.fail("CONNECT", 554)

    async def main() -> None:
        client = aiosmtplib.SMTP(hostname=smtpsink.host, port=smtpsink.port, timeout=5)
        await client.connect()

    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
        asyncio.run(main())
    assert caught.value.code == 554


def test_ehlo_refused(smtpsink: Mailbox) -> None:
    smtpsink.fail("HELO", 550, match="bad.example")
    with smtplib.SMTP(
        smtpsink.host, smtpsink.port, local_hostname="bad.example"
    ) as client:
        assert client.ehlo()[0] == 550
        assert client.helo()[0] == 550
    with smtplib.SMTP(
        smtpsink.host, smtpsink.port, local_hostname="good.example"
    ) as client:
        assert client.ehlo()[0] == 250


def test_a_host_name_match_ignores_case(smtpsink: Mailbox) -> None:
    # A host name has no case (the rule compared it exactly, no test said
    # otherwise): a rule for Mail.Example fires for "EHLO mail.example".
    smtpsink.fail("EHLO", 554, match="Mail.Example")
    with smtplib.SMTP(
        smtpsink.host, smtpsink.port, local_hostname="mail.example"
    ) as client:
        assert client.ehlo()[0] == 554


def test_auth_refused(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(auth={"ann": "secret"}, auth_plaintext=True)
    fault = sink.fail("AUTH", 454)
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login("ann", "secret")
        assert caught.value.smtp_code == 454
        fault.remove()
        client.login("ann", "secret")


def test_starttls_refused(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls")
    sink.fail("STARTTLS", 454, "4.7.0 TLS not available due to temporary reason")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPResponseException) as caught:
            client.starttls(context=sink.ssl_context())
        assert caught.value.smtp_code == 454


# -- hidden extensions and limits -------------------------------------------------------


def test_hide_starttls(smtpsink_factory: Factory) -> None:
    sink = smtpsink_factory(tls="starttls")
    sink.hide("STARTTLS")
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls(context=sink.ssl_context())
        assert client.docmd("STARTTLS")[0] == 502
    assert sink.sessions[0].transcript[1].injected  # the EHLO reply


def test_hide_size_and_smtputf8(smtpsink: Mailbox) -> None:
    smtpsink.hide("SIZE", "smtputf8")
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("size")
        assert not client.has_extn("smtputf8")
        assert client.has_extn("8bitmime")
        assert client.mail("app@example.com", ["SIZE=100"])[0] == 555
        assert client.mail("app@example.com")[0] == 250


def test_hide_dsn_refuses_its_parameters_on_mail_and_rcpt(smtpsink: Mailbox) -> None:
    # DSN was left out of EHLO, but RET=, ENVID=, NOTIFY= and ORCPT= were
    # still taken (250): a test that the application sends none of them to
    # a server without DSN could never fail.
    smtpsink.hide("DSN")
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("dsn")
        refused = (555, b"5.5.4 MAIL FROM parameters not recognized or not implemented")
        assert client.mail("app@example.com", ["RET=HDRS"]) == refused
        assert client.mail("app@example.com", ["ENVID=x"]) == refused
        assert client.mail("app@example.com", ["BODY=7BIT"])[0] == 250
        refused = (555, b"5.5.4 RCPT TO parameters not recognized or not implemented")
        assert client.rcpt("ann@example.com", ["NOTIFY=SUCCESS"]) == refused
        assert client.rcpt("ann@example.com", ["ORCPT=rfc822;a@x.test"]) == refused
        assert client.rcpt("ann@example.com")[0] == 250
    (session,) = smtpsink.sessions
    assert [e.injected for e in session.replies_to("RCPT")] == [True, True, False]


def test_limit_recipients(smtpsink: Mailbox) -> None:
    smtpsink.limit(max_recipients=2)
    refused = sendmail(smtpsink, THREE)
    assert refused == {
        "cy@example.com": (452, b"4.5.3 Too many recipients (at most 2)")
    }
    assert smtpsink.assert_sent().envelope.rcpt_to == tuple(THREE[:2])


def test_limit_size(smtpsink: Mailbox) -> None:
    smtpsink.limit(max_size=1000)
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as caught:
            client.sendmail("app@example.com", ["ann@example.com"], BODY + "x" * 2000)
        assert caught.value.smtp_code == 552
        declared = len(BODY) + 2000
        assert (
            caught.value.smtp_error
            == (
                f"5.3.4 Declared SIZE={declared} exceeds the size limit of 1000 bytes"
            ).encode()
        )
        # A client that does not announce the size is stopped at the end of data.
        client.rset()
        assert client.mail("app@example.com")[0] == 250
        assert client.rcpt("ann@example.com")[0] == 250
        assert client.data(BODY + ("x" * 70 + "\r\n") * 30) == (
            552,
            f"5.3.4 Message of {len(BODY) + 2160} bytes exceeds the size limit"
            " of 1000 bytes".encode(),
        )
    smtpsink.assert_not_sent()


def test_limit_connections(smtpsink: Mailbox) -> None:
    smtpsink.limit(max_connections=1)
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as first:
        with pytest.raises(smtplib.SMTPConnectError) as caught:
            smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5)
        assert caught.value.smtp_code == 421
        assert first.noop()[0] == 250


# -- disconnects, delays, hangs ----------------------------------------------------------


@pytest.mark.parametrize("stage", ["DATA", "EOD"])
def test_disconnect_during_data(smtpsink: Mailbox, stage: str) -> None:
    smtpsink.disconnect(stage)
    client = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("app@example.com", ["ann@example.com"], BODY)
    finally:
        client.close()
    smtpsink.assert_not_sent()
    (session,) = smtpsink.sessions
    assert session.end == "server-closed"
    assert [e.kind for e in session.transcript if e.injected] == (
        ["command"] if stage == "DATA" else ["data"]
    )


def test_a_lost_reply_after_storing_delivers_a_retry_twice(smtpsink: Mailbox) -> None:
    # RFC 1047: the server stored the message, the 250 never reached the
    # client, which sends it again. Before store=True, no fault could model
    # it: a disconnect at EOD stored nothing.
    fault = smtpsink.disconnect("EOD", store=True, times=1)
    assert repr(fault) == "<Fault EOD disconnect store=True times=1 fired=0/0>"
    delivered = False
    for _attempt in range(2):  # what a retrying application does
        try:
            with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30) as client:
                client.sendmail("app@example.com", ["ann@example.com"], BODY)
            delivered = True
            break
        except smtplib.SMTPServerDisconnected:
            continue
    assert delivered
    first, second = smtpsink.assert_sent(count=2)
    assert first.raw == second.raw
    lost, normal = smtpsink.sessions
    assert lost.end == "server-closed"
    [data] = [e for e in lost.transcript if e.kind == "data"]
    assert (data.injected, data.replies) == (True, [])
    # Not the plain disconnect's line, after which nothing is stored.
    assert data.lines() == [
        f"C: <message content: {len(BODY)} bytes; stored>  [injected: no reply]"
    ]
    assert lost.messages == (first,)
    assert normal.messages == (second,)


@pytest.mark.parametrize(
    ("stage", "store", "error"),
    [
        (
            "DATA",
            True,
            "store=True is for the 'EOD' stage, where a message has "
            "been received; got 'DATA'",
        ),
        ("EOD", "yes", "store must be True or False, got 'yes'"),
    ],
)
def test_store_is_for_a_disconnect_at_eod(
    smtpsink: Mailbox, stage: str, store: object, error: str
) -> None:
    with pytest.raises(FaultError, match=f"^{re.escape(error)}$"):
        smtpsink.disconnect(stage, store=store)  # type: ignore[arg-type]
    assert smtpsink.faults == ()


def test_disconnect_with_aiosmtplib(smtpsink: Mailbox) -> None:
    smtpsink.disconnect("DATA")

    async def main() -> None:
        await aiosmtplib.send(
            make_message(), hostname=smtpsink.host, port=smtpsink.port, timeout=5
        )

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        asyncio.run(main())
    smtpsink.assert_not_sent()


def test_delay_longer_than_client_timeout(smtpsink: Mailbox) -> None:
    smtpsink.delay("MAIL", 60)  # released (connection closed) when the test ends
    # A short timeout only where the delay is: on a loaded machine the
    # greeting and EHLO may well take longer than 0.3 s.
    client = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    try:
        client.ehlo()
        assert client.sock is not None
        client.sock.settimeout(0.3)
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.mail("app@example.com")
    finally:
        client.close()
    smtpsink.assert_not_sent()


def test_a_disconnect_at_connect_says_so_in_the_report(smtpsink: Mailbox) -> None:
    # The report read "last: nothing yet" and the transcript was empty: a
    # forgotten CONNECT rule looked like a server closing for no reason.
    smtpsink.disconnect("CONNECT")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    smtpsink.wait_until(lambda: smtpsink.sessions and smtpsink.sessions[0].end)
    [greeting] = smtpsink.sessions[0].transcript
    assert greeting.lines() == ["S: (none)  [injected: no greeting]"]
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_sent()
    assert "last: S: (none)  [injected: no greeting]" in str(failure.value)


def test_a_delay_under_way_says_the_reply_is_late_not_missing(
    smtpsink: Mailbox,
) -> None:
    # Read while a delay held it, the greeting was "(none)  [injected: no
    # greeting]", as for a hang: a wait's report said none would come.
    smtpsink.delay("CONNECT", 60)  # released (connection closed) below
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=30):
        smtpsink.wait_until(
            lambda: smtpsink.sessions and smtpsink.sessions[0].transcript
        )
        [greeting] = smtpsink.sessions[0].transcript
        assert greeting.lines() == ["S: (none yet)  [injected: greeting delayed]"]
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end)
    assert greeting.lines() == ["S: (none)  [injected: no greeting]"]
    smtpsink.clear_faults()
    smtpsink.delay("MAIL", 60)
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30) as client:
        client.ehlo()
        client.send(b"MAIL FROM:<app@example.com>\r\n")
        session = smtpsink.sessions[-1]
        smtpsink.wait_until(lambda: session.transcript[-1].injected)
        assert session.transcript[-1].lines() == [
            "C: MAIL FROM:<app@example.com>  [injected: reply delayed]"
        ]
        smtpsink.clear_faults()  # closes the connection it held
        smtpsink.wait_until(lambda: session.end)
    assert session.transcript[-1].lines() == [
        "C: MAIL FROM:<app@example.com>  [injected: no reply]"
    ]


@pytest.mark.parametrize("protocol", ["POP3", "IMAP"])
def test_a_read_side_delay_under_way_says_the_reply_is_late(
    smtpsink: Mailbox, protocol: str
) -> None:
    # SMTP's transcript said so; POP3's and IMAP's still said "no greeting"
    # and "no reply" while a delay held them.
    endpoint = smtpsink.pop3 if protocol == "POP3" else smtpsink.imap
    smtpsink.delay(f"{protocol}:CONNECT", 60)  # released (connection closed)
    with socket.create_connection((endpoint.host, endpoint.port), timeout=30):
        smtpsink.wait_until(
            lambda: smtpsink.sessions and smtpsink.sessions[0].transcript
        )
        [greeting] = smtpsink.sessions[0].transcript
        assert greeting.lines() == ["S: (none yet)  [injected: greeting delayed]"]
        smtpsink.clear_faults()  # closes the connection it held
        smtpsink.wait_until(lambda: smtpsink.sessions[0].end)
    assert greeting.lines() == ["S: (none)  [injected: no greeting]"]


def test_delay_with_aiosmtplib(smtpsink: Mailbox) -> None:
    smtpsink.delay("CONNECT", 60)  # released when the test ends

    async def main() -> None:
        await aiosmtplib.send(
            make_message(), hostname=smtpsink.host, port=smtpsink.port, timeout=0.3
        )

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        asyncio.run(main())


def test_short_delay_then_normal_reply(smtpsink: Mailbox) -> None:
    smtpsink.delay("RCPT", 0.05)
    assert sendmail(smtpsink, ["ann@example.com"]) == {}
    (rcpt,) = smtpsink.sessions[0].replies_to("RCPT")
    assert rcpt.injected
    assert rcpt.code == 250


def test_a_delay_longer_than_the_idle_timeout_is_waited_out(
    smtpsink_factory: Factory,
) -> None:
    # The client waits for the late reply, it is not idle: it got "421 ...
    # timeout exceeded" at the idle timeout, its message lost, where the
    # POP3 and IMAP servers answer after the delay.
    sink = smtpsink_factory(idle_timeout=1)
    rule = sink.delay("EOD", 2.0)  # a second after it for the client's QUIT
    assert sendmail(sink, ["ann@example.com"], timeout=30) == {}
    assert rule.fired == 1
    sink.assert_sent(rcpt_to="ann@example.com")
    sink.wait_until(lambda: sink.sessions[0].end is not None)
    assert sink.sessions[0].end == "quit"


@pytest.mark.parametrize(
    ("protocol", "login", "held", "goodbye"),
    [
        (
            "pop3",
            b"USER ann@example.com\r\nPASS x\r\n",
            b"STAT\r\n",
            b"-ERR [SYS/TEMP] Disconnected for inactivity\r\n",
        ),
        (
            "imap",
            b"a LOGIN ann@example.com x\r\n",
            b"b NOOP\r\n",
            b"* BYE Disconnected for inactivity\r\n",
        ),
    ],
    ids=["pop3", "imap"],
)
def test_a_read_side_connection_held_by_a_hang_is_closed_after_the_idle_timeout(
    smtpsink_factory: Factory, protocol: str, login: bytes, held: bytes, goodbye: bytes
) -> None:
    # As an SMTP one is (docs/faults.rst): it stayed open until the rule
    # went, for the whole run with a rule kept by a session-wide sink.
    sink = smtpsink_factory(idle_timeout=0.5)
    endpoint = sink.pop3 if protocol == "pop3" else sink.imap
    rule = sink.hang(f"{protocol.upper()}:{held.split()[-1].decode()}")
    with socket.create_connection((endpoint.host, endpoint.port), timeout=30) as sock:
        sock.sendall(login + held)
        with sock.makefile("rb") as replies:
            said = replies.read()
    assert said.endswith(goodbye)
    assert rule.fired == 1
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    session = sink.sessions[-1]
    assert session.end == "timeout"
    # The held command was never answered; the goodbye is a notice of its
    # own, as SMTP's 421.
    held_exchange, notice = session.transcript[-2:]
    assert held_exchange.replies == []
    assert (notice.kind, notice.replies) == ("notice", [goodbye.decode().rstrip()])


def test_a_delay_does_not_block_other_connections(smtpsink: Mailbox) -> None:
    fault = smtpsink.delay("MAIL", 60, match="slow@example.com")
    slow = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    slow.ehlo()
    outcome: list[object] = []

    def held() -> None:
        try:
            outcome.append(slow.mail("slow@example.com"))
        except Exception as error:  # released by the server closing it
            outcome.append(error)

    thread = threading.Thread(target=held)
    thread.start()
    try:
        # Held before the other mail goes (the thread may start late).
        smtpsink.wait_until(lambda: fault.fired == 1)
        sendmail(smtpsink, ["ann@example.com"], timeout=5)
        smtpsink.assert_sent(1)
    finally:
        smtpsink.clear_faults()  # closes the held connection
        thread.join(10)
        slow.close()
    assert not thread.is_alive()
    assert isinstance(outcome[0], smtplib.SMTPServerDisconnected)


@pytest.mark.parametrize("fault", ["hang", "delay"])
def test_a_client_leaving_a_held_connect_ends_its_session(
    smtpsink: Mailbox, fault: str
) -> None:
    # Held before the greeting, the client gives up and closes: the session
    # ends then, not when the rule goes or the sink stops.
    if fault == "hang":
        smtpsink.hang("CONNECT")
    else:
        smtpsink.delay("CONNECT", 600)
    client = socket.create_connection((smtpsink.host, smtpsink.port), timeout=5)
    smtpsink.wait_until(lambda: len(smtpsink.sessions) == 1)
    client.close()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    assert smtpsink.sessions[0].end == "client-closed"
    assert smtpsink.sessions[0].transcript[0].injected


@pytest.mark.parametrize("fault", ["hang", "delay"])
def test_a_pipelining_client_leaving_a_held_command_ends_its_session(
    smtpsink: Mailbox, fault: str
) -> None:
    # Its later commands unread, the client's EOF went to the reader (so
    # that a batch sent in one go is all answered), and the held handler
    # never read it: the session stayed open until the rule went.
    if fault == "hang":
        smtpsink.hang("RCPT")
    else:
        smtpsink.delay("RCPT", 600)
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=5) as client:
        client.recv(4096)  # the greeting
        client.sendall(
            b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\nSubject: held\r\n\r\n.\r\nQUIT\r\n"
        )
        said = b""
        while not said.endswith(b"250 OK\r\n"):  # to MAIL: all read, so a FIN
            chunk = client.recv(4096)
            assert chunk, f"closed after {said!r}"
            said += chunk
        smtpsink.wait_until(lambda: smtpsink.sessions[0].transcript[-1].injected)
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    assert smtpsink.sessions[0].end == "client-closed"


def test_hang_is_released_when_the_rule_goes() -> None:
    with SMTPSink() as sink:
        view = sink.view()
        view.hang("DATA")
        with socket.create_connection((sink.host, sink.port), timeout=10) as raw:
            stream = raw.makefile("rwb")
            stream.readline()
            for line in (
                b"EHLO me",
                b"MAIL FROM:<a@example.com>",
                b"RCPT TO:<b@example.com>",
            ):
                stream.write(line + b"\r\n")
                stream.flush()
                while stream.readline()[3:4] == b"-":
                    pass
            stream.write(b"DATA\r\n")
            stream.flush()
            view.wait_until(lambda: view.sessions[0].transcript[-1].injected, 30)
            # The report says why no reply came.
            transcript = view.sessions[0].format_transcript()
            assert transcript.endswith("\nC: DATA  [injected: no reply]"), transcript
            view.close()  # what the fixtures do at teardown
            assert stream.read() == b""  # closed by the server, not answered
            stream.close()
        (session,) = view.sessions
        assert session.end == "server-closed"
        assert session.transcript[-1].command == "DATA"
        assert session.transcript[-1].injected
        assert session.transcript[-1].replies == []
        assert view.faults == ()


def test_hang_then_stop_does_not_block() -> None:
    sink = SMTPSink().start()
    sink.hang("CONNECT")
    raw = socket.create_connection((sink.host, sink.port), timeout=10)
    try:
        # Not a sleep loop, and no bool(sessions) guard: the session is stored
        # before its greeting is recorded, so transcript[0] may not exist yet
        # (the IndexError of issue 13); wait_until counts that as "not yet".
        sink.wait_until(lambda: sink.sessions[0].transcript[0].injected, timeout=30)
        sink.stop()
        with contextlib.suppress(ConnectionResetError):  # aborted: also fine
            assert raw.recv(100) == b""
    finally:
        raw.close()


# -- scope -----------------------------------------------------------------------------


def test_remove_and_clear(smtpsink: Mailbox) -> None:
    def faults() -> tuple[Fault, ...]:
        # A call each time: mypy would keep `smtpsink.faults` narrowed to the
        # first tuple compared, though remove() changes it.
        return smtpsink.faults

    first = smtpsink.fail("RCPT", 550)
    second = smtpsink.hide("SIZE")
    assert faults() == (first, second)
    first.remove()
    assert faults() == (second,)
    assert sendmail(smtpsink, ["ann@example.com"]) == {}
    smtpsink.clear_faults()
    assert faults() == ()


def test_faults_belong_to_their_view(smtpsink: Mailbox) -> None:
    other = smtpsink.sink.view()
    other.fail("MAIL", 550)
    with pytest.raises(smtplib.SMTPSenderRefused):
        sendmail(smtpsink, ["ann@example.com"])
    smtpsink.clear_faults()  # not this view's rule
    with pytest.raises(smtplib.SMTPSenderRefused):
        sendmail(smtpsink, ["ann@example.com"])
    other.close()
    sendmail(smtpsink, ["ann@example.com"])


def test_every_injected_reply_is_marked(smtpsink: Mailbox) -> None:
    smtpsink.fail("MAIL", 451, times=1)
    smtpsink.fail("RCPT", 550, match="bob@example.com")
    smtpsink.delay("DATA", 0.01)
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("app@example.com", THREE, BODY)
        client.rset()
        client.sendmail("app@example.com", THREE, BODY)
    (session,) = smtpsink.sessions
    marked = [(e.command, e.code) for e in session.transcript if e.injected]
    assert marked == [("MAIL", 451), ("RCPT", 550), ("DATA", 354)]
    for exchange in session.transcript:
        assert ("[injected]" in "\n".join(exchange.lines())) == exchange.injected


@pytest.mark.smtpsink_fault("fail", "MAIL", 451, times=1)
@pytest.mark.smtpsink_fault("fail", "RCPT", 550, match="bob@example.com")
def test_marker(smtpsink: Mailbox) -> None:
    assert len(smtpsink.faults) == 2
    with pytest.raises(smtplib.SMTPSenderRefused):
        sendmail(smtpsink, THREE)
    assert sendmail(smtpsink, THREE) == {
        "bob@example.com": (550, b"5.1.1 Mailbox unavailable")
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.fail("BOGUS", 550), "unknown stage 'BOGUS'; use one of"),
        (lambda s: s.fail("RPCT", 550), "unknown stage 'RPCT' (did you mean 'RCPT'?)"),
        (
            lambda s: s.fail("POP3:RTR", "-ERR"),
            "unknown POP3 stage 'POP3:RTR' (did you mean 'POP3:RETR'?); use",
        ),
        (lambda s: s.fail("RCPT", 250), "4xx or 5xx"),
        (lambda s: s.fail("RCPT", 550, times=0), "times"),
        (lambda s: s.fail("RCPT", 550, match=42), "match"),
        # Before: accepted, then every RCPT got "500 Error: (TypeError)".
        (lambda s: s.fail("RCPT", 550, match=re.compile(b"x")), "match"),
        (lambda s: s.fail("RCPT", 550, probability=2), "probability"),
        (lambda s: s.fail("RCPT", 550, seed=3), "seed is for rules"),
        # Before: random's TypeError, naming no argument.
        (lambda s: s.fail("RCPT", 550, probability=0.5, seed=[1]), "seed"),
        (lambda s: s.fail("RCPT", 550, probability=0.5, seed=True), "seed"),
        (lambda s: s.delay("RCPT", -1), "seconds"),
        # Before: "451 " went out, a reply with a space and no text.
        (lambda s: s.fail("RCPT", 451, ""), "text must say something, got ''"),
        (lambda s: s.fail("RCPT", 451, " "), "text must say something"),
        # Before: sent as given, a UTF-8 reply to a client that asked for
        # none, a bare CR inside a reply line, a 606-octet reply line.
        (lambda s: s.fail("RCPT", 550, "Café"), "got 'é' at index 3 of 'Café'"),
        (lambda s: s.fail("RCPT", 550, "a\r\nb\rc"), "a bare CR"),
        (lambda s: s.fail("RCPT", 550, "a\x00b"), "got '\\x00' at index 1"),
        (lambda s: s.fail("RCPT", 550, "x" * 600), "at most 506 characters"),
        (lambda s: s.fail("RCPT", 550, "ok\n" + "x" * 507), "507 in line 2"),
        (lambda s: s.fail("POP3:RETR", 550, "x" * 495), "at most 494 characters"),
        (lambda s: s.fail("IMAP:FETCH", 550, "a\u2028b"), "printable ASCII"),
        (lambda s: s.limit(), "limit()"),
        (lambda s: s.hide(), "hide()"),
    ],
)
def test_bad_arguments(
    smtpsink: Mailbox, call: Callable[[Mailbox], object], message: str
) -> None:
    with pytest.raises(FaultError, match=re.escape(message)):
        call(smtpsink)
    assert smtpsink.faults == ()


def test_a_bad_argument_points_at_the_test_line_only(
    pytester: pytest.Pytester,
) -> None:
    # As for criteria and markers: the test's own line and the sentence, not
    # the frames of the checks inside the plugin (match= on STARTTLS, the
    # reply's text and probability showed them).
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("call", [
            lambda s: s.fail("BOGUS", 550),
            lambda s: s.fail("STARTTLS", 454, "no", match="x"),
            lambda s: s.fail("RCPT", 550, probability=2),
            lambda s: s.fail("RCPT", 550, "Caf\u00e9"),
            lambda s: s.delay("RCPT", -1),
            lambda s: s.hang("RCPT", times=0),
        ])
        def test_it(smtpsink, call):
            call(smtpsink)
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=6)
    output = result.stdout.str()
    assert output.count("FaultError: ") >= 6
    assert plugin_frames(output, "_faults.py", "_fault_api.py") == []


def test_a_mailbox_kept_past_its_test_adds_nothing_that_would_outlive_it(
    pytester: pytest.Pytester,
) -> None:
    # A view kept in a global took fault rules and DNS records after its
    # test had ended; nothing removed them, so an unrelated later test had
    # its recipients refused.
    pytester.makepyfile(
        """
        import smtplib

        import dns.resolver
        import pytest

        KEPT = []

        def test_keeps(smtpsink):
            KEPT.append(smtpsink)

        @pytest.mark.parametrize("add", [
            lambda s: s.fail("RCPT", 550, "5.1.1 stale rule"),
            lambda s: s.dns.mx("late.example", [(10, "mx.late.example")]),
            lambda s: s.deliver(b"Subject: late\\r\\n\\r\\nx\\r\\n", to="ann@example.com"),
        ])
        def test_adds_through_it(smtpsink, add):
            add(KEPT[0])

        def test_later(smtpsink):
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"x")
            smtpsink.assert_sent(1)
            assert not smtpsink.mailbox("ann@example.com").messages()
            with pytest.raises(dns.resolver.NXDOMAIN):
                smtpsink.dns.resolver().resolve("late.example", "MX")
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "E   RuntimeError: this mailbox was closed at the end of its test: "
            f"{what} added through it now would outlive it, in every later "
            "test; use the smtpsink (or smtpsink_factory()) of the running test"
            for what in ("a fault rule", "a DNS record", "a message")
        ],
        consecutive=False,
    )


LEAK_TESTS = """
import smtplib
import pytest

BODY = "Subject: hi\\r\\n\\r\\nhello\\r\\n"

def send(sink, rcpt="ann@example.com"):
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        return client.sendmail("app@example.com", [rcpt], BODY)

def check_clean(sink):
    assert sink.faults == ()
    assert send(sink) == {{}}
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("size")
    sink.assert_sent(1)
    assert not any(e.injected for s in sink.sessions for e in s.transcript)

@pytest.mark.parametrize("i", range({n}))
def test_faulty(smtpsink, i):
    smtpsink.fail("MAIL", 451)
    smtpsink.hide("SIZE")
    smtpsink.limit(max_recipients=1)
    smtpsink.drop()
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(smtpsink)
    if i % 2:
        raise AssertionError("the test fails: its faults must still go")

@pytest.mark.parametrize("i", range(2 * {n}))
def test_clean(smtpsink, i):
    check_clean(smtpsink)

@pytest.mark.smtpsink_fault("fail", "RCPT", 550)
@pytest.mark.parametrize("i", range({n}))
def test_marked(smtpsink, i):
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtpsink)
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["in-a-row", "xdist"])
def test_faults_never_leak_into_the_next_test(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    n = 4
    pytester.makepyfile(test_leak=LEAK_TESTS.format(n=n))
    # Interleave: every test with faults is followed by a clean one.
    pytester.makeconftest(
        """
def pytest_collection_modifyitems(items):
    faulty = [i for i in items if "clean" not in i.name]
    clean = [i for i in items if "clean" in i.name]
    items[:] = [x for pair in zip(faulty, clean) for x in pair]
"""
    )
    args = ["-p", "no:cacheprovider", "-W", "error"]
    if xdist:
        args += ["-n", "2"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=n // 2 + 2 * n + n, failed=n // 2)
    result.stdout.fnmatch_lines(["*the test fails: its faults must still go*"])


HANG_TESTS = """
import smtplib
import pytest

BODY = "Subject: hi\\r\\n\\r\\nhello\\r\\n"

def test_1_hangs(smtpsink):
    smtpsink.hang("DATA")
    client = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    try:
        client.ehlo()
        client.mail("app@example.com")
        client.rcpt("ann@example.com")
        client.sock.settimeout(0.3)  # short only where the hang is
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.docmd("DATA")
    finally:
        client.close()

def test_2_sends(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=5) as client:
        client.sendmail("app@example.com", ["ann@example.com"], BODY)
    smtpsink.assert_sent(1)
    assert not any(e.injected for s in smtpsink.sessions for e in s.transcript)
"""


def test_hang_is_cleaned_up_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hang=HANG_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=2)


def test_a_fixture_teardown_that_sends_still_meets_the_tests_faults(
    pytester: pytest.Pytester,
) -> None:
    # The connections the rules hold are closed as the teardown begins (a
    # client task that pytest-asyncio cancels is let go); the rules stay
    # until the sink's fixture ends.
    pytester.makepyfile(
        """
import pathlib, smtplib
import pytest

@pytest.fixture
def outbox(smtpsink):
    yield
    # Flushed on shutdown, as an application's outbox is.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        refused = client.sendmail("app@example.com", ["ann@example.com", "bob@example.com"], "x")
    pathlib.Path("refused").write_text(repr(refused))

def test_bounce(outbox, smtpsink):
    smtpsink.fail("RCPT", 550, match="bob@example.com")
"""
    )
    pytester.runpytest("-p", "no:xdist", "-W", "error").assert_outcomes(passed=1)
    refused = (pytester.path / "refused").read_text()
    assert refused.startswith("{'bob@example.com': (550, ")


def test_marker_errors_are_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.smtpsink_fault("explode", "MAIL")
        def test_it(smtpsink):
            pass

        @pytest.mark.smtpsink_fault("fial", "MAIL", 550)
        def test_typo(smtpsink):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.smtpsink_fault: the first argument names the fault*"
            "; got 'explode'",
            "*@pytest.mark.smtpsink_fault: the first argument names the fault*"
            "; got 'fial' (did you mean 'fail'?)",
        ]
    )


def test_the_marker_takes_the_kind_as_a_keyword(pytester: pytest.Pytester) -> None:
    # The reference writes it smtpsink_fault(kind, ...).
    pytester.makepyfile(
        """
        import smtplib

        import pytest

        @pytest.mark.smtpsink_fault(kind="fail", stage="RCPT", code=550)
        def test_it(smtpsink):
            with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
                client.ehlo()
                client.mail("app@example.com")
                assert client.rcpt("ann@example.com")[0] == 550
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "args", [("RCPT", 550), ("fail", "RCPT", 550)], ids=["stage-first", "twice"]
)
def test_the_marker_takes_the_kind_once(
    smtpsink: Mailbox, args: tuple[object, ...]
) -> None:
    # Before: "the first argument names the fault ...; got 'RCPT'", or that
    # fail() got an unexpected keyword argument 'kind'.
    with pytest.raises(FaultError, match=r"kind=.*not both"):
        apply_marker(smtpsink, args, {"kind": "fail"})
    assert smtpsink.faults == ()


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        # Before: Python's "FaultControls.limit() takes 1 positional argument
        # but 2 were given", counting a self the marker never showed.
        (
            ("limit", -1),
            {},
            "smtpsink_fault('limit', ...): got 1 positional argument; it takes "
            "smtpsink_fault('limit', *, max_recipients=None, max_connections=None, "
            "max_size=None)",
        ),
        # What is missing is said, by name, also where the others were given
        # as keywords ("got 0 positional arguments" hid it).
        (
            ("fail",),
            {},
            "smtpsink_fault('fail', ...): missing 2 required positional "
            "arguments: 'stage' and 'code'; it takes "
            "smtpsink_fault('fail', stage, code, text=None, **trigger)",
        ),
        (
            ("fail",),
            {"stage": "RCPT"},
            "smtpsink_fault('fail', ...): missing 1 required positional "
            "argument: 'code'; it takes "
            "smtpsink_fault('fail', stage, code, text=None, **trigger)",
        ),
        (
            ("fail", "RCPT", 550),
            {"bogus": 1},
            "smtpsink_fault('fail', ...): fail() got an unexpected keyword "
            "argument 'bogus'; its trigger keywords are match, times, every, "
            "probability, seed; it takes smtpsink_fault('fail', stage, code, "
            "text=None, **trigger)",
        ),
    ],
)
def test_a_marker_with_wrong_arguments_says_what_it_takes(
    smtpsink: Mailbox,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    expected: str,
) -> None:
    with pytest.raises(FaultError) as raised:
        apply_marker(smtpsink, args, kwargs)
    assert str(raised.value) == expected
    assert smtpsink.faults == ()


def test_a_rule_made_during_a_connection_applies_to_its_next_commands(
    smtpsink: Mailbox,
) -> None:
    """A connection opened with no rule is served by the sink alone until a
    line needs aiosmtpd's handler; a rule made then reaches its next
    command, and a CONNECT rule waits for the next connection."""
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.ehlo()
        smtpsink.fail("CONNECT", 421)
        smtpsink.fail("MAIL", 451)
        assert client.mail("app@example.com")[0] == 451
        assert client.noop()[0] == 250
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(smtpsink.host, smtpsink.port)
    assert refused.value.smtp_code == 421
    assert injected(smtpsink) == ["MAIL:451", "greeting:421"]
