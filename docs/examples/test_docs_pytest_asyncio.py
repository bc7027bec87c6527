"""The pytest-asyncio example of docs/assertions.rst."""

import asyncio
from email.message import EmailMessage

import aiosmtplib
import pytest

pytest.importorskip("pytest_asyncio")  # in the test extra


async def send_welcome(host, port, to):
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = to
    message["Subject"] = "Welcome"
    message.set_content("Hello!")
    await aiosmtplib.send(message, hostname=host, port=port)


@pytest.mark.asyncio  # not needed with asyncio_mode = "auto"
async def test_welcome_under_pytest_asyncio(smtpsink):
    job = asyncio.ensure_future(
        send_welcome(smtpsink.host, smtpsink.port, "ann@example.com")
    )

    message = await smtpsink.wait_for_async(to="ann@example.com", timeout=10)

    await job
    assert message.subject == "Welcome"


@pytest.mark.asyncio
async def test_no_mail_for_a_declined_signup(smtpsink):
    async def signup(accepted):  # the code under test: mails only if accepted
        if accepted:
            await send_welcome(smtpsink.host, smtpsink.port, "ann@example.com")

    job = asyncio.ensure_future(signup(accepted=False))

    # The loop runs on while it watches: a task's late mail would fail it.
    await smtpsink.assert_nothing_sent_async(within=0.5)

    await job


@pytest.mark.asyncio
async def test_the_watch_sees_mail_a_task_sends(smtpsink):
    # The example above, with the signup accepted: the watch must fail.
    job = asyncio.ensure_future(
        send_welcome(smtpsink.host, smtpsink.port, "ann@example.com")
    )
    with pytest.raises(AssertionError, match="expected no message within 30 s"):
        await smtpsink.assert_nothing_sent_async(within=30)
    await job
