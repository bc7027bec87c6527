"""The fixtures and `wait_for_async` under pytest-asyncio, in its strict and
auto modes: the async plugin most users have (anyio's is tested in
test_assertions.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_asyncio")  # in the test extra: CI always has it

#: Written for strict mode; auto mode gets it without the markers.
ASYNC_TESTS = """
import asyncio
import smtplib
from email.message import EmailMessage

import aiosmtplib
import pytest
import pytest_asyncio


def make(subject):
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = subject
    message.set_content("hi")
    return message


async def send(sink, subject, **kwargs):
    await aiosmtplib.send(make(subject), hostname=sink.host, port=sink.port, **kwargs)


@pytest_asyncio.fixture
async def welcomed(smtpsink):
    await send(smtpsink, "from a fixture")
    return smtpsink


@pytest.mark.asyncio
async def test_wait_for_async_while_the_client_runs_on_this_loop(smtpsink):
    # A blocking wait_for would deadlock: the client needs this loop.
    task = asyncio.ensure_future(send(smtpsink, "async"))
    message = await smtpsink.wait_for_async(subject="async", timeout=30)
    await task
    assert message.envelope.rcpt_to == ("ann@example.com",)


@pytest.mark.asyncio
async def test_an_async_fixture_sends_to_the_same_mailbox(welcomed, smtpsink):
    assert welcomed is smtpsink
    smtpsink.assert_sent(1, subject="from a fixture")


@pytest.mark.asyncio
async def test_each_test_starts_empty(smtpsink):
    assert smtpsink.messages == []
    assert smtpsink.sessions == ()


@pytest.mark.asyncio
async def test_factory_starts_a_sink_inside_the_coroutine(smtpsink_factory):
    # A sink of its own (settings no other test uses), started from here.
    # Not TLS: aiosmtplib 4.0 over TLS on Python 3.10 (the oldest env) leaves
    # a transport unclosed, a ResourceWarning that -W error turns into a
    # failure of whichever test the garbage collector runs in.
    sink = smtpsink_factory(hostname="async.example")
    await send(sink, "from the factory")
    message = await sink.wait_for_async(subject="from the factory", timeout=30)
    assert message.session.transcript[0].replies[0].startswith("220 async.example")


@pytest.mark.asyncio
async def test_a_sink_of_its_own_started_and_stopped_in_a_coroutine():
    # start() and stop() drive the sink's loop; this thread already runs one.
    from pytest_smtpsink import SMTPSink

    with SMTPSink() as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.send_message(make("own"))
        message = await sink.wait_for_async(subject="own", timeout=30)
    assert not sink.running
    assert message.session.end == "quit"


@pytest.mark.asyncio
async def test_several_at_once(smtpsink):
    tasks = [asyncio.ensure_future(send(smtpsink, f"n{n}")) for n in range(3)]
    found = await smtpsink.wait_for_async(3, timeout=30)
    await asyncio.gather(*tasks)
    assert sorted(m.subject for m in found) == ["n0", "n1", "n2"]


@pytest.mark.asyncio
async def test_wait_for_async_times_out_listing_what_arrived(smtpsink):
    await send(smtpsink, "other")
    with pytest.raises(AssertionError) as caught:
        await smtpsink.wait_for_async(subject="never", timeout=0.1)
    text = str(caught.value)
    assert text.startswith("wait_for_async timed out: expected 1 message within 0.1 s")
    assert "Subject: 'other'" in text


HELD = []


@pytest.mark.asyncio
async def test_x1_leaves_a_client_held_by_a_hang(smtpsink):
    smtpsink.hang("EOD")
    asyncio.ensure_future(send(smtpsink, "held", timeout=20))
    await smtpsink.wait_until_async(
        lambda: smtpsink.sessions[0].transcript[-1].injected, timeout=30
    )
    HELD.append(smtpsink.sessions[0])


@pytest.mark.asyncio
async def test_x2_the_held_client_was_let_go_by_the_server(smtpsink):
    # pytest-asyncio cancels test 1's task before the sink's fixture ends
    # test 1: aiosmtplib then sends QUIT, which a hang still in force held
    # for the client's whole timeout, 20 s, until the client gave up.
    assert HELD[0].end == "server-closed"
"""


def _auto_mode(text: str) -> str:
    return text.replace("@pytest.mark.asyncio\n", "").replace(
        "@pytest_asyncio.fixture", "@pytest.fixture"
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_fixtures_and_wait_for_async_under_pytest_asyncio(
    pytester: pytest.Pytester, mode: str
) -> None:
    source = ASYNC_TESTS if mode == "strict" else _auto_mode(ASYNC_TESTS)
    assert mode == "strict" or "mark.asyncio" not in source
    pytester.makepyfile(test_async=source)
    # pytest-asyncio loads from its entry point, as in users' runs: with
    # autoloading on, "-p asyncio" would import the standard library module.
    # In a subprocess: an in-process run re-imports the modules it first
    # imported, and a second run then mixes two copies of cryptography's
    # classes (trustme fails "curve must be an EllipticCurve instance").
    result = pytester.runpytest_subprocess(
        "-o", f"asyncio_mode={mode}", "-p", "no:xdist", "-W", "error"
    )
    result.assert_outcomes(passed=9)
    # Its header line: the plugin is active, in the mode asked for.
    result.stdout.re_match_lines([rf"(?i)asyncio: mode=(Mode\.)?{mode}\b"])
