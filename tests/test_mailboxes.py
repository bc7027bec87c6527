"""Recipient mailboxes: SMTP delivery into them, `deliver`, `mailbox` and its
assertions, and per-test isolation."""

from __future__ import annotations

import datetime
import email.message
import imaplib
import pathlib
import poplib
import re
import smtplib
from collections.abc import Callable

import pytest
from conftest import plugin_frames

from pytest_smtpsink import Mailbox, Message, SinkError, SMTPSink

RAW = b"From: Zed <zed@example.org>\r\nTo: ann@example.com\r\nSubject: Hello\r\n\r\nHi.\r\n"


def send(sink: Mailbox, to: list[str], subject: str = "Hello", **headers: str) -> None:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    raw = f"From: zed@example.org\r\nSubject: {subject}\r\n{extra}\r\nBody\r\n"
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("zed@example.org", to, raw.encode())


# -- SMTP delivery -------------------------------------------------------------


def test_every_envelope_recipient_gets_a_copy_bcc_included(smtpsink: Mailbox) -> None:
    send(
        smtpsink,
        ["ann@example.com", "bob@example.com", "hidden@example.net"],
        To="ann@example.com",
        Cc="bob@example.com",
    )
    for user in ("ann@example.com", "bob@example.com", "hidden@example.net"):
        smtpsink.mailbox(user).assert_in("INBOX", subject="Hello", flags=())
    # One copy of the bytes, whatever the number of mailboxes.
    first = smtpsink.mailbox("ann@example.com").messages()[0]
    assert smtpsink.mailbox("hidden@example.net").messages()[0] is first
    assert first is smtpsink.messages[0]


def test_a_query_on_a_folder_reports_that_folder(smtpsink: Mailbox) -> None:
    send(smtpsink, ["ann@example.com"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox("ann@example.com").messages().one(subject="Other")
    assert "\nMessages that arrived in ann@example.com's INBOX (1):\n" in str(
        caught.value
    )
    with pytest.raises(
        AssertionError,
        match=r"no messages arrived in bob@example\.com's Archive, so there is no",
    ):
        smtpsink.mailbox("bob@example.com").messages("Archive").first()


def test_addresses_compare_case_insensitively(smtpsink: Mailbox) -> None:
    send(smtpsink, ["Ann@Example.COM"])
    box = smtpsink.mailbox("<ann@example.com>")
    assert box.user == "ann@example.com"
    assert len(box.messages()) == 1


def test_one_copy_per_user_when_a_recipient_is_repeated(smtpsink: Mailbox) -> None:
    send(smtpsink, ["ann@example.com", "ANN@example.com"])
    assert len(smtpsink.mailbox("ann@example.com").messages()) == 1


@pytest.mark.smtpsink(recipient_delimiter="+")
def test_recipient_delimiter_strips_the_detail(smtpsink: Mailbox) -> None:
    send(smtpsink, ["ann+news@example.com"])
    assert len(smtpsink.mailbox("ann@example.com").messages()) == 1
    assert smtpsink.mailbox("ann+other@example.com").user == "ann@example.com"


@pytest.mark.smtpsink(recipient_delimiter="+")
def test_recipient_delimiter_leaves_what_it_cannot_cut(smtpsink: Mailbox) -> None:
    # "+ann" and "+bob" both became the mailbox "@example.com", each user
    # reading the other's mail; a quoted local part was cut inside its
    # quotes ('"ann@example.com'). Postfix cuts neither.
    send(smtpsink, ["+ann@example.com"])
    send(smtpsink, ['"bob+x y"@example.com'])
    assert smtpsink.mailbox("+bob@example.com").messages() == []
    assert smtpsink.mailbox("+ann@example.com").user == "+ann@example.com"
    assert len(smtpsink.mailbox("+ann@example.com").messages()) == 1
    quoted = smtpsink.mailbox('"bob+x y"@example.com')
    assert quoted.user == '"bob+x y"@example.com'
    assert len(quoted.messages()) == 1


def test_quotes_a_local_part_does_not_need_name_the_same_mailbox(
    smtpsink: Mailbox,
) -> None:
    # SMTP read RCPT TO:<"ann"@example.com> as ann@example.com (RFC 5322
    # 3.4.1: the same local part), while mailbox(), deliver(to=) and a
    # login kept the quotes: a second, empty mailbox.
    send(smtpsink, ['"ann"@example.com'])
    smtpsink.deliver(b"Subject: seeded\r\n\r\nx\r\n", to='"ann"@example.com')
    box = smtpsink.mailbox('"ann"@example.com')
    assert box.user == "ann@example.com"
    assert len(box.messages()) == 2
    client = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    try:
        client.user('"ann"@example.com')
        assert client.pass_("pw").startswith(b"+OK Logged in: 2 messages")
    finally:
        client.quit()
    # Quotes it needs stay: another mailbox.
    assert smtpsink.mailbox('"ann smith"@example.com').messages() == []
    assert smtpsink.mailbox('"ann smith"@example.com').user == '"ann smith"@example.com'
    # Written as SMTP's envelope writes them: a needless escape is not kept.
    send(smtpsink, ['"a\\ b"@example.com'])
    assert smtpsink.messages[-1].envelope.rcpt_to == ('"a b"@example.com',)
    for spelling in ('"a b"@example.com', '"a\\ b"@example.com'):
        assert len(smtpsink.mailbox(spelling).messages()) == 1, spelling


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (
            "ann@example.com, bob@example.com",
            "mailbox(): 'ann@example.com, bob@example.com' names 2 addresses; a "
            "mailbox is one address's: mailbox('ann@example.com'), ...",
        ),
        ("ann@@example.com", "mailbox(): 'ann@@example.com' is not an address"),
        ("<>", "mailbox(): '<>' is not an address"),
        # No "@", but blanks: a slip, not a login name (as deliver(to=) says).
        ("ann example.com", "mailbox(): 'ann example.com' is not an address"),
        ("not an address", "mailbox(): 'not an address' is not an address"),
        # The sink's SMTP refuses them (553 5.1.3): no mail reaches them.
        (
            "ann@example.com.",
            "mailbox(): 'ann@example.com.' is not an address: a "
            "domain has no dot at its start or end, nor two together",
        ),
        ("ann@example..com", "mailbox(): 'ann@example..com' is not an address: a "),
        (
            '"a\tb"@example.com',
            "mailbox(): '\"a\\tb\"@example.com' is not an address: no control",
        ),
    ],
)
def test_mailbox_takes_one_address(smtpsink: Mailbox, address: str, error: str) -> None:
    # Each named an empty mailbox no mail reaches: assert_not_in() and
    # messages() == [] on it passed whatever the application did.
    with pytest.raises(ValueError, match=re.escape(error)):
        smtpsink.mailbox(address)


def test_mailbox_takes_any_login_name_without_an_at(smtpsink: Mailbox) -> None:
    # POP3 and IMAP take any user name; an application that logs in as
    # CORP\ann and appends mail must find it with mailbox().
    smtpsink.deliver(b"Subject: hi\r\n\r\nx\r\n", to="ann@example.com")
    imap = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    try:
        imap.login("CORP\\ann", "pw")
        imap.append("INBOX", None, None, b"Subject: saved\r\n\r\nx\r\n")
    finally:
        imap.logout()
    smtpsink.mailbox("CORP\\ann").assert_in(subject="saved")


def test_without_a_delimiter_plus_addresses_are_separate_users(
    smtpsink: Mailbox,
) -> None:
    send(smtpsink, ["ann+news@example.com"])
    assert len(smtpsink.mailbox("ann@example.com").messages()) == 0
    assert len(smtpsink.mailbox("ann+news@example.com").messages()) == 1


def test_a_bad_recipient_delimiter_names_the_setting() -> None:
    from pytest_smtpsink import SettingsError

    with pytest.raises(SettingsError, match="recipient_delimiter"):
        SMTPSink(recipient_delimiter="ab")


def test_uids_ascend_and_are_never_reused_after_a_clear() -> None:
    with SMTPSink() as sink:
        send(sink, ["ann@example.com"])
        send(sink, ["ann@example.com"])
        first = [s.uid for s in sink.mailbox("ann@example.com").stored()]
        assert first[0] < first[1]
        sink.clear()
        assert sink.mailbox("ann@example.com").stored() == ()
        send(sink, ["ann@example.com"])
        (after,) = sink.mailbox("ann@example.com").stored()
        assert after.uid > max(first)


def test_mail_sent_before_the_first_look_is_in_the_mailbox() -> None:
    # The mailboxes are made on first use, from what the sink holds then.
    with SMTPSink() as sink:
        send(sink, ["ann@example.com"], subject="early")
        assert sink._store._mail is None  # nothing asked for them yet
        sink.mailbox("ann@example.com").assert_in(subject="early")
        send(sink, ["ann@example.com"], subject="late")
        sink.mailbox("ann@example.com").assert_in(subject="late")


def test_an_unknown_user_has_an_empty_inbox(smtpsink: Mailbox) -> None:
    box = smtpsink.mailbox("nobody@example.com")
    assert box.folders == ("INBOX",)
    assert box.messages() == []
    assert box.deleted() == []


# -- deliver() -------------------------------------------------------------------


def test_deliver_bytes_keeps_them_exactly(smtpsink: Mailbox) -> None:
    raw = b"Subject: odd\nX-Bare: lf\r\n\r\nbody"
    message = smtpsink.deliver(raw, to="ann@example.com")
    assert message.raw == raw
    assert message.subject == "odd"
    (stored,) = smtpsink.mailbox("ann@example.com").stored()
    assert stored.message is message
    # POP3 and IMAP count octets with CRLF line ends.
    assert stored.size == len(raw) + 1


def test_deliver_text_gets_crlf_and_recipients_from_the_headers(
    smtpsink: Mailbox,
) -> None:
    message = smtpsink.deliver(
        "From: zed@example.org\nTo: ann@example.com\nCc: Bob <bob@example.com>\n"
        "Bcc: carl@example.com\nSubject: Café\n\nbody\n"
    )
    assert b"\r\nSubject: Caf\xc3\xa9\r\n" in message.raw
    assert message.envelope.rcpt_to == (
        "ann@example.com",
        "bob@example.com",
        "carl@example.com",
    )
    assert message.envelope.mail_from == "zed@example.org"
    assert message.session.protocol == "deliver"
    assert message.number == 0
    for user in message.envelope.rcpt_to:
        smtpsink.mailbox(user).assert_in(subject="Café")


def test_delivered_mail_is_not_mail_the_application_sent(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW)
    smtpsink.assert_nothing_sent()
    assert smtpsink.sessions == ()


def test_assert_sent_says_when_the_match_was_put_in_without_smtp(
    smtpsink: Mailbox,
) -> None:
    # A reader test seeds with deliver(), then asks assert_sent about that
    # mail: "no client connected: is the code given this host and port?"
    # alone sent the reader after the wrong cause.
    smtpsink.deliver(RAW)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Hello")
    text = str(caught.value)
    assert re.search(
        r"^Hint: 1 message matching was put in without SMTP \(deliver\(\) or IMAP "
        r"APPEND\): assert_sent and wait_for count only the mail sent over SMTP; "
        r"assert on a recipient's mailbox with "
        r"smtpsink\.mailbox\(address\)\.assert_in\(\.\.\.\):\n"
        r"  deliver\(\) .* \| Subject: 'Hello' \| \d+ bytes$",
        text,
        re.M,
    ), text
    # Nor the hint that contradicts it (found by a new-user trial).
    assert "no client connected" not in text
    # The same for wait_for; and nothing is said when the seeded mail does
    # not match, where the hint about the host and port is the useful one.
    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_for(subject="Hello", timeout=0)
    assert "\nHint: 1 message matching was put in without SMTP" in str(caught.value)
    assert "no client connected" not in str(caught.value)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Other")
    assert "put in without SMTP" not in str(caught.value), caught.value
    assert "\nHint: no client connected to " in str(caught.value)
    # Without criteria, "matching" is left out.
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert "\nHint: 1 message was put in without SMTP (deliver() or IMAP APPEND): " in (
        str(caught.value)
    )


def test_reading_api_misuse_points_at_the_test_line(pytester: pytest.Pytester) -> None:
    # As the assertions' misuse errors do: no frame of the plugin's in the
    # traceback of deliver(), mailbox() or a flag spelt without backslash.
    pytester.makepyfile(
        """
RAW = b"Subject: x\\r\\n\\r\\nhi\\r\\n"

def test_flag_without_backslash(smtpsink):
    smtpsink.mailbox("ann@example.com").assert_in(flags={"Seen"})

def test_text_without_header(smtpsink):
    smtpsink.deliver("no header here")

def test_flags_none(smtpsink):
    smtpsink.deliver(RAW, to="ann@example.com", flags=None)

def test_empty_folder_level(smtpsink):
    smtpsink.deliver(RAW, to="ann@example.com", folder="a//b")

def test_not_an_address(smtpsink):
    smtpsink.deliver(RAW, to=["ann@example.com", "not an address"])

def test_no_recipients(smtpsink):
    smtpsink.deliver(RAW)

def test_mailbox_of_a_number(smtpsink):
    smtpsink.mailbox(5)
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=7)
    result.stdout.fnmatch_lines(
        [
            '>       smtpsink.mailbox("ann@example.com").assert_in(flags={"Seen"})',
            "E       ValueError: 'Seen' would be a keyword; *",
            '>       smtpsink.deliver("no header here")',
            "E       ValueError: 'no header here' is not a message (no header); *",
            '>       smtpsink.deliver(RAW, to="ann@example.com", flags=None)',
            "E       TypeError: flags must be a collection of flags, *",
            '>       smtpsink.deliver(RAW, to="ann@example.com", folder="a//b")',
            "E       ValueError: 'a//b' is not a folder name: *",
            '>       smtpsink.deliver(RAW, to=["ann@example.com", "not an address"])',
            "E       ValueError: to: 'not an address' is not an address",
            ">       smtpsink.deliver(RAW)",
            "E       ValueError: deliver() needs to=...: *",
            ">       smtpsink.mailbox(5)",
            "E       TypeError: mailbox() takes an address, got 5",
        ]
    )
    assert plugin_frames(result.stdout.str()) == []


def test_deliver_an_email_message_and_a_path(
    smtpsink: Mailbox, tmp_path: pathlib.Path
) -> None:
    built = email.message.EmailMessage()
    built["From"] = "zed@example.org"
    built["To"] = "ann@example.com"
    built["Subject"] = "Built"
    built.set_content("Hello\n")
    message = smtpsink.deliver(built)
    assert b"\r\n\r\nHello\r\n" in message.raw
    assert b"\n" not in message.raw.replace(b"\r\n", b"")
    path = tmp_path / "saved.eml"
    path.write_bytes(RAW)
    assert smtpsink.deliver(path).raw == RAW
    assert [m.subject for m in smtpsink.mailbox("ann@example.com").messages()] == [
        "Built",
        "Hello",
    ]


def test_deliver_into_a_folder_with_flags_and_a_date(smtpsink: Mailbox) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    smtpsink.deliver(RAW, folder="Archive/2026", flags={"\\seen", "$Label1"}, date=when)
    box = smtpsink.mailbox("ann@example.com")
    assert box.folders == ("INBOX", "Archive/2026")
    (stored,) = box.stored("Archive/2026")
    assert stored.flags == {"\\Seen", "$Label1"}
    assert stored.internal_date == when
    box.assert_in("Archive/2026", subject="Hello", flags={"\\Seen", "$Label1"})
    # A keyword is one whatever its case, as the IMAP server takes it (a
    # STORE of $label sets this $Label1's like): the assertion agrees.
    box.assert_in("Archive/2026", subject="Hello", flags={"\\seen", "$LABEL1"})
    with pytest.raises(
        AssertionError, match=r"with flags \{\$Label2, \\Seen\}; found "
    ):
        box.assert_in("Archive/2026", flags={"\\Seen", "$Label2"})
    assert box.messages("inbox") == []


def test_a_folder_read_with_a_trailing_delimiter_is_the_folder(
    smtpsink: Mailbox,
) -> None:
    # deliver() and IMAP's CREATE take "Archive/" as Archive; so do the
    # mailbox's reads and assertions, rather than finding nothing there.
    smtpsink.deliver(RAW, folder="Archive/", flags={"\\Deleted"})
    box = smtpsink.mailbox("ann@example.com")
    assert box.folders == ("INBOX", "Archive")
    assert [m.subject for m in box.messages("Archive/")] == ["Hello"]
    assert len(box.stored("Archive/")) == 1
    box.assert_in("Archive/", subject="Hello")
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10) as client:
        client.login("ann@example.com", "x")
        client.select("Archive")
        client.expunge()
    assert [m.subject for m in box.deleted("Archive/")] == ["Hello"]
    box.assert_not_in("Archive/", subject="Hello")


def test_one_copy_of_the_bytes_for_every_recipient(smtpsink: Mailbox) -> None:
    message = smtpsink.deliver(RAW, to=["ann@example.com", "bob@example.com"])
    for user in ("ann@example.com", "bob@example.com"):
        (stored,) = smtpsink.mailbox(user).stored()
        assert stored.message is message


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"flags": {"\\Recent"}}, ValueError, "unknown system flag '\\\\Recent'"),
        ({"flags": "\\Seen"}, ValueError, "a collection of flags"),
        ({"flags": {"two words"}}, ValueError, "cannot be an IMAP keyword"),
        (
            {"flags": {"Seen"}},
            ValueError,
            "'Seen' would be a keyword; the system flag is '\\\\Seen' "
            "(with a backslash)",
        ),
        ({"date": datetime.datetime(2026, 1, 1)}, ValueError, "timezone-aware"),
        ({"date": "2026-01-01"}, TypeError, "datetime.datetime"),
        (
            # Local mean time (+00:19:32): the instant is before year 1 in UTC.
            {
                "date": datetime.datetime(
                    1,
                    1,
                    1,
                    tzinfo=datetime.timezone(
                        datetime.timedelta(minutes=19, seconds=32)
                    ),
                )
            },
            ValueError,
            "date 0001-01-01 00:00:00+00:19:32 cannot be an IMAP internal date: "
            "its zone has seconds, and in UTC it is before the year 1",
        ),
        ({"folder": ""}, ValueError, "folder must be a folder name"),
        ({"to": []}, ValueError, "to must be an address"),
        # Not TypeErrors from deep inside ("'NoneType' object is not iterable").
        ({"flags": None}, TypeError, "flags must be a collection of flags"),
        ({"to": 5}, TypeError, "to must be an address or a list of addresses, got 5"),
        ({"folder": 5}, TypeError, "folder must be a folder name, got 5"),
    ],
)
def test_deliver_refuses_bad_arguments_clearly(
    smtpsink: Mailbox, kwargs: dict[str, object], error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as raised:
        smtpsink.deliver(RAW, **kwargs)  # type: ignore[arg-type]
    assert says in str(raised.value)
    assert smtpsink.mailbox("ann@example.com").messages() == []


def test_reads_refuse_a_folder_that_is_no_name(smtpsink: Mailbox) -> None:
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(TypeError, match="folder must be a folder name, got 5"):
        box.deleted(5)  # type: ignore[arg-type]
    # "" was read as a folder that is always empty (deliver() refuses it).
    for read in (box.stored, box.messages, box.deleted, box.assert_not_in):
        with pytest.raises(ValueError, match="folder must be a folder name, got ''"):
            read("")
    with pytest.raises(TypeError, match=r"mailbox\(\) takes an address, got 5"):
        smtpsink.mailbox(5)  # type: ignore[arg-type]


def test_a_stopped_sink_says_what_it_cannot_do() -> None:
    """Delivering to a stopped sink is refused (no server could ever read
    it), and its POP3 and IMAP servers cannot start: each error says which,
    not "cannot wait for mail"."""
    sink = SMTPSink()
    sink.start()
    view = sink.view()
    sink.stop()
    with pytest.raises(
        SinkError, match=r"^cannot deliver mail: the SMTP sink was stopped$"
    ):
        view.deliver(RAW)
    for name in ("pop3", "imap"):
        with pytest.raises(
            SinkError,
            match=f"^cannot start its {name.upper()} server: the SMTP sink was stopped$",
        ):
            getattr(view, name)
    assert view.mailbox("ann@example.com").messages() == []


def test_deliver_needs_recipients_when_the_headers_name_none(
    smtpsink: Mailbox,
) -> None:
    with pytest.raises(ValueError, match=r"needs to=\.\.\."):
        smtpsink.deliver(b"Subject: no one\r\n\r\n")


@pytest.mark.parametrize(
    "header", [b"ann lee@example.com", b"a\x01b@example.com", b"<c@x.example>, d e@x"]
)
def test_deliver_checks_header_addresses_as_it_checks_to(
    smtpsink: Mailbox, header: bytes
) -> None:
    # They made mailboxes such as "ann lee@example.com", which no mail over
    # SMTP reaches (the same address as to= is refused).
    with pytest.raises(ValueError, match=r"needs to=\.\.\. .* is not an address"):
        smtpsink.deliver(b"To: " + header + b"\r\nSubject: s\r\n\r\nx\r\n")
    assert smtpsink.mailbox("c@x.example").messages() == []  # nothing half-done
    assert smtpsink.deliver(
        b"To: " + header + b"\r\nSubject: s\r\n\r\nx\r\n", to="ann@example.com"
    ).envelope.rcpt_to == ("ann@example.com",)


def test_deliver_says_how_to_pass_a_file(smtpsink: Mailbox) -> None:
    with pytest.raises(ValueError, match=r"pathlib\.Path"):
        smtpsink.deliver("mail/welcome.eml", to="ann@example.com")
    with pytest.raises(TypeError, match=r"bytes, str, an email\.message\.Message"):
        smtpsink.deliver(42, to="ann@example.com")  # type: ignore[arg-type]


def test_malformed_mail_is_kept_and_readable(smtpsink: Mailbox) -> None:
    raw = b"\x00\xff garbage without a header\r\n\r\n=?x?q?\xff?=\r\n"
    message = smtpsink.deliver(raw, to="ann@example.com")
    assert message.raw == raw
    assert message.summary().startswith("deliver() "), message.summary()
    assert repr(message).startswith("<Message deliver() ")
    assert smtpsink.mailbox("ann@example.com").messages()[0].raw == raw


# -- assertions ------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["ann@example.com", "CORP\\ann"])
def test_mail_put_in_at_the_tests_other_sink_is_pointed_at(
    smtpsink: Mailbox, smtpsink_factory: Callable[..., Mailbox], user: str
) -> None:
    # The hint looked only at mail sent over SMTP: mail put in with
    # deliver() (how a reading test seeds its mail) at the other sink, or
    # APPENDed there, went unmentioned.
    other = smtpsink_factory(hostname="other.test")
    if "@" in user:
        other.deliver(RAW, to=user)
    else:  # APPENDed, as a client that logs in with that name would
        imap = imaplib.IMAP4(other.imap.host, other.imap.port)
        imap.login(user, "pw")
        imap.append("INBOX", None, None, RAW)
        imap.logout()
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox(user).assert_in(subject="Hello")
    text = str(caught.value)
    assert (
        f"\nHint: 1 matching message arrived at another sink of this test, "
        f"{other.sink.url}:\n  "
    ) in text, text
    assert text.endswith("Subject: 'Hello' | 73 bytes"), text


def test_deliver_seeds_a_login_names_mailbox(smtpsink: Mailbox) -> None:
    # mailbox() and IMAP LOGIN took "CORP\\ann"; deliver(to=) refused it,
    # so its mailbox could be seeded only by APPEND.
    smtpsink.deliver(RAW, to="CORP\\ann")
    assert smtpsink.mailbox("CORP\\ann").assert_in(subject="Hello")
    imap = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
    imap.login("CORP\\ann", "pw")
    assert imap.select("INBOX") == ("OK", [b"1"])
    imap.logout()
    with pytest.raises(ValueError, match="to: "):
        smtpsink.deliver(RAW, to="ann lee@example.com")  # addresses still checked


def test_assert_in_lists_every_folder_with_flags(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW, flags={"\\Seen"})
    smtpsink.deliver(RAW.replace(b"Hello", b"Invoice"), folder="Processed")
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Processed", subject="Hello")
    text = str(failure.value)
    assert text.startswith(
        "expected exactly 1 message in ann@example.com's Processed matching "
        "subject='Hello'; found 0.\n"
    )
    # The match in another folder is marked, and named: the application
    # moved it, or never did (a "Closest" guess in Processed said less).
    assert "  INBOX (1 message):\n  * uid " in text, text
    assert re.search(
        r"\nHint: 1 matching message is in another folder: INBOX \(uid \d+\)$", text
    ), text
    assert "Closest" not in text
    # With flags= asked for, the hint gives each match's: the folder may not
    # be the only slip (it called a copy "matching" whatever its flags).
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Processed", subject="Hello", flags=())
    assert re.search(
        r"\nHint: 1 matching message is in another folder: INBOX \(uid \d+, "
        r"flags \{\\Seen\}\)$",
        str(failure.value),
    ), str(failure.value)
    # Mail that never crossed SMTP has no number in the sink: it says so.
    assert "[\\Seen] deliver() " in text, text
    assert "#0" not in text
    assert "[\\Seen]" in text
    assert "  Processed (1 message):" in text
    assert "Subject: 'Invoice'" in text
    # A folder that does not exist (a typo?) is named as such, with the
    # folder it likely meant, as assert_not_in names it.
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Procesed", subject="Invoice")
    assert (
        "; found 0 (there is no folder 'Procesed': did you mean 'Processed'?).\n"
        in str(failure.value)
    )
    with pytest.raises(AssertionError) as failure:
        box.assert_in("Junk", subject="Invoice")
    assert "; found 0 (there is no folder 'Junk').\n" in str(failure.value)
    with pytest.raises(TypeError, match="flags\\(\\) takes a Message, got UserMailbox"):
        box.flags(box)  # type: ignore[arg-type]


def test_mailbox_reports_mark_matches_and_name_the_closest(smtpsink: Mailbox) -> None:
    # They listed a folder's first 20 unmarked: a match past them was not
    # shown, and assert_in named no closest message and gave no hints.
    for n in range(25):
        smtpsink.deliver(RAW.replace(b"Hello", f"Note {n}".encode()))
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(AssertionError) as caught:
        box.assert_not_in(subject=re.compile("Note 2[23]"))
    text = str(caught.value)
    assert re.search(
        r"\n    \.\.\. 5 more\n(    uid .*\n){17}  \* uid \d+ \[-\] deliver\(\) "
        r".*'Note 22'.*\n  \* uid \d+ .*'Note 23'.*\n    uid \d+ .*'Note 24'",
        text,
    ), text
    assert text.endswith("\n(* marks the messages that match)"), text
    with pytest.raises(AssertionError) as caught:
        box.assert_in(subject="note 7")
    text = str(caught.value)
    assert "(* marks" not in text
    # Every message misses the one criterion: the nearest subject is named.
    uid = box.stored()[7].uid
    assert (
        f"\nClosest: uid {uid}, which differs in:\n  subject: wanted 'note 7', got "
        "'Note 7'\nHint: subject= is case-sensitive: the deliver() message's "
        "subject 'Note 7' is the same text in another case; use re.compile('note\\\\ 7', "
        "re.IGNORECASE)"
    ) in text, text
    # One older than the 20 newest is listed too, as assert_sent lists it:
    # the report named a closest message it left out.
    with pytest.raises(AssertionError) as caught:
        box.assert_in(subject="note 1")
    text = str(caught.value)
    uid = box.stored()[1].uid
    assert f"\nClosest: uid {uid}, which differs in:" in text, text
    assert re.search(
        rf"\n    \.\.\. 1 more\n    uid {uid} \[-\] .*'Note 1'.*\n    \.\.\. 4 more\n",
        text,
    ), text


def test_assert_in_names_another_mailbox_that_has_the_match(
    smtpsink: Mailbox,
) -> None:
    # The usual slip, mail to another (or a mistyped) recipient, was the
    # one case without a hint.
    send(smtpsink, ["ann@example.com"])
    smtpsink.deliver(b"Subject: Invoice 2\r\n\r\nx\r\n", to="bob@example.com")
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox("ann@example.com").assert_in(subject="Invoice 2")
    uid = smtpsink.mailbox("bob@example.com").stored()[0].uid
    assert str(caught.value).endswith(
        "\nHint: 1 matching message is in another mailbox of this sink: "
        f"bob@example.com's INBOX (uid {uid})"
    ), caught.value


def test_a_criterion_that_raises_on_another_mailboxs_mail_is_no_hint(
    smtpsink: Mailbox,
) -> None:
    # The hint above ran the test's predicate on bob's mail: its error
    # (bob's message has no Subject) came in place of the report about
    # ann, and ended the documented wait_until(lambda: box.assert_in(...)).
    smtpsink.deliver(b"Subject: Welcome\r\n\r\nx\r\n", to="ann@example.com")
    smtpsink.deliver(b"X-Note: no subject\r\n\r\nx\r\n", to="bob@example.com")
    # Nor mail in another folder of this mailbox (a draft without one).
    smtpsink.deliver(
        b"X-Note: a draft\r\n\r\nx\r\n", to="ann@example.com", folder="Drafts"
    )
    box = smtpsink.mailbox("ann@example.com")

    def starts_with_invoice(subject: str) -> bool:
        return subject.startswith("Invoice")

    with pytest.raises(AssertionError) as caught:
        box.assert_in(subject=starts_with_invoice)
    assert "expected exactly 1 message in ann@example.com's INBOX" in str(caught.value)
    with pytest.raises(AssertionError, match=r"still false after 0\.2 s"):
        smtpsink.wait_until(
            lambda: box.assert_in(subject=starts_with_invoice), timeout=0.2
        )


def test_an_empty_mailbox_names_the_mailboxes_that_have_mail(
    smtpsink: Mailbox,
) -> None:
    smtpsink.deliver(RAW, to="help@acme.test")
    smtpsink.deliver(RAW, to="sales@acme.test")
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox("support@acme.test").assert_in(subject="Hello")
    assert (
        "support@acme.test's mailbox is empty (no mail arrived for it). "
        "Mailboxes with mail: help@acme.test, sales@acme.test.\n"
    ) in str(caught.value), caught.value
    # And which of them hold a match (UIDs are the sink's: see its mailboxes).
    help_uid = smtpsink.mailbox("help@acme.test").stored()[0].uid
    sales_uid = smtpsink.mailbox("sales@acme.test").stored()[0].uid
    assert str(caught.value).endswith(
        "Hint: 2 matching messages are in other mailboxes of this sink: "
        f"help@acme.test's INBOX (uid {help_uid}), sales@acme.test's INBOX "
        f"(uid {sales_uid})"
    ), caught.value


def test_assert_in_with_flags_says_which_flags_it_has(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW)
    with pytest.raises(AssertionError, match=r"found it with flags \{\} \(none\)"):
        smtpsink.mailbox("ann@example.com").assert_in(subject="Hello", flags={"\\Seen"})


def test_assert_not_in_and_assert_deleted(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW)
    box = smtpsink.mailbox("ann@example.com")
    box.assert_not_in("INBOX", subject="Other")
    with pytest.raises(
        AssertionError, match=r"expected no message in ann@example\.com's INBOX"
    ):
        box.assert_not_in(subject="Hello")
    with pytest.raises(AssertionError, match="expected a message deleted from"):
        box.assert_deleted(subject="Hello")


def test_a_long_list_of_deleted_mail_says_how_much_it_leaves_out(
    smtpsink: Mailbox,
) -> None:
    for _ in range(23):
        smtpsink.deliver(RAW)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10) as client:
        client.login("ann@example.com", "x")
        client.select("INBOX")
        client.store("1:*", "+FLAGS", "(\\Deleted)")
        client.expunge()
    box = smtpsink.mailbox("ann@example.com")
    assert len(box.deleted()) == 23
    with pytest.raises(AssertionError) as failure:
        box.assert_in(subject="Hello")
    text = str(failure.value)
    assert text.count("    (deleted) ") == 20
    assert text.endswith("\n    ... and 3 more deleted or moved"), text


def test_assert_in_takes_system_flags_with_their_backslash(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW, flags={"\\Seen"})
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(ValueError, match=r"'flagged' would be a keyword; the system"):
        box.assert_in(subject="Hello", flags={"flagged"})
    box.assert_in(subject="Hello", flags={"\\Seen"})


def test_an_imap_client_may_still_set_such_a_keyword(smtpsink: Mailbox) -> None:
    # Only a test's spelling is refused: IMAP allows the keyword.
    smtpsink.deliver(RAW)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port) as client:
        client.login("ann@example.com", "x")
        client.select("INBOX")
        assert client.store("1", "+FLAGS", "(Seen)")[0] == "OK"
    (stored,) = smtpsink.mailbox("ann@example.com").stored()
    assert stored.flags == {"Seen"}


def test_flags_of_a_message_not_there_is_a_key_error(smtpsink: Mailbox) -> None:
    message: Message = smtpsink.deliver(RAW)
    box = smtpsink.mailbox("ann@example.com")
    assert box.flags(message) == frozenset()
    with pytest.raises(KeyError, match=r"is not in ann@example\.com's Junk"):
        box.flags(message, "Junk")


# -- per-test isolation ----------------------------------------------------------------


def test_each_test_sees_only_its_own_mailboxes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_one(smtpsink):
            smtpsink.deliver(b"Subject: one\\r\\n\\r\\n", to="ann@example.com")
            assert len(smtpsink.mailbox("ann@example.com").messages()) == 1

        def test_two(smtpsink):
            box = smtpsink.mailbox("ann@example.com")
            assert box.messages() == []
            smtpsink.deliver(b"Subject: two\\r\\n\\r\\n", to="ann@example.com")
            assert [m.subject for m in box.messages()] == ["two"]
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_assert_not_in_a_misspelt_folder_fails(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW, folder="Archive")
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(AssertionError) as raised:
        box.assert_not_in("Archiv", subject="Hello")
    assert str(raised.value).startswith(
        "expected no message in ann@example.com's Archiv, but there is no "
        "folder 'Archiv' (did you mean 'Archive'?).\n"
        "ann@example.com's mailbox:\n"
    )
    # A folder that was never made, and is not a slip for one, holds nothing.
    box.assert_not_in("Junk", subject="Hello")
    box.assert_not_in("Archive", subject="Other")


@pytest.mark.parametrize(
    ("folder", "trimmed"),
    [
        (" Archive", "Archive"),
        ("Archive ", "Archive"),
        ("Archive/ 2024", "Archive/2024"),
        # Not "Archive//x", which deliver() refuses too.
        ("Archive/ /x", "Archive/x"),
    ],
)
def test_deliver_refuses_a_folder_name_with_whitespace_at_an_edge(
    smtpsink: Mailbox, folder: str, trimmed: str
) -> None:
    # deliver(folder=" Archive") made a folder no test meant, and the
    # assertion on "Archive" then failed with the space hard to see.
    with pytest.raises(ValueError, match=r"^folder=") as raised:
        smtpsink.deliver(RAW, folder=folder)
    assert str(raised.value) == (
        f"folder={folder!r} has whitespace at the start or end of a name (did "
        f"you mean {trimmed!r}?): a client would have to name it so exactly"
    )
    assert smtpsink.mailbox("ann@example.com").folders == ("INBOX",)


def test_a_folder_an_imap_client_named_with_a_space_is_quoted_and_suggested(
    smtpsink: Mailbox,
) -> None:
    # IMAP allows " Archive" (Dovecot makes it on CREATE, as the IMAP
    # server does); a listing showed it as "   Archive (1 message):".
    smtpsink.deliver(RAW)
    with imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port, timeout=10) as client:
        client.login("ann@example.com", "x")
        assert client.create('" Archive"')[0] == "OK"
        client.select("INBOX")
        assert client.uid("MOVE", "1:*", '" Archive"')[0] == "OK"
        client.logout()
    box = smtpsink.mailbox("ann@example.com")
    assert box.folders == ("INBOX", " Archive")
    with pytest.raises(AssertionError) as raised:
        box.assert_in("Archive", subject="Hello")
    text = str(raised.value)
    uid = box.stored(" Archive")[0].uid
    assert text.startswith(
        "expected exactly 1 message in ann@example.com's Archive matching "
        "subject='Hello'; found 0 (there is no folder 'Archive': did you mean "
        "' Archive'?).\n"
    ), text
    assert "\n  ' Archive' (1 message):\n" in text
    assert "    (moved to ' Archive') uid " in text
    assert (
        f"Hint: 1 matching message is in another folder: ' Archive' (uid {uid})" in text
    )
    with pytest.raises(AssertionError, match=r"in ann@example\.com's ' Archive'"):
        box.assert_not_in(" Archive", subject="Hello")


def test_assert_in_says_the_hierarchy_delimiter_is_a_slash(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW, folder="INBOX/Archive")
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(AssertionError) as raised:
        box.assert_in("INBOX.Archive", subject="Hello")
    assert (
        "found 0 (there is no folder 'INBOX.Archive': the hierarchy delimiter "
        "is '/'; did you mean 'INBOX/Archive'?).\n"
    ) in str(raised.value)
    # The same slip passed assert_not_in unless difflib found it close.
    with pytest.raises(AssertionError, match=r"\(did you mean 'INBOX/Archive'\?\)"):
        box.assert_not_in("INBOX.Archive", subject="Hello")
    box.assert_not_in("Junk", subject="Hello")


def test_assert_in_says_a_subject_given_as_the_folder_is_the_folder(
    smtpsink: Mailbox,
) -> None:
    # assert_in("Hello") said only "there is no folder 'Hello'".
    smtpsink.deliver(RAW)
    box = smtpsink.mailbox("ann@example.com")
    with pytest.raises(AssertionError) as raised:
        box.assert_in("hello")
    assert (
        "found 0 (there is no folder 'hello': the first argument is the folder; "
        "did you mean subject='hello'?).\n"
    ) in str(raised.value)
    with pytest.raises(AssertionError) as raised:
        box.assert_in("Printer on fire")
    assert "found 0 (there is no folder 'Printer on fire').\n" in str(raised.value)
    # Not with a subject= of its own, nor for a word of a subject: a folder
    # ("Sent") the application has not made yet.
    with pytest.raises(AssertionError) as raised:
        box.assert_in("Hello", subject="Hello")
    assert "(there is no folder 'Hello').\n" in str(raised.value)
    with pytest.raises(AssertionError) as raised:
        box.assert_in("Hell")
    assert "(there is no folder 'Hell').\n" in str(raised.value)


def test_a_mailbox_may_be_named_as_a_header_names_it(smtpsink: Mailbox) -> None:
    smtpsink.deliver(RAW)
    for address in ("Ann <ann@example.com>", '"Ann, A." <Ann@Example.com>'):
        box = smtpsink.mailbox(address)
        assert box.user == "ann@example.com"
        box.assert_in(subject="Hello")


def test_addresses_differing_beyond_case_have_mailboxes_of_their_own(
    smtpsink: Mailbox,
) -> None:
    # casefold() made straße@ strasse@ (and ﬁ fi): one mailbox for two
    # recipients.
    smtpsink.deliver(RAW.replace(b"Hello", b"For strasse"), to="strasse@example.com")
    smtpsink.deliver(RAW.replace(b"Hello", b"For strasse"), to="Strasse@Example.com")
    smtpsink.deliver(
        RAW.replace(b"Hello", "For straße".encode()), to="straße@example.com"
    )
    assert len(smtpsink.mailbox("strasse@example.com").messages()) == 2
    smtpsink.mailbox("STRAßE@example.com").assert_in(subject="For straße")
    assert smtpsink.mailbox("straße@example.com").user == "straße@example.com"


def test_a_domain_in_a_labels_and_in_unicode_is_one_mailbox(smtpsink: Mailbox) -> None:
    # They were two mailboxes: POP3 and IMAP clients that log in with the
    # A-label (as many must) found none of the mail sent to straße.example.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "zed@example.org",
            ["ann@straße.example"],
            b"Subject: unicode\r\n\r\nx\r\n",
            mail_options=["SMTPUTF8"],
        )
        client.sendmail(
            "zed@example.org",
            ["Ann@XN--STRAE-OQA.example"],
            b"Subject: ace\r\n\r\nx\r\n",
        )
    box = smtpsink.mailbox("ann@xn--strae-oqa.example")
    assert box.user == "ann@straße.example"
    assert sorted(str(m.subject) for m in box.messages()) == ["ace", "unicode"]
    pop3 = poplib.POP3(smtpsink.pop3.host, smtpsink.pop3.port, timeout=10)
    pop3.user("ann@xn--strae-oqa.example")
    pop3.pass_("any")
    assert pop3.stat()[0] == 2
    pop3.quit()
    # Punycode that decodes to ASCII is no A-label: a mailbox of its own.
    smtpsink.deliver(RAW, to="ann@xn--abc-.example")
    assert smtpsink.mailbox("ann@abc.example").messages() == []
    assert smtpsink.mailbox("ann@xn--abc-.example").user == "ann@xn--abc-.example"


def test_deliver_takes_a_raw_utf8_sender_as_text(smtpsink: Mailbox) -> None:
    # The compat32 parser's header object gave "j\ufffd\ufffd@example.com".
    raw = "From: Jörg <jö@example.com>\r\nSubject: x\r\n\r\nx\r\n".encode()
    message = smtpsink.deliver(raw, to="ann@example.com")
    assert message.envelope.mail_from == "jö@example.com"


def test_deliver_takes_raw_utf8_recipients_from_the_headers(smtpsink: Mailbox) -> None:
    # They were "j\ufffd\ufffdrgen@b\ufffd\ufffdcher.example": a mailbox
    # no one has, so the mail was lost.
    raw = (
        "To: J\u00fcrgen <j\u00fcrgen@b\u00fccher.example>\r\n"
        "Cc: ann@example.com,\r\n z\u00f6e@example.com\r\nSubject: x\r\n\r\nx\r\n"
    ).encode()
    message = smtpsink.deliver(raw)
    assert message.envelope.rcpt_to == (
        "j\u00fcrgen@b\u00fccher.example",
        "ann@example.com",
        "z\u00f6e@example.com",
    )
    smtpsink.mailbox("j\u00fcrgen@b\u00fccher.example").assert_in(subject="x")
    smtpsink.mailbox("j\u00fcrgen@xn--bcher-kva.example").assert_in(subject="x")


def test_deliver_takes_one_address_per_recipient(smtpsink: Mailbox) -> None:
    # "not an address" made a mailbox of that name, which no mail reaches.
    with pytest.raises(ValueError, match=r"^to: 'not an address' is not an address$"):
        smtpsink.deliver(RAW, to="not an address")
    message = smtpsink.deliver(RAW, to=["Ann <ann@example.com>", '"b c"@example.com'])
    assert message.envelope.rcpt_to == ("ann@example.com", '"b c"@example.com')
    smtpsink.mailbox("ann@example.com").assert_in(subject="Hello")
    # Two named addresses in one string went to the first alone.
    with pytest.raises(
        ValueError,
        match=r"^to: 'Ann <ann@example\.com>, Bob <bob@example\.com>' names 2 "
        r"addresses; give them as a list: to=\['ann@example\.com', "
        r"'bob@example\.com'\]$",
    ):
        smtpsink.deliver(RAW, to="Ann <ann@example.com>, Bob <bob@example.com>")
    # Made mailboxes no SMTP mail could reach.
    for bad in (
        "ann@",
        "@example.com",
        "ann@@example.com",
        "ann@x.com>",
        "a@x.com,",
        "<>",
        # Taken as ann@example.com alone.
        "Ann <ann@example.com>,",
        # RFC 5322 specials outside quotes: RCPT TO gets 553 for them.
        "a:b@example.com",
        "a[b@example.com",
        "ann@exa(mple.com",
    ):
        with pytest.raises(ValueError, match=r"is not an address"):
            smtpsink.deliver(RAW, to=bad)
    # An unquoted name with a comma: the advice was to=['Smith',
    # 'ann@example.com'], a mailbox "smith" among them.
    with pytest.raises(ValueError, match=r"a name with a comma is quoted: ") as raised:
        smtpsink.deliver(RAW, to="Smith, Ann <ann@example.com>")
    assert "to=[" not in str(raised.value)
    quoted = smtpsink.deliver(
        RAW,
        to=[
            '"Smith, Ann" <ann@example.com>',
            '"a:b"@x.com',
            "Dee (work, mostly) <dee@example.com>",
        ],
    )
    assert quoted.envelope.rcpt_to == (
        "ann@example.com",
        '"a:b"@x.com',
        "dee@example.com",
    )
    literal = smtpsink.deliver(RAW, to="ann@[192.0.2.1]")
    assert literal.envelope.rcpt_to == ("ann@[192.0.2.1]",)
    taken = smtpsink.deliver(
        RAW, to=["<bob@example.com>", '"a@b"@example.com', "carl@example.com\n"]
    )
    assert taken.envelope.rcpt_to == (
        "bob@example.com",
        '"a@b"@example.com',
        "carl@example.com",
    )
    assert smtpsink.mailbox("bob@example.com").messages() == [taken]
