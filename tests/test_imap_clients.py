"""Real IMAP client libraries against the sink's IMAP server: imap-tools
(its default UID SEARCH CHARSET and UID FETCH, MOVE, APPEND, IDLE) and
IMAPClient (ENVELOPE, BODYSTRUCTURE, non-ASCII search literals, IDLE, MOVE,
NAMESPACE)."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import imap_tools
import imapclient

from pytest_smtpsink import Mailbox, SMTPSink

USER = "ann@example.com"


def raw_message(subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: Zed <zed@example.org>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def test_imap_tools_fetches_moves_deletes_and_appends(smtpsink: Mailbox) -> None:
    smtpsink.deliver(raw_message("Order 1"), to=USER)
    smtpsink.deliver(raw_message("Order 2"), to=USER)
    smtpsink.deliver(raw_message("Junk"), to=USER)
    with imap_tools.MailBoxUnencrypted(smtpsink.imap.host, smtpsink.imap.port).login(
        USER, "pw"
    ) as client:
        subjects = [m.subject for m in client.fetch(mark_seen=False)]
        assert subjects == ["Order 1", "Order 2", "Junk"]
        orders = list(client.fetch(imap_tools.AND(subject="Order")))
        assert [m.subject for m in orders] == ["Order 1", "Order 2"]
        client.folder.create("Processed")
        assert orders[1].uid is not None
        client.move(orders[1].uid, "Processed")
        (junk,) = client.fetch(imap_tools.AND(subject="Junk"), mark_seen=False)
        assert junk.uid is not None
        client.delete(junk.uid)
        client.append(raw_message("Sent copy"), "Processed", flag_set=["\\Seen"])
        assert [f.name for f in client.folder.list()] == ["INBOX", "Processed"]
    box = smtpsink.mailbox(USER)
    box.assert_in("INBOX", subject="Order 1", flags={"\\Seen"})
    box.assert_in("Processed", subject="Order 2", flags={"\\Seen"})
    box.assert_in("Processed", subject="Sent copy", flags={"\\Seen"})
    box.assert_deleted(subject="Junk")
    session = smtpsink.sessions[-1]
    assert session.used("UID")
    assert session.used("UID SEARCH")
    assert session.used("SEARCH")
    assert any(
        (e.argument or "").startswith("CHARSET US-ASCII")
        for e in session.replies_to("UID SEARCH")
    )


def test_imap_tools_query_built_up_in_a_loop_is_served(smtpsink: Mailbox) -> None:
    # imap-tools writes each AND(...) as a parenthesized list, so a query
    # extended term by term nests as deep as it has terms: 21 levels were
    # "BAD Lists nested deeper than 20", where Dovecot answers.
    for subject in ("Order 1", "Order 2", "Order 3 (skip me)"):
        smtpsink.deliver(raw_message(subject), to=USER)
    query = imap_tools.AND(subject="Order")
    for n in range(60):
        query = imap_tools.AND(query, imap_tools.NOT(subject=f"skip {n}"))
    query = imap_tools.AND(query, imap_tools.NOT(subject="skip me"))
    assert str(query).startswith("(" * 62)
    with imap_tools.MailBoxUnencrypted(smtpsink.imap.host, smtpsink.imap.port).login(
        USER, "pw"
    ) as client:
        found = [m.subject for m in client.fetch(query, mark_seen=False)]
    assert found == ["Order 1", "Order 2"]


def test_imap_tools_idle_is_woken_by_smtp_mail(smtpsink: Mailbox) -> None:
    with imap_tools.MailBoxUnencrypted(smtpsink.imap.host, smtpsink.imap.port).login(
        USER, "pw"
    ) as client:
        client.idle.start()  # type: ignore[no-untyped-call]
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as smtp:
            smtp.sendmail("zed@example.org", [USER], raw_message("Wake up"))
        # The timeout is a safety net only: the server answers at once.
        responses = client.idle.poll(timeout=30)
        client.idle.stop()  # type: ignore[no-untyped-call]
        assert b"* 1 EXISTS" in responses
        assert [m.subject for m in client.fetch()] == ["Wake up"]


def test_idle_again_after_changes_between_idles_starts_with_its_continuation(
    smtpsink: Mailbox,
) -> None:
    # The poller's loop: idle, idle_done, fetch, idle. A flag another
    # session set and mail that came between two IDLEs were sent before
    # "+ idling", and both clients, which read the continuation first (as
    # RFC 2177's example and Dovecot send it), raised "Unexpected IDLE
    # response".
    smtpsink.deliver(raw_message("First"), to=USER)
    with (
        imapclient.IMAPClient(
            smtpsink.imap.host, smtpsink.imap.port, ssl=False
        ) as poller,
        imapclient.IMAPClient(
            smtpsink.imap.host, smtpsink.imap.port, ssl=False
        ) as other,
        imap_tools.MailBoxUnencrypted(smtpsink.imap.host, smtpsink.imap.port) as tool,
    ):
        for client in (poller, other):
            client.login(USER, "pw")
            client.select_folder("INBOX")
        tool.login(USER, "pw")
        poller.idle()  # a first round: then no command comes between
        poller.idle_done()
        uids = other.search("ALL")  # IMAPClient's commands take UIDs
        other.add_flags(uids, [imapclient.SEEN], silent=True)
        smtpsink.deliver(raw_message("Second"), to=USER)
        poller.idle()
        # Not idle_check(): it waits on the socket, and what came in the
        # same packet as "+ idling" (it can, from any server) is in the
        # client's buffer already; idle_done() reads that too.
        _, responses = poller.idle_done()
        assert (2, b"EXISTS") in responses
        # This session's \Recent beside the other's \Seen.
        assert (1, b"FETCH", (b"FLAGS", (b"\\Seen", b"\\Recent"))) in responses
        other.remove_flags(uids, [imapclient.SEEN], silent=True)
        # imap-tools raised at start(): "Response status None expected".
        # (Its poll() waits on the socket as idle_check() does.)
        tool.idle.start()  # type: ignore[no-untyped-call]
        tool.idle.stop()  # type: ignore[no-untyped-call]
        (first, _) = tool.fetch(mark_seen=False)
        assert "\\Seen" not in first.flags


def test_imapclient_envelope_structure_search_move_namespace(
    smtpsink_factory: Callable[..., SMTPSink],
) -> None:
    sink = smtpsink_factory(tls="implicit")
    sink.deliver(raw_message("Grüße aus Köln", "Schöne Grüße"), to=USER)
    sink.deliver(raw_message("Plain"), to=USER)
    with imapclient.IMAPClient(
        sink.imap.host, sink.imap.port, ssl=True, ssl_context=sink.imap.ssl_context()
    ) as client:
        client.login(USER, "pw")
        namespace = client.namespace()
        assert namespace.personal == (("", "/"),)
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", "Köln"], charset="UTF-8")
        assert len(uids) == 1
        data = client.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "FLAGS"])[uids[0]]
        envelope = data[b"ENVELOPE"]
        assert envelope.subject.startswith(b"Gr")
        assert envelope.from_[0].mailbox == b"zed"
        assert data[b"BODYSTRUCTURE"][0] == b"text"
        assert data[b"FLAGS"] == (b"\\Recent",)
        client.create_folder("Done")
        client.move(uids, "Done")
        # IMAPClient searches with UID SEARCH: UIDs, not sequence numbers.
        (plain,) = sink.mailbox(USER).stored("INBOX")
        assert client.search("ALL") == [plain.uid]
        client.idle()
        sink.deliver(raw_message("Late"), to=USER)
        responses = client.idle_check(timeout=30)
        client.idle_done()
        assert (2, b"EXISTS") in responses
        client.logout()
    sink.mailbox(USER).assert_in("Done", subject="Grüße aus Köln")
    assert sink.sessions[-1].tls is not None
