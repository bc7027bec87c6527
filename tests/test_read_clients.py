"""Real readers running the flows real applications run, against the sink's
IMAP and POP3 servers: imaplib as Airflow's IMAP hook, Odoo's fetchmail and
Zulip's email mirror use it; aioimaplib (async, IDLE woken by SMTP mail);
django-mailbox's own POP3 and IMAP transports; curl's ``imap://`` and
``imaps://``."""

from __future__ import annotations

import asyncio
import imaplib
import re
import subprocess
from collections.abc import Callable, Sequence

import aioimaplib
import aiosmtplib
import external
import pytest

from pytest_smtpsink import Mailbox, SMTPSink

USER = "ann@example.com"


def raw_message(subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: Zed <zed@example.org>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


def subject_of(fetched: Sequence[object]) -> bytes:
    """The Subject line of the first message in an imaplib FETCH answer."""
    first = fetched[0]
    assert isinstance(first, tuple), fetched
    match = re.search(rb"^Subject: (.*)\r$", first[1], re.MULTILINE)
    assert match, first[1]
    return match.group(1)


# -- imaplib, as applications use it ---------------------------------------------


def test_airflow_style_imaps_search_all_fetch_rfc822_close(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    # Airflow's ImapHook: IMAP4_SSL, select, search(None, "All"), then
    # fetch(num, "(RFC822)") per number, close, logout.
    sink = smtpsink_factory(tls="implicit")
    sink.deliver(raw_message("Report A"), to=USER)
    sink.deliver(raw_message("Report B"), to=USER)
    context = sink.imap.ssl_context()
    with imaplib.IMAP4_SSL(sink.imap.host, sink.imap.port, ssl_context=context) as c:
        c.login(USER, "pw")
        assert c.select("INBOX") == ("OK", [b"2"])
        typ, numbers = c.search(None, "All")
        assert (typ, numbers) == ("OK", [b"1 2"])
        subjects = [subject_of(c.fetch(n, "(RFC822)")[1]) for n in numbers[0].split()]
        assert subjects == [b"Report A", b"Report B"]
        assert c.close()[0] == "OK"
        c.logout()
    box = sink.mailbox(USER)
    box.assert_in("INBOX", subject="Report A", flags={"\\Seen"})
    box.assert_in("INBOX", subject="Report B", flags={"\\Seen"})
    session = sink.sessions[-1]
    assert session.tls is not None
    assert session.tls.implicit
    assert session.used("CLOSE")


def test_odoo_style_unseen_fetch_and_seen_flag_juggling(smtpsink: Mailbox) -> None:
    # Odoo's fetchmail: search(None, "(UNSEEN)"), fetch(num, "(RFC822)"),
    # store(num, "-FLAGS", "\\Seen") before processing, then "+FLAGS" after.
    smtpsink.deliver(raw_message("Old"), to=USER, flags=["\\Seen"])
    smtpsink.deliver(raw_message("Lead 1"), to=USER)
    smtpsink.deliver(raw_message("Lead 2"), to=USER)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
        client.login(USER, "pw")
        client.select()
        typ, data = client.search(None, "(UNSEEN)")
        assert (typ, data) == ("OK", [b"2 3"])
        for num in data[0].split():
            _typ, fetched = client.fetch(num, "(RFC822)")
            assert subject_of(fetched).startswith(b"Lead")
            client.store(num, "-FLAGS", "\\Seen")
        # Processing failed for the first: it stays unseen; the second is done.
        client.store("3", "+FLAGS", "\\Seen")
        assert client.search(None, "(UNSEEN)") == ("OK", [b"2"])
        client.close()
        client.logout()
    box = smtpsink.mailbox(USER)
    box.assert_in("INBOX", subject="Lead 1", flags=())
    box.assert_in("INBOX", subject="Lead 2", flags={"\\Seen"})


def test_zulip_style_fetch_delete_and_expunge(smtpsink: Mailbox) -> None:
    # Zulip's email mirror: search ALL, fetch (RFC822), store +FLAGS \Deleted
    # on each, then expunge.
    smtpsink.deliver(raw_message("Stream post 1"), to=USER)
    smtpsink.deliver(raw_message("Stream post 2"), to=USER)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as mbox:
        mbox.login(USER, "pw")
        mbox.select("INBOX")
        _typ, numbers = mbox.search(None, "ALL")
        seen = []
        for number in numbers[0].split():
            seen.append(subject_of(mbox.fetch(number, "(RFC822)")[1]))
            mbox.store(number, "+FLAGS", "\\Deleted")
        typ, expunged = mbox.expunge()
        assert typ == "OK"
        assert len(expunged) == 2
        mbox.close()
        mbox.logout()
    assert seen == [b"Stream post 1", b"Stream post 2"]
    box = smtpsink.mailbox(USER)
    assert box.stored() == ()
    box.assert_deleted(subject="Stream post 1")
    box.assert_deleted(subject="Stream post 2")


# -- aioimaplib --------------------------------------------------------------------


async def aioimaplib_login(
    smtpsink: Mailbox,
) -> tuple[aioimaplib.IMAP4, asyncio.Future[Exception | None]]:
    """An aioimaplib client logged in as USER, and a future resolved when
    its connection is lost (to wait for, so that no transport outlives the
    test's loop)."""
    lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(error: Exception | None) -> None:
        if not lost.done():
            lost.set_result(error)

    client = aioimaplib.IMAP4(
        smtpsink.imap.host, smtpsink.imap.port, timeout=30, conn_lost_cb=connection_lost
    )
    await client.wait_hello_from_server()
    assert (await client.login(USER, "pw")).result == "OK"
    return client, lost


@pytest.mark.asyncio
async def test_aioimaplib_idle_is_woken_by_smtp_mail(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Before"), to=USER)
    client, lost = await aioimaplib_login(smtpsink)
    selected = await client.select("INBOX")
    assert b"1 EXISTS" in selected.lines
    idle = await client.idle_start(timeout=30)
    # The sink runs on its own thread: sending from this loop is fine.
    await aiosmtplib.send(
        raw_message("During IDLE"),
        sender="zed@example.org",
        recipients=[USER],
        hostname=smtpsink.host,
        port=smtpsink.port,
    )
    pushed: list[bytes] = []
    while b"2 EXISTS" not in pushed:
        # The timeout is a safety net only: the push comes at once.
        pushed.extend(await asyncio.wait_for(client.wait_server_push(), 30))
    client.idle_done()
    assert (await asyncio.wait_for(idle, 30)).result == "OK"
    response = await client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert response.result == "OK"
    assert b"Subject: During IDLE" in b"".join(
        line for line in response.lines if isinstance(line, (bytes, bytearray))
    )
    await client.logout()
    # The server closes the connection after LOGOUT; the transport is closed
    # once this loop has run its loss. Ending the test sooner left it open
    # on a loop that pytest-asyncio closes: a ResourceWarning in a later test.
    assert await asyncio.wait_for(lost, 30) is None
    session = [s for s in smtpsink.sessions if s.protocol == "IMAP"][-1]
    assert session.used("IDLE")


@pytest.mark.asyncio
async def test_aioimaplib_sends_its_id(smtpsink: Mailbox) -> None:
    # aioimaplib writes ID ( "name" "my-app" ): a space inside each paren,
    # which Dovecot takes.
    client, lost = await aioimaplib_login(smtpsink)
    response = await client.id(name="my-app", version="1.0")
    assert response.result == "OK", response
    assert any(b"pytest-smtpsink" in line for line in response.lines)
    await client.logout()
    assert await asyncio.wait_for(lost, 30) is None
    session = [s for s in smtpsink.sessions if s.protocol == "IMAP"][-1]
    assert session.used("ID")


# -- django-mailbox ----------------------------------------------------------------
#
# django-mailbox's Mailbox model needs its app installed and a database;
# this suite configures Django once per process without either (the sending
# recipes). Its transports are the code that talks POP3 and IMAP, and
# Mailbox.get_new_mail() drives exactly them, so the tests drive them.


@pytest.fixture
def django_mailbox_transports() -> tuple[type, type]:
    settings = pytest.importorskip("django.conf").settings
    if not settings.configured:
        settings.configure()
    transports = pytest.importorskip("django_mailbox.transports")
    return transports.Pop3Transport, transports.ImapTransport


def test_django_mailbox_pop3_transport_reads_and_deletes(
    smtpsink: Mailbox, django_mailbox_transports: tuple[type, type]
) -> None:
    pop3_transport, _ = django_mailbox_transports
    smtpsink.deliver(raw_message("Ticket 1"), to=USER)
    smtpsink.deliver(raw_message("Ticket 2"), to=USER)
    transport = pop3_transport(smtpsink.pop3.host, smtpsink.pop3.port)
    transport.connect(USER, "pw")
    subjects = [m["Subject"] for m in transport.get_message()]
    assert subjects == ["Ticket 1", "Ticket 2"]
    box = smtpsink.mailbox(USER)
    assert box.stored() == ()
    box.assert_deleted(subject="Ticket 1")


def test_django_mailbox_imap_transport_archives_and_deletes(
    smtpsink: Mailbox, django_mailbox_transports: tuple[type, type]
) -> None:
    _, imap_transport = django_mailbox_transports
    smtpsink.deliver(raw_message("Ticket 3"), to=USER)
    smtpsink.deliver(raw_message("Ticket 4"), to=USER)
    transport = imap_transport(
        smtpsink.imap.host, smtpsink.imap.port, archive="Archive"
    )
    transport.connect(USER, "pw")
    # Only the messages the condition accepts are taken (and then deleted).
    taken = [
        m["Subject"]
        for m in transport.get_message(lambda m: m["Subject"] != "Ticket 3")
    ]
    transport.close()
    assert taken == ["Ticket 4"]
    box = smtpsink.mailbox(USER)
    box.assert_in("INBOX", subject="Ticket 3")
    box.assert_not_in("INBOX", subject="Ticket 4")
    box.assert_in("Archive", subject="Ticket 4")


# -- curl ----------------------------------------------------------------------------


def curl_output(*arguments: str) -> bytes:
    curl = external.require("curl", "apt-get install curl")
    result = subprocess.run(
        [curl, "--silent", "--show-error", *arguments],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout


def test_curl_imap_lists_folders_and_fetches_by_uid(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("via curl"), to=USER)
    sent = smtpsink.deliver(raw_message("by uid"), to=USER, folder="Work")
    (stored,) = smtpsink.mailbox(USER).stored("Work")
    url = smtpsink.imap.url
    listing = curl_output("--user", f"{USER}:pw", f"{url}/")
    assert listing.splitlines() == [
        b'* LIST (\\HasNoChildren) "/" INBOX',
        b'* LIST (\\HasNoChildren) "/" Work',
    ]
    found = curl_output("--user", f"{USER}:pw", f"{url}/Work?SUBJECT%20uid")
    # curl sends SEARCH: a sequence number, not the (sink-wide) UID.
    assert found.strip() == b"* SEARCH 1"
    fetched = curl_output("--user", f"{USER}:pw", f"{url}/Work;UID={stored.uid}")
    assert fetched == sent.raw


@pytest.mark.smtpsink(tls="implicit")
def test_curl_imaps_with_the_sinks_ca(smtpsink: Mailbox) -> None:
    sent = smtpsink.deliver(raw_message("via imaps"), to=USER)
    (stored,) = smtpsink.mailbox(USER).stored()
    assert smtpsink.imap.url.startswith("imaps://")
    fetched = curl_output(
        *("--cacert", smtpsink.imap.ca_path, "--user", f"{USER}:pw"),
        f"{smtpsink.imap.url}/INBOX;UID={stored.uid}",
    )
    assert fetched == sent.raw
    assert smtpsink.sessions[-1].tls is not None
