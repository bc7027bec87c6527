"""The examples of the "Async tests" page (docs/async.rst)."""

import asyncio
import gc
from email.message import EmailMessage

import aiosmtplib
import pytest

pytest.importorskip("pytest_asyncio")  # in the test extra

# aiosmtplib 4.0 on Python 3.10 leaves the socket of a send that timed out
# (the hang below) to the garbage collector, and its ResourceWarning fails
# whichever test the collector runs in under -W error: collected here,
# while the warning is ignored (see "With -W error" on the page).
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")


@pytest.fixture(autouse=True)
def _collect_client_sockets():
    yield
    gc.collect()


def welcome(to):
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = to
    message["Subject"] = "Welcome"
    message.set_content("Hello!")
    return message


class Mailer:
    """An application's mail client, made once for the whole run."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    async def send(self, to):
        await aiosmtplib.send(welcome(to), hostname=self.host, port=self.port)


@pytest.fixture(scope="session")
def mailer(smtpsink_server):
    # A session fixture cannot ask for smtpsink (one per test): the server's
    # address is the same for every test.
    return Mailer(smtpsink_server.host, smtpsink_server.port)


@pytest.mark.asyncio
async def test_a_session_wide_client(mailer, smtpsink):
    await mailer.send("ann@example.com")

    smtpsink.assert_sent(to="ann@example.com")  # this test's mail only


@pytest.mark.asyncio
async def test_an_unanswered_send_gives_up(smtpsink):
    smtpsink.hang("DATA")

    # Bounded by aiosmtplib's own timeout: cancelled from outside instead
    # (asyncio.timeout), it would still wait that long for its QUIT.
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await aiosmtplib.send(
            welcome("ann@example.com"),
            hostname=smtpsink.host,
            port=smtpsink.port,
            timeout=0.5,
        )

    smtpsink.assert_nothing_sent()


@pytest.mark.asyncio
async def test_a_background_send_checked_from_the_loop(smtpsink):
    job = asyncio.ensure_future(
        aiosmtplib.send(
            welcome("bob@example.com"), hostname=smtpsink.host, port=smtpsink.port
        )
    )

    await smtpsink.wait_until_async(lambda: len(smtpsink.sessions) == 1)
    message = await smtpsink.wait_for_async(to="bob@example.com", timeout=10)

    await job
    assert message.subject == "Welcome"
