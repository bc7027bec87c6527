"""The aiosmtplib examples of the "TLS and authentication" page."""

from __future__ import annotations

import asyncio
import gc
from email.message import EmailMessage

import aiosmtplib
import pytest

# aiosmtplib can leave the client's socket of a TLS connection unclosed when
# the loop is closed first (seen with 4.0 on Python 3.10, and now and then
# with 5.x on 3.11); its ResourceWarning is not about the sink. Collect it
# while the warning is ignored.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_client_sockets():
    yield
    gc.collect()


def welcome():
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = "Welcome"
    message.set_content("Hi Ann.")
    return message


def test_aiosmtplib_starttls(smtpsink_factory):
    sink = smtpsink_factory(tls="starttls", auth={"app": "app-password"})

    async def send():
        await aiosmtplib.send(
            welcome(),
            hostname=sink.host,
            port=sink.port,
            start_tls=True,
            tls_context=sink.ssl_context(),
            username="app",
            password="app-password",
        )

    asyncio.run(send())
    session = sink.assert_sent(subject="Welcome").session
    assert session.tls.implicit is False
    assert session.authenticated_as == "app"


def test_aiosmtplib_implicit_tls(smtpsink_factory):
    sink = smtpsink_factory(tls="implicit")

    async def send():
        async with aiosmtplib.SMTP(
            hostname=sink.host,
            port=sink.port,
            use_tls=True,
            tls_context=sink.ssl_context(),
        ) as client:
            await client.send_message(welcome())

    asyncio.run(send())
    assert sink.assert_sent(subject="Welcome").session.tls.implicit is True
