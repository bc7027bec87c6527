"""Queries, assertions and waits over captured mail, and their failure text."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Send, loop_held, make_message, plugin_frames, time_out_now

from pytest_smtpsink import Criteria, CriterionError, Mailbox, Message

pytest_plugins = ["pytester"]


@pytest.fixture
def mixed(smtpsink: Mailbox, send: Send) -> Mailbox:
    """Three messages that differ in every field the criteria look at."""
    send(
        subject="Welcome",
        sender="App <noreply@shop.example>",
        to=["Ann <ann@Example.COM>"],
        text="Your code is 482913.\nConfirm: https://shop.example/confirm/abc\n",
        html='<p>Hi <a href="https://shop.example/confirm/abc">Confirm address</a></p>',
        Cc="team@shop.example",
        Reply_To="help@shop.example",
        X_Campaign="onboarding",
    )
    send(
        subject="Receipt #42",
        to=["bob@example.com"],
        rcpt=["bob@example.com", "audit@shop.example"],
    )
    message = make_message(subject="Invoice", to=["carol@example.com"])
    message.add_attachment(
        b"%PDF-1.7 ...", maintype="application", subtype="pdf", filename="inv-7.pdf"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    return smtpsink


@pytest.mark.parametrize(
    ("criteria", "subjects"),
    [
        ({"to": "ann@example.com"}, ["Welcome"]),
        ({"to": "Ann <ANN@example.com>"}, []),  # local part is case-sensitive
        ({"to": "ann@EXAMPLE.com"}, ["Welcome"]),
        ({"to": re.compile(r"@example\.com$")}, ["Welcome", "Receipt #42", "Invoice"]),
        ({"to": lambda to: len(to) == 1 and to[0].name == "Ann"}, ["Welcome"]),
        ({"from_": "noreply@shop.example"}, ["Welcome"]),
        ({"cc": "team@shop.example"}, ["Welcome"]),
        ({"reply_to": "help@shop.example"}, ["Welcome"]),
        ({"subject": "Welcome"}, ["Welcome"]),
        ({"subject": "Welc"}, []),
        ({"subject": re.compile(r"^Receipt #\d+$")}, ["Receipt #42"]),
        ({"header": {"X-Campaign": "onboarding"}}, ["Welcome"]),
        ({"header": {"x-campaign": re.compile("board")}}, ["Welcome"]),
        ({"header": {"X-Campaign": "other"}}, []),
        ({"text": "482913"}, ["Welcome"]),
        ({"text": "Confirm address"}, []),
        ({"html": "Confirm address"}, ["Welcome"]),
        ({"body": "Confirm address"}, ["Welcome"]),
        ({"body": re.compile(r"code is \d{6}")}, ["Welcome"]),
        ({"attachment": "inv-7.pdf"}, ["Invoice"]),
        ({"attachment": "application/pdf"}, ["Invoice"]),
        ({"attachment": re.compile(r"inv-\d+\.pdf")}, ["Invoice"]),
        ({"attachment": b"%PDF-1.7 ..."}, ["Invoice"]),
        ({"attachment": lambda a: a.size > 100}, []),
        ({"mail_from": "noreply@shop.example"}, ["Welcome"]),
        ({"mail_from": "app@example.com"}, ["Receipt #42", "Invoice"]),
        ({"body": lambda body: "482913" in body}, ["Welcome"]),
        ({"rcpt_to": "audit@shop.example"}, ["Receipt #42"]),
        ({"to": "audit@shop.example"}, []),
        ({"to": "bob@example.com", "subject": "Welcome"}, []),
    ],
)
def test_criteria(mixed: Mailbox, criteria: Criteria, subjects: list[str]) -> None:
    assert [m.subject for m in mixed.messages.filter(**criteria)] == subjects


def test_unknown_criterion_is_a_type_error_listing_valid_ones(
    smtpsink: Mailbox,
) -> None:
    with pytest.raises(
        TypeError,
        match=r"unknown criteria 'sender' \(did you mean from_= or mail_from=\?\); "
        r"valid criteria are: from_, to,",
    ):
        smtpsink.assert_sent(sender="x")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"'from' is a keyword in Python: use from_="):
        smtpsink.messages.filter(**{"from": "x"})  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^unknown criteria 'subjet' \(did you mean subject=\?\); valid",
    ):
        smtpsink.assert_sent(subjet="x")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"\(did you mean subject=\?\)"):
        smtpsink.assert_sent(Subject="x")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"'from' is a keyword in Python"):
        smtpsink.assert_sent(From="x")  # type: ignore[call-overload]
    # A misspelt argument of the method itself, not a criterion.
    with pytest.raises(
        TypeError, match=r"^unknown criteria 'tiemout' \(did you mean timeout=\?\)"
    ):
        smtpsink.wait_for(tiemout=1)  # type: ignore[call-overload]
    with pytest.raises(
        TypeError, match=r"^unknown criteria 'cout' \(did you mean count=\?\)"
    ):
        smtpsink.assert_sent(cout=2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"^unknown criteria 'tiemout'; valid"):
        smtpsink.assert_not_sent(tiemout=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("criteria", "says"),
    [
        (
            {"to": ["ann@example.com", "bob@example.com"]},
            "to= takes a str, a compiled regex or a callable; got a list: an "
            "address matches when it is among the message's; for several, assert "
            "each (to='a@example.com'), or pass a callable (to=lambda found: "
            "all(a in found for a in ['ann@example.com', 'bob@example.com']))",
        ),
        (
            # A sender's advice: one sender, "is one of"; the list criteria's
            # "a in found" was a substring test on the one address.
            {"mail_from": ["app@example.com", "other@example.com"]},
            "mail_from= takes a str, a compiled regex or a callable; got a list: "
            "a message has one sender; give it (mail_from='a@example.com'), or for "
            "any of several pass a callable (mail_from=lambda found: found in "
            "['app@example.com', 'other@example.com'])",
        ),
        (
            {"from_": "app@example.com, other@example.com"},
            "from_= takes one address; 'app@example.com, other@example.com' names "
            "2: 'app@example.com', 'other@example.com'; a message has one sender; "
            "give it (from_='app@example.com'), or for any of several pass a "
            "callable (from_=lambda found: found in "
            "['app@example.com', 'other@example.com'])",
        ),
        ({"text": ["hello"]}, "text= takes a str, a compiled regex or a callable"),
        ({"rcpt_to": b"ann@example.com"}, "got bytes; give text (decode it)"),
        (
            {"subject": 3},
            "subject= takes a str, a compiled regex or a callable; got int 3",
        ),
        (
            {"subject": None},
            "got None; to match a message without one, pass a callable "
            "(subject=lambda value: not value)",
        ),
        ({"body": re.compile(b"x")}, "got a regex of bytes; compile a str pattern"),
        (
            {"header": "X-Mailer"},
            "header= takes a dict of header names and values "
            "(header={'X-Mailer': 'app'}); got str 'X-Mailer'",
        ),
        ({"header": {"X-Mailer": 1}}, "header={'X-Mailer': ...} takes a str"),
        # Each matched every message, or none, and said nothing.
        ({"header": {}}, "header= takes at least one header"),
        ({"to": "ann@"}, "to= takes an address; 'ann@' has nothing after its @"),
        ({"mail_from": "@x.example"}, "has nothing before its @"),
        ({"attachment": 3}, "attachment= takes a str, bytes, a compiled regex"),
        (
            {"to": "ann@example.com, bob@example.com"},
            "to= takes one address; 'ann@example.com, bob@example.com' names 2: "
            "'ann@example.com', 'bob@example.com'; for several, assert each "
            "(to='ann@example.com'), or pass a callable (to=lambda found: "
            "all(a in found for a in ['ann@example.com', 'bob@example.com']))",
        ),
        (
            {"rcpt_to": "ann@example.com; bob@example.com"},
            "rcpt_to= takes one address; 'ann@example.com; bob@example.com' names 2",
        ),
        (
            {"cc": "Team: ann@example.com, bob@example.com;"},
            "cc= takes one address; 'Team: ann@example.com, bob@example.com;' names 2",
        ),
        (
            {"from_": "Doe, John <john@example.com>"},
            "from_= takes one address; 'Doe, John <john@example.com>' names 2: "
            "'Doe', 'john@example.com'; a display name with a comma needs quotes, "
            """as in a header ('"Doe, John" <john@example.com>')""",
        ),
    ],
)
def test_a_criterion_of_the_wrong_type_says_what_it_takes(
    smtpsink: Mailbox, send: Send, criteria: dict[str, Any], says: str
) -> None:
    send(subject="Hi")
    with pytest.raises(TypeError) as caught:
        smtpsink.assert_sent(**criteria)
    assert says in str(caught.value), caught.value
    # The same check guards every query.
    with pytest.raises(TypeError):
        smtpsink.messages.filter(**criteria)


def test_an_address_string_naming_several_does_not_pass_on_the_first(
    smtpsink: Mailbox, send: Send
) -> None:
    # It was compared by its first address only: a test asking for mail to
    # both passed on mail to one.
    send(subject="One", to=["ann@example.com"])
    with pytest.raises(TypeError, match=r"^to= takes one address; "):
        smtpsink.assert_sent(to="ann@example.com, bob@example.com")


def test_from_matches_any_of_several_authors(smtpsink: Mailbox, send: Send) -> None:
    """RFC 5322 allows several addresses in From (with a Sender): from_=
    compared with the first only, and a failure showed the first only."""
    send(
        subject="Joint",
        sender="Ann <ann@example.com>, bob@example.com",
        Sender="ann@example.com",
    )
    smtpsink.assert_sent(from_="bob@example.com")
    smtpsink.assert_sent(from_=re.compile(r"^bob@"))
    # A predicate still gets the first, as documented.
    smtpsink.assert_sent(from_=lambda first: first == "ann@example.com")
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_sent(from_="carl@example.com")
    assert "['Ann <ann@example.com>', 'bob@example.com']" in str(failure.value)


def test_a_domain_in_a_labels_matches_its_unicode_spelling(
    smtpsink: Mailbox, send: Send
) -> None:
    # Mail libraries write an international domain as A-labels (Django's
    # sanitize_address does): to="ann@bücher.example" did not find it.
    send(
        subject="IDN",
        to=["Ann <ann@XN--BCHER-KVA.example>"],
        rcpt=["ann@xn--bcher-kva.example"],
    )
    smtpsink.assert_sent(to="ann@bücher.example", rcpt_to="ann@Bücher.example")
    smtpsink.assert_sent(to=re.compile(r"@bücher\.example$"))
    message = smtpsink.messages.one(subject="IDN")
    assert message.to == ["ann@bücher.example"]
    assert message.to[0] == "ann@xn--bcher-kva.example"
    assert str(message.to[0]) == "ann@XN--BCHER-KVA.example"  # as sent
    with pytest.raises(AssertionError):
        smtpsink.assert_sent(to="ann@bucher.example")


def test_an_address_string_with_a_quoted_comma_is_one_address(
    smtpsink: Mailbox, send: Send
) -> None:
    send(
        subject="Quoted",
        sender='"Doe, John" <john@example.com>',
        to=['"a,b"@example.com'],
    )
    smtpsink.assert_sent(from_='"Doe, John" <john@example.com>')
    smtpsink.assert_sent(from_="john@example.com (Doe, John)")
    smtpsink.assert_sent(to='"a,b"@example.com', rcpt_to='"a,b"@example.com')


def test_the_callable_suggested_for_several_addresses_works(
    smtpsink: Mailbox, send: Send
) -> None:
    send(
        subject="Both",
        sender="app@example.com",
        to=["Ann <ann@example.com>", "bob@example.com"],
    )
    wanted = ["ann@example.com", "bob@example.com"]
    smtpsink.assert_sent(to=lambda found: all(a in found for a in wanted))
    # The envelope's are the strings the client sent, plain str: a set or
    # dict of those exact strings finds them. As Address (hashed by the
    # normalized form) they missed when the domain had capitals.
    send(subject="Caps", sender="app@Example.COM", to=["ann@Example.com"])
    smtpsink.assert_sent(
        subject="Caps", mail_from=lambda found: found in {"app@Example.COM"}
    )
    owners = {"app@Example.COM": "billing"}
    smtpsink.assert_sent(
        subject="Caps", mail_from=lambda found: owners.get(found) == "billing"
    )
    smtpsink.assert_sent(
        subject="Caps", rcpt_to=lambda found: set(found) == {"ann@Example.com"}
    )
    smtpsink.assert_sent(
        subject="Caps", rcpt_to=lambda found: found == ["ann@Example.com"]
    )
    # The str criterion still ignores the domain's case.
    smtpsink.assert_sent(subject="Caps", mail_from="app@example.com")
    smtpsink.assert_sent(subject="Caps", rcpt_to="ann@example.COM")
    # A sender's advice is "is one of": parts of the address do not match.
    smtpsink.assert_not_sent(mail_from=lambda found: found in ["example.com", "app"])
    smtpsink.assert_not_sent(from_=lambda found: found in ["example.com", "app"])


@pytest.mark.parametrize(
    ("criteria", "advised"),
    [
        (
            {"rcpt_to": ["Ann <ann@example.com>", "bob@example.com"]},
            "rcpt_to=lambda found: all(a in found for a in "
            "['ann@example.com', 'bob@example.com'])",
        ),
        (
            {"rcpt_to": "Ann <ann@example.com>, bob@example.com"},
            "rcpt_to=lambda found: all(a in found for a in "
            "['ann@example.com', 'bob@example.com'])",
        ),
        (
            {"mail_from": ["App <app@example.com>", "other@example.com"]},
            "mail_from=lambda found: found in ['app@example.com', 'other@example.com']",
        ),
        (  # the null sender, which its predicate gets as ""
            {"mail_from": ["<>", "app@example.com"]},
            "mail_from=lambda found: found in ['', 'app@example.com']",
        ),
    ],
)
def test_the_callable_advised_for_the_envelope_matches_what_it_gets(
    smtpsink: Mailbox, send: Send, criteria: dict[str, object], advised: str
) -> None:
    # The envelope's predicates get its bare strings: advice that kept the
    # display name ("Ann <ann@example.com>" in found) never matched.
    send(sender="app@example.com", to=["Ann <ann@example.com>", "bob@example.com"])
    with pytest.raises(TypeError) as caught:
        smtpsink.assert_sent(**criteria)  # type: ignore[call-overload]
    assert (
        f"({advised}) (its predicate gets the addresses as the client sent them, "
        "compared exactly: give them as sent)"
    ) in str(caught.value)
    name, _, predicate = advised.partition("=")
    smtpsink.assert_sent(**{name: eval(predicate)})  # the advice, run as given


def test_a_predicate_that_raises_names_the_criterion_and_the_message(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="Welcome")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com", ["bob@example.com"], b"To: bob@example.com\r\n\r\nhi\r\n"
        )
    untitled = smtpsink.wait_for(to="bob@example.com")
    with pytest.raises(CriterionError) as caught:
        smtpsink.assert_sent(subject=lambda subject: subject.startswith("Wel"))
    # It was a bare AttributeError, naming neither the criterion nor the
    # message without a subject.
    assert str(caught.value) == (
        "the criterion subject=<lambda> raised AttributeError: 'NoneType' object "
        "has no attribute 'startswith'\n"
        f"  on message {untitled.summary()}\n"
        "  called with None (the message has no such field)"
    )
    assert isinstance(caught.value.__cause__, AttributeError)


def test_a_from_predicate_gets_none_for_a_message_without_from(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="Signed", sender="App <app@example.com>")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "app@example.com", ["bob@example.com"], b"Subject: anon\r\n\r\nhi\r\n"
        )
    smtpsink.wait_for(subject="anon")
    # It got an empty tuple, so the None guard the docs show raised
    # AttributeError ('Addresses' object has no attribute 'domain').
    smtpsink.assert_sent(subject="anon", from_=lambda found: found is None)
    smtpsink.assert_not_sent(
        from_=lambda found: found is not None and found.domain == "evil.example"
    )
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="anon", from_="ann@example.com")
    # The missing From reads as other missing fields do, not as "[]".
    assert "from_: wanted 'ann@example.com', got none" in str(caught.value)


def _third_label(address: str) -> bool:
    # IndexError for "noreply@shop.example": its domain has two labels.
    return address.split("@")[1].split(".")[2] == "mail"


@pytest.mark.parametrize(
    ("query", "criteria", "raised", "number", "given"),
    [
        (
            "assert_sent",
            {"to": lambda to: to[1]},
            "to=<lambda> raised IndexError",
            1,
            "('Ann <ann@Example.COM>',)",
        ),
        (
            "wait_for",
            {"header": {"X-Campaign": lambda value: value.upper() == "ONBOARDING"}},
            "header={'X-Campaign': <lambda>} raised AttributeError",
            2,
            "None (the message has no such field)",
        ),
        (
            "filter",
            {"attachment": lambda item: item.pages > 1},
            "attachment=<lambda> raised AttributeError",
            3,
            "<Attachment 'inv-7.pdf' application/pdf 12 bytes>",
        ),
        (
            "assert_not_sent",
            {"mail_from": _third_label},
            "mail_from=_third_label raised IndexError",
            1,
            "'noreply@shop.example'",
        ),
    ],
    ids=["to", "header", "attachment", "mail_from"],
)
def test_every_predicate_and_query_names_what_raised(
    mixed: Mailbox,
    *,
    query: str,
    criteria: dict[str, Any],
    raised: str,
    number: int,
    given: str,
) -> None:
    queries: dict[str, Callable[..., object]] = {
        "assert_sent": mixed.assert_sent,
        "wait_for": mixed.wait_for,
        "filter": mixed.messages.filter,
        "assert_not_sent": mixed.assert_not_sent,
    }
    run = queries[query]
    message = mixed.messages[number - 1]
    with pytest.raises(CriterionError) as caught:
        run(**criteria)
    first, on, called = str(caught.value).splitlines()
    assert first.startswith(f"the criterion {raised}: ")
    assert on == f"  on message {message.summary()}"
    assert called == f"  called with {given}"
    assert caught.value.__cause__ is not None


def test_a_subject_in_another_case_gets_a_hint_that_matches(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="Reset your password")
    for wanted, which in (
        ("Reset Your Password", "is the same text"),
        ("Your Password", "contains it"),
    ):
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent(subject=wanted)
        pattern = re.escape(wanted)
        assert "Hint: subject= is case-sensitive: #" in str(caught.value)
        assert (
            f"'s subject 'Reset your password' {which} in another case; use "
            f"re.compile({pattern!r}, re.IGNORECASE)"
        ) in str(caught.value), caught.value
        # The advice works.
        smtpsink.assert_sent(subject=re.compile(pattern, re.IGNORECASE))


def test_a_regex_on_addresses_is_shown_what_it_searched(smtpsink: Mailbox) -> None:
    # It showed "['Ann <ann@example.com>']", which "^Ann" seems to match:
    # the regex searches the bare address.
    raw = b"To: Ann <ann@example.com>\r\nSubject: hi\r\n\r\nx\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["ann@example.com"], raw)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(to=re.compile("^Ann"))
    assert "to: wanted re.compile('^Ann'), got ['ann@example.com']" in str(caught.value)


@pytest.mark.parametrize(
    ("criteria", "hint"),
    [
        (
            {"from_": "bounces@shop.example"},
            "bounces@shop.example is #N's envelope sender (MAIL FROM): use "
            "mail_from='bounces@shop.example'",
        ),
        (
            {"mail_from": "news@shop.example"},
            "news@shop.example is #N's From: use from_='news@shop.example'",
        ),
        (
            {"to": "boss@example.com"},
            "boss@example.com is in #N's 'cc' header, not its 'to' one: use "
            "cc='boss@example.com'",
        ),
        # Where replies go, given as a recipient.
        (
            {"to": "help@shop.example"},
            "help@shop.example is #N's Reply-To, not a recipient: use "
            "reply_to='help@shop.example'",
        ),
    ],
)
def test_a_sender_or_recipient_in_another_field_gets_a_hint(
    smtpsink: Mailbox, criteria: dict[str, str], hint: str
) -> None:
    # No hint said the bounce address is the envelope's, or the Cc a Cc.
    raw = (
        b"From: News <news@shop.example>\r\nTo: ann@example.com\r\n"
        b"Cc: boss@example.com\r\nReply-To: help@shop.example\r\n"
        b"Subject: hi\r\n\r\nx\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "bounces@shop.example", ["ann@example.com", "boss@example.com"], raw
        )
    number = smtpsink.messages.one().number
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(**criteria)  # type: ignore[call-overload]
    assert f"Hint: {hint.replace('#N', f'#{number}')}" in str(caught.value)


def test_an_address_in_another_case_gets_a_hint_that_matches(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="Hi", to=["Ann <ann@example.com>"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(to="Ann@Example.com")
    pattern = f"^{re.escape('Ann@example.com')}$"
    assert (
        "Hint: to= compares the part before @ case-sensitively (RFC 5321): #"
    ) in str(caught.value), caught.value
    assert (
        f" has 'ann@example.com'; use re.compile({pattern!r}, re.IGNORECASE)"
    ) in str(caught.value), caught.value
    # The advice works.
    smtpsink.assert_sent(to=re.compile(pattern, re.IGNORECASE))


def test_a_subaddress_gets_a_hint_that_matches(smtpsink: Mailbox, send: Send) -> None:
    send(subject="Hi", to=["ann+news@example.com"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(to="ann@example.com")
    pattern = r"^ann(\+[^@]*)?@example\.com$"
    number = smtpsink.messages.one().number
    assert (
        f"Hint: #{number} has 'ann+news@example.com', a subaddress of "
        "ann@example.com (the part after + names a folder or a list); for "
        f"either, use to=re.compile({pattern!r})"
    ) in str(caught.value), caught.value
    # The advice works, and takes the address alone too.
    smtpsink.assert_sent(to=re.compile(pattern))
    send(subject="Hi", to=["ann@example.com"])
    smtpsink.assert_sent(2, to=re.compile(pattern))


def test_a_header_sent_in_raw_latin_1_gets_a_hint_with_its_bytes(
    smtpsink: Mailbox,
) -> None:
    # Raw 8-bit bytes in a header read as U+FFFD: the report showed
    # 'Gr\ufffd\ufffde' and hid both the bytes and whose mistake it was.
    raw = (
        b"From: J\xf6rg <j@example.com>\r\nTo: bob@example.com\r\n"
        b"Subject: Gr\xfc\xdfe aus\r\n K\xf6ln\r\nX-City: K\xf6ln\r\n\r\nHi\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("j@example.com", ["bob@example.com"], raw)
    number = smtpsink.wait_for().number
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(
            subject="Gr\u00fc\u00dfe aus K\u00f6ln",
            from_="J\u00f6rg <j@example.com>",
            header={"X-City": "K\u00f6ln"},
        )
    report = str(caught.value)
    said = (
        "header has bytes that are not UTF-8, read as '\ufffd': {} as sent. "
        "Non-ASCII header text must be RFC 2047 encoded (or UTF-8, with "
        "SMTPUTF8): the application wrote it raw in another charset"
    )
    assert (
        f"Hint: #{number}'s Subject " + said.format("'Gr\\xfc\\xdfe aus K\\xf6ln'")
        in report
    ), report
    assert f"Hint: #{number}'s X-City " + said.format("'K\\xf6ln'") in report
    # From matched (its address), so nothing is said of its bytes; nor of
    # an ASCII value, which the bytes cannot have kept from matching.
    assert "From header" not in report
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Hello")
    assert "not UTF-8" not in str(caught.value)
    # A pattern written in ASCII may be meant for such text: it gets it.
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject=re.compile(r"^Gr\xfc\xdfe"))
    assert "Subject header has bytes that are not UTF-8" in str(caught.value)
    # A predicate is never run by a hint; the bytes are kept as sent.
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject=lambda subject: subject == "Gr\u00fc\u00dfe")
    assert "not UTF-8" not in str(caught.value)
    assert smtpsink.messages.one().raw == raw


def test_after_clear_a_failure_says_since_clear(smtpsink: Mailbox, send: Send) -> None:
    send(subject="Before")
    smtpsink.clear()
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Before")
    assert "\nNo messages arrived since clear().\n" in str(caught.value)
    # The connection that sent "Before" came before clear(): none since.
    assert "\nHint: no client connected to smtp://" in str(caught.value)
    assert " since clear() either: " in str(caught.value), caught.value
    send(subject="After")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Before")
    assert "\nMessages that arrived since clear() (1):\n" in str(caught.value)
    # So do the queries on `messages`, filtered or sliced.
    with pytest.raises(AssertionError) as caught:
        smtpsink.messages.filter(subject="After")[1:].one()
    assert "\nMessages that arrived since clear() (1):\n" in str(caught.value)
    smtpsink.clear()
    with pytest.raises(AssertionError, match=r"arrived since clear\(\), so there"):
        smtpsink.messages.first()


def test_misuse_errors_hide_the_plugins_frames(pytester: pytest.Pytester) -> None:
    # The error points at the test's line, as a failed assertion does.
    pytester.makepyfile(
        """
def test_typo(smtpsink):
    smtpsink.messages.filter(subjet="x")

def test_tls_helper_on_a_plain_sink(smtpsink):
    smtpsink.ssl_context()

def test_wrong_type(smtpsink):
    smtpsink.assert_sent(to=["a@example.com"])

def test_fault_code_as_text(smtpsink):
    smtpsink.fail("RCPT", "550")

def test_fault_stage_typo(smtpsink):
    smtpsink.hang("DAT")
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines(
        [
            '>       smtpsink.messages.filter(subjet="x")',
            "E       TypeError: unknown criteria 'subjet' (did you mean subject=?)*",
            ">       smtpsink.ssl_context()",
            "E       RuntimeError: ssl_context() is for TLS sinks*",
            '>       smtpsink.assert_sent(to=["a@example.com"])',
            "E       TypeError: to= takes a str, a compiled regex or a callable; got a list*",
            '>       smtpsink.fail("RCPT", "550")',
            "E       *FaultError: code must be a 4xx or 5xx reply code, got the str '550'",
            '>       smtpsink.hang("DAT")',
            "E       *FaultError: *",
        ]
    )
    # No frame of the plugin's (its exceptions' names aside).
    assert plugin_frames(result.stdout.str()) == []


def test_argument_errors_hide_the_plugins_frames(pytester: pytest.Pytester) -> None:
    # A bad count, timeout or within points at the test's line too, not at
    # the plugin's validators.
    pytester.makepyfile(
        """
def test_negative_count(smtpsink):
    smtpsink.assert_sent(count=-1)

def test_address_as_count(smtpsink):
    smtpsink.assert_sent("ann@example.com")

def test_wait_count(smtpsink):
    smtpsink.wait_for(count=-2)

def test_negative_timeout(smtpsink):
    smtpsink.wait_for(timeout=-1)

def test_timeout_as_text(smtpsink):
    smtpsink.wait_until(lambda: True, timeout="5")

def test_negative_within(smtpsink):
    smtpsink.assert_nothing_sent(within=-1)
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(
        [
            ">       smtpsink.assert_sent(count=-1)",
            "E       ValueError: count must be a whole number >= 0, got -1",
            '>       smtpsink.assert_sent("ann@example.com")',
            "E       TypeError: count must be a whole number >= 0, got the str "
            "'ann@example.com'"
            " (criteria are keywords: did you mean to='ann@example.com'?)",
            ">       smtpsink.wait_for(count=-2)",
            "E       ValueError: count must be a whole number >= 0, got -2",
            ">       smtpsink.wait_for(timeout=-1)",
            "E       ValueError: timeout must be a finite number of seconds >= 0, got -1",
            '>       smtpsink.wait_until(lambda: True, timeout="5")',
            "E       TypeError: timeout must be a number of seconds, got the str '5'",
            ">       smtpsink.assert_nothing_sent(within=-1)",
            "E       ValueError: within must be a finite number of seconds >= 0, got -1",
        ]
    )
    assert plugin_frames(result.stdout.str()) == []


def test_a_count_given_as_digits_is_told_to_be_a_number(smtpsink: Mailbox) -> None:
    # It suggested subject='1', as for a subject given by position.
    with pytest.raises(TypeError) as caught:
        smtpsink.assert_sent(count="1")  # type: ignore[call-overload]
    assert str(caught.value) == (
        "count must be a whole number >= 0, got the str '1' (give it as a "
        "number: count=1)"
    )


def test_check_and_reader_argument_errors_hide_the_plugins_frames(
    pytester: pytest.Pytester,
) -> None:
    # The deliverability checks' and the recipients' mailboxes' argument
    # errors showed the plugin's checking helpers (and, in the default
    # view, the whole source of dkim_key's).
    pytester.makepyfile(
        """
import pytest

CALLS = {
    "severity": lambda sink: sink.assert_clean(severity="x"),
    "ignore": lambda sink: sink.assert_clean(ignore=5),
    "alignment": lambda sink: sink.assert_bulk_sender_rules(alignment="x"),
    "max_score": lambda sink: sink.assert_not_spam(max_score="x", spamd="127.0.0.1:1"),
    "dkim_key": lambda sink: sink.dkim_key(5, "s"),
    "dkim_key_bits": lambda sink: sink.dkim_key("example.com", "s", bits=512),
    "env": lambda sink: sink.env(prefix=5),
    "assert_in": lambda sink: sink.mailbox("a@example.com").assert_in(5),
    "assert_not_in": lambda sink: sink.mailbox("a@example.com").assert_not_in(5),
    "messages": lambda sink: sink.mailbox("a@example.com").messages(5),
    "stored": lambda sink: sink.mailbox("a@example.com").stored(""),
}

@pytest.mark.parametrize("name", CALLS)
def test_misuse(smtpsink, name):
    CALLS[name](smtpsink)

def test_message_alignment(smtpsink):
    message = smtpsink.deliver(b"Subject: x\\r\\n\\r\\nx\\r\\n", to="a@example.com")
    message.bulk_sender_problems(alignment="x")

def test_flags(smtpsink):
    message = smtpsink.deliver(b"Subject: x\\r\\n\\r\\nx\\r\\n", to="a@example.com")
    smtpsink.mailbox("a@example.com").flags(message, folder=5)
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "--tb=short")
    result.assert_outcomes(failed=13)
    assert plugin_frames(result.stdout.str()) == []
    result.stdout.no_fnmatch_line("*def publish_key*")


def test_link_arguments_of_the_wrong_type_say_which(mixed: Mailbox) -> None:
    # A regex given as contains= (a natural slip) used to end in Python's
    # "'in <string>' requires string as left operand", naming no argument.
    welcome = mixed.messages.one(subject="Welcome")
    with pytest.raises(TypeError) as caught:
        welcome.link(contains=re.compile("/confirm/"))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "link(): contains= takes a str, got re.Pattern re.compile('/confirm/'); "
        "for a regular expression use pattern="
    )
    with pytest.raises(TypeError) as caught:
        welcome.link(text=5)  # type: ignore[arg-type]
    assert str(caught.value) == "link(): text= takes a str, got int 5"
    with pytest.raises(TypeError) as caught:
        welcome.link(pattern=b"/confirm/")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "link(): pattern= takes a str or a compiled regex, got bytes b'/confirm/'"
    )


def test_a_pattern_that_is_no_regex_is_named(mixed: Mailbox) -> None:
    # code(pattern="(") and link(pattern="(") raised a bare re.error, which
    # says what is wrong with a regex but not whose it is.
    welcome = mixed.messages.one(subject="Welcome")
    with pytest.raises(
        ValueError,
        match=r"^code\(\): pattern= '\(' is not a "
        r"regular expression: missing \)",
    ):
        welcome.code(pattern="(")
    with pytest.raises(
        ValueError,
        match=r"^link\(\): pattern= '\[' is not a "
        r"regular expression: unterminated character set",
    ):
        welcome.link(pattern="[")
    with pytest.raises(TypeError) as caught:
        welcome.code(pattern=5)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "code(): pattern= takes a str or a compiled regex, got int 5"
    )


def test_waiting_for_no_mail_is_refused_saying_what_checks_that(
    smtpsink: Mailbox,
) -> None:
    # wait_for(count=0) returned at once, proving nothing, undocumented.
    expected = (
        "(count=0) would return at once: to check that no mail arrives for a "
        "while, use assert_nothing_sent(within=SECONDS) (in a coroutine, await "
        "assert_nothing_sent_async(within=SECONDS))"
    )
    with pytest.raises(ValueError, match="would return at once") as caught:
        smtpsink.wait_for(count=0)
    assert str(caught.value) == "wait_for" + expected
    with pytest.raises(ValueError, match="would return at once") as caught:
        asyncio.run(smtpsink.wait_for_async(count=0))
    assert str(caught.value) == "wait_for_async" + expected


def test_a_session_still_open_when_the_check_fails_suggests_waiting(
    smtpsink: Mailbox,
) -> None:
    # A sender still talking (a thread, a task) when assert_sent ran: the
    # hint listed the session, and left the likeliest cause unsaid.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.ehlo("app.example")
        smtpsink.wait_until(lambda: smtpsink.sessions[0].ehlo)
        with pytest.raises(AssertionError) as failed:
            smtpsink.assert_sent()
        # After a wait, advice to wait was no help: a slow client needs a
        # longer one. So inside wait_until, whose condition's report is quoted.
        with pytest.raises(AssertionError) as waited:
            smtpsink.wait_for(timeout=0.01)
        with pytest.raises(AssertionError) as waited_until:
            smtpsink.wait_until(smtpsink.assert_sent, timeout=0.01)
    assert str(failed.value).splitlines()[-1] == (
        "  (1 session opened in this test is still open: if the mail leaves in "
        "the background (a thread, a task, a worker), wait for it with "
        "wait_for(...), or await wait_for_async(...) in a coroutine)"
    )
    still_open = (
        "(1 session opened in this test is still open: its client may still be "
        "sending; a slow one needs a longer timeout=)"
    )
    assert str(waited.value).splitlines()[-1] == f"  {still_open}"
    assert f"    {still_open}\n" in str(waited_until.value)
    assert "wait_for(...)" not in str(waited.value) + str(waited_until.value)


def test_mail_over_a_connection_opened_before_clear_is_said_to(
    smtpsink: Mailbox,
) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.ehlo("app.example")
        smtpsink.clear()
        client.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: late\r\n\r\n"
        )
    with pytest.raises(AssertionError) as failed:
        smtpsink.assert_nothing_sent()
    assert str(failed.value).splitlines()[-1] == (
        f"Hint: #{smtpsink.messages[0].number} came over a connection opened before "
        "clear(): a sender still running from an earlier test (a thread, a task), "
        "a pooled connection, or a fixture's."
    )


def test_mail_from_a_sender_that_outlived_its_test_is_said_to(
    pytester: pytest.Pytester,
) -> None:
    # Test one's connection delivers in test two: listed alone, the message
    # looked like test two's code had sent it.
    pytester.makepyfile(
        """
import smtplib

KEPT = []

def test_one(smtpsink):
    client = smtplib.SMTP(smtpsink.host, smtpsink.port)
    client.ehlo("app.example")
    KEPT.append(client)

def test_two(smtpsink):
    with KEPT.pop() as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: late\\r\\n\\r\\n")
    smtpsink.assert_nothing_sent()

def test_three(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: own\\r\\n\\r\\n")
    smtpsink.assert_nothing_sent()
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: expected no message; found 1.",
            "E       Messages that arrived in this test (1):",
            "E         #* app@example.com -> ann@example.com | To: - | Subject: 'late' | * bytes",
            "E       Hint: #* came over a connection opened before this mailbox was made: a sender still running from an earlier test (a thread, a task), a pooled connection, or a fixture's.",
        ]
    )
    # A connection of the test's own: no such hint.
    assert result.stdout.str().count("came over a connection opened before") == 1


def test_queries(mixed: Mailbox) -> None:
    messages = mixed.messages
    assert len(messages) == 3
    assert messages.first().subject == "Welcome"
    assert messages.last().subject == "Invoice"
    assert messages[1].subject == "Receipt #42"
    assert [m.subject for m in messages[1:]] == ["Receipt #42", "Invoice"]
    assert messages.one(subject="Invoice") is messages[2]
    assert next(reversed(messages)) is messages[2]


def test_assert_sent_returns_messages(mixed: Mailbox) -> None:
    assert mixed.assert_sent(to="ann@example.com").subject == "Welcome"
    assert (
        mixed.assert_sent(mail_from="app@example.com").subject == "Invoice"
    )  # the latest
    assert len(mixed.assert_sent(2, mail_from="app@example.com")) == 2
    assert mixed.assert_sent(1, subject="Invoice").subject == "Invoice"
    mixed.assert_not_sent(to="dave@example.com")
    assert len(mixed.assert_sent(0, to="dave@example.com")) == 0


def test_assert_sent_count_mismatch(mixed: Mailbox) -> None:
    with pytest.raises(
        AssertionError,
        match=r"expected 3 messages matching mail_from='app@example.com'; found 2\.",
    ):
        mixed.assert_sent(3, mail_from="app@example.com")


def test_assert_not_sent_failure_marks_the_matches(mixed: Mailbox) -> None:
    with pytest.raises(AssertionError) as caught:
        mixed.assert_not_sent(subject="Invoice")
    text = str(caught.value)
    assert text.startswith("expected no message matching subject='Invoice'; found 1.")
    assert re.search(r"^\* #\d+ .* \| Subject: 'Invoice' \|", text, re.M)


def test_message_helpers(mixed: Mailbox) -> None:
    welcome = mixed.messages.one(subject="Welcome")
    assert welcome.links() == ["https://shop.example/confirm/abc"]
    assert welcome.link(contains="/confirm/") == "https://shop.example/confirm/abc"
    assert welcome.link(text="confirm ADDRESS") == "https://shop.example/confirm/abc"
    assert welcome.link(pattern=r"/confirm/\w+$").endswith("/abc")
    assert welcome.code() == "482913"
    assert welcome.code(r"code is (\d+)") == "482913"
    with pytest.raises(AssertionError) as caught:
        welcome.link(contains="/reset/")
    # The URL is in both parts: listed once, with its anchor text.
    assert re.fullmatch(
        r"no link with contains='/reset/' in <Message .*>; links found:\n"
        r"  https://shop\.example/confirm/abc  \(text 'Confirm address'\)",
        str(caught.value),
    ), caught.value
    with pytest.raises(
        AssertionError, match=re.escape("no code matching 'PIN (\\\\d+)' in <Message")
    ):
        welcome.code(r"PIN (\d+)")
    invoice = mixed.messages.one(subject="Invoice")
    assert invoice.attachment("inv-7.pdf").content == b"%PDF-1.7 ..."
    with pytest.raises(AssertionError) as caught:
        invoice.attachment("x.pdf")
    # Which message, as link() and code() say: a test may look at several.
    assert re.fullmatch(
        r"no attachment named 'x\.pdf' in <Message #\d+ .*subject='Invoice'.*>; "
        r"attachments: 'inv-7\.pdf'",
        str(caught.value),
    ), caught.value
    with pytest.raises(AssertionError) as caught:
        invoice.attachment("INV-7.pdf")
    assert str(caught.value).endswith(
        "attachments: 'inv-7.pdf' ('inv-7.pdf' differs only in case: names "
        "compare exactly)"
    )
    # Not "no attachment named 0": a name is asked for.
    with pytest.raises(TypeError) as refused:
        invoice.attachment(0)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "attachment() takes a file name (a str), got int 0 (by position: "
        "attachments[0])"
    )


def test_code_skips_a_match_whose_group_took_no_part(
    smtpsink: Mailbox, send: Send
) -> None:
    # code() is a str or an AssertionError: an optional group 1 that
    # matched nothing gave None.
    send(text="Your code: none yet.\nYour code: 4711\n")
    message = smtpsink.messages.one()
    assert message.code(r"code:(?: (\d+))?") == "4711"
    with pytest.raises(AssertionError, match="no code matching"):
        message.code(r"code:(?: (\d{6}))?")


def test_link_and_code_failures_show_no_escape_sequence(
    smtpsink: Mailbox, send: Send
) -> None:
    # A failure is printed to the terminal: the mail's ESC and BEL (a
    # hyperlink, a clipboard write, a cleared screen) are shown escaped.
    send(
        text="hello \x1b]52;c;ZWNobw==\x07 \x1b[2J no code\n"
        "https://x.example/\x1b]8;;https://evil.example\x07\n"
    )
    message = smtpsink.messages.one()

    def link() -> str:
        return message.link(contains="/reset/")

    for check in (link, message.code):
        with pytest.raises(AssertionError) as caught:
            check()
        text = str(caught.value)
        assert ("\x1b" in text, "\x07" in text) == (False, False), text
        assert "\\x1b" in text
    assert str(caught.value).endswith(
        "body starts:\nhello \\x1b]52;c;ZWNobw==\\x07 \\x1b[2J no code\n"
        "https://x.example/\\x1b]8;;https://evil.example\\x07\n"
    )


def test_links_are_deduplicated_in_order(smtpsink: Mailbox, send: Send) -> None:
    send(
        text="First https://a.example/1, then https://b.example/2.\n",
        html='<a href="https://b.example/2">two</a> <a href="https://c.example/3">three</a>',
    )
    assert smtpsink.messages.one().links() == [
        "https://b.example/2",
        "https://c.example/3",
        "https://a.example/1",
    ]


def test_a_link_failure_lists_twenty_links(smtpsink: Mailbox, send: Send) -> None:
    # A newsletter's 800 links made a failure of 801 lines.
    send(html="".join(f'<a href="https://a.example/{n}">{n}</a>' for n in range(800)))
    with pytest.raises(AssertionError) as raised:
        smtpsink.messages.one().link(contains="nope")
    lines = str(raised.value).splitlines()
    assert len(lines) == 22
    assert lines[-1] == "  ... and 780 more (links())"
    assert "https://a.example/19" in lines[-2]


def test_links_of_hostile_markup_in_one_pass(smtpsink: Mailbox, send: Send) -> None:
    # html.parser rescans the rest of the text from every "<" that no ">"
    # closes: 50 kB of "<a x " took 15 s; this would take hours.
    send(
        html='<a href="https://a.example/1">one</a>'
        + '<!-- <a href="https://a.example/dead">old</a> -->'
        + '<a title="a<b" href="https://a.example/2">two</a>'
        + "<a x " * 100_000
    )
    # Not the commented-out link; the one with "<" in an attribute too.
    assert smtpsink.messages.one().links() == [
        "https://a.example/1",
        "https://a.example/2",
    ]


@pytest.mark.parametrize(
    "anchor",
    ['<A\nHREF="https://a.example/1">', "<a\thref=https://a.example/1>",
     '<a/href="https://a.example/1">'],
)  # fmt: skip
def test_links_are_found_after_any_tag_name_end(
    smtpsink: Mailbox, send: Send, anchor: str
) -> None:
    # The HTML is parsed for links only if it has an <a start tag: every
    # way html.parser ends the tag name counts as one.
    send(html=f"<p>{anchor}one</a> <abbr>no link</abbr></p>")
    assert smtpsink.messages.one().links() == ["https://a.example/1"]


def test_html_without_an_anchor_has_no_links(smtpsink: Mailbox, send: Send) -> None:
    send(html="<p><abbr>https://a.example/1</abbr><area href=x><a></p>")
    assert smtpsink.messages.one().links() == []


def test_a_code_in_hostile_html_is_found_in_one_pass(
    smtpsink: Mailbox, send: Send
) -> None:
    # The tags were stripped with "<[^>]+>": from each "<" to the end of a
    # text with no ">".
    html = (
        '<img src="https://a.example/123456.png" alt="<">Your code: 987654'
        + "\r\n".join(["<" * 900] * 250)
    )
    raw = f"Subject: code\r\nContent-Type: text/html\r\n\r\n{html}\r\n".encode()
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], raw)
    assert smtpsink.messages.one().code() == "987654"


def test_a_code_in_html_only_mail_is_read_from_the_text_it_shows(
    smtpsink: Mailbox,
) -> None:
    # The tags were stripped, the rest searched: a CSS colour in <style> and
    # the preheader's padding entities came first ("333333", "8203").
    html_only(
        smtpsink,
        "<html><head><title>Code 111111</title><style>p{color:#333333}</style>"
        "<body><div style=display:none>Hi&#8203;&#847;&zwnj;</div>"
        "<p>Your verification code is 482910</p><script>var n = 555555;</script>",
    )
    assert smtpsink.messages.one().code() == "482910"


def test_a_head_left_open_ends_where_the_body_begins(
    smtpsink: Mailbox,
) -> None:
    html_only(smtpsink, "<head><meta charset=utf-8><p>Code: 246810</p>")
    html_only(smtpsink, "<head><meta charset=utf-8>Your code is 135790")
    first, second = smtpsink.messages
    assert (first.code(), second.code()) == ("246810", "135790")


def html_only(sink: Mailbox, html: str) -> None:
    raw = f"Subject: code\r\nContent-Type: text/html\r\n\r\n{html}\r\n".encode()
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], raw)


def test_links_with_space_around_the_url_or_left_open_are_found(
    smtpsink: Mailbox, send: Send
) -> None:
    # Browsers follow both: the white space is stripped, and an <a> the
    # markup never closes ends with it.
    send(
        html='<a href=" https://a.example/1 ">one</a> <a href="https://a.example/2">two'
    )
    message = smtpsink.messages.one()
    assert message.links() == ["https://a.example/1", "https://a.example/2"]
    assert message.link(text="two") == "https://a.example/2"


def test_relative_links_follow_the_mails_base(smtpsink: Mailbox, send: Send) -> None:
    # A relative link under a <base href> goes there in the recipient's
    # client; links() left it out, and link(contains=) failed. The first
    # <base> with an href counts; mailto: and fragments without a base stay
    # out; a base that is not http(s) sets none.
    send(
        html='<head><base target="_blank"><base href="https://shop.example/app/">'
        '<base href="https://other.example/"></head>'
        '<a href="/confirm?t=1">Confirm</a> <a href="orders/7">Order</a> '
        '<a href="mailto:help@shop.example">Help</a> '
        '<a href="https://cdn.example/x">CDN</a>'
    )
    message = smtpsink.messages.one()
    assert message.links() == [
        "https://shop.example/confirm?t=1",
        "https://shop.example/app/orders/7",
        "https://cdn.example/x",
    ]
    assert message.link(text="Order") == "https://shop.example/app/orders/7"
    send(html='<base href="javascript:alert(1)"><a href="/x">x</a>')
    assert smtpsink.messages[-1].links() == []
    # The first <base> with an href is the document's, whatever it holds.
    send(
        html='<base href="/rel/"><base href="https://evil.example/"><a href="/x">x</a>'
    )
    assert smtpsink.messages[-1].links() == []
    # A link before the <base> goes there too, as in browsers.
    send(html='<a href="/early">e</a><base href="https://shop.example/">')
    assert smtpsink.messages[-1].links() == ["https://shop.example/early"]


def test_first_and_last_on_no_mail(smtpsink: Mailbox) -> None:
    with pytest.raises(
        AssertionError,
        match="no messages arrived in this test, so there is no first one",
    ):
        smtpsink.messages.first()
    with pytest.raises(AssertionError, match="no last one"):
        smtpsink.messages.last()


def test_one_first_and_index_on_no_mail_say_whether_a_client_connected(
    smtpsink: Mailbox,
) -> None:
    # assert_sent said it; messages.one(), first() and [0] did not, and sent
    # the reader to the application rather than to its mail settings.
    hint = f"Hint: no client connected to {smtpsink.url} in this test"
    reads: list[Callable[[], object]] = [
        lambda: smtpsink.messages.one(subject="Welcome"),
        lambda: smtpsink.messages.filter(to="ann@example.com").one(),
        smtpsink.messages.first,
        lambda: smtpsink.messages[0],
        lambda: smtpsink.messages[1:][0],
    ]
    for read in reads:
        with pytest.raises((AssertionError, IndexError)) as failure:
            read()
        assert hint in str(failure.value)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.noop()
    with pytest.raises(AssertionError) as failure:
        smtpsink.messages.one()
    assert "Hint: 1 SMTP session connected in this test" in str(failure.value)
    assert "no client connected" not in str(failure.value)


def test_first_and_last_of_an_empty_filter_name_the_query(
    smtpsink: Mailbox, send: Send
) -> None:
    # "no messages left after filtering; wanted a last message; found 0."
    # named no query.
    send(subject="Welcome")
    for which in ("first", "last"):
        with pytest.raises(AssertionError) as caught:
            getattr(smtpsink.messages.filter(to="x@example.com"), which)()
        lines = str(caught.value).splitlines()
        assert lines[0] == (
            f"no {which} message: messages.filter(to='x@example.com') holds 0 messages."
        )
        assert lines[1] == "Messages that arrived in this test (1):"
        assert "Subject: 'Welcome'" in lines[2]


# -- waiting ------------------------------------------------------------------------------


def _send_later(
    sink: Mailbox,
    subject: str,
    delay: float,
    when: Callable[[], object] = lambda: None,
) -> threading.Timer:
    """Send a message from another thread after ``delay`` seconds, once
    ``when()`` returns (it may wait for something)."""

    def send() -> None:
        when()
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail(
                "bg@example.com",
                ["ann@example.com"],
                f"Subject: {subject}\r\n\r\nx\r\n",
            )

    timer = threading.Timer(delay, send)
    timer.start()
    return timer


def test_wait_for_mail_from_a_thread(smtpsink: Mailbox) -> None:
    timer = _send_later(smtpsink, "background", 0.2)
    message = smtpsink.wait_for(subject="background", timeout=10)
    timer.join()
    assert message.envelope.mail_from == "bg@example.com"


def test_wait_for_several(smtpsink: Mailbox) -> None:
    timers = [_send_later(smtpsink, f"n{n}", 0.05 * n) for n in range(3)]
    found = smtpsink.wait_for(3, mail_from="bg@example.com", timeout=10)
    for timer in timers:
        timer.join()
    assert sorted(m.subject or "" for m in found) == ["n0", "n1", "n2"]


def test_wait_for_returns_the_first_match_and_assert_sent_the_latest(
    smtpsink: Mailbox, send: Send
) -> None:
    # As the docs say: mail already there, two matches.
    send(subject="one")
    send(subject="two")
    assert smtpsink.wait_for().subject == "one"
    assert smtpsink.assert_sent().subject == "two"


@pytest.mark.parametrize("wait", ["wait_for", "assert_sent"])
def test_a_query_on_what_wait_for_returned_lists_all_that_arrived(
    smtpsink: Mailbox, send: Send, wait: str
) -> None:
    # wait_for(N) returned Messages that knew only the matches: a failed
    # one() on them said 2 messages arrived "in this test" when 3 had
    # arrived since clear().
    send(subject="before")
    smtpsink.clear()
    send(subject="a")
    send(subject="b")
    send(subject="a")
    found = getattr(smtpsink, wait)(2, subject="a")
    with pytest.raises(AssertionError) as caught:
        found.one(subject="b")
    assert "\nMessages that arrived since clear() (3):\n" in str(caught.value), (
        caught.value
    )


def test_wait_for_mail_from_a_subprocess(smtpsink: Mailbox) -> None:
    script = (
        "import smtplib, sys\n"
        "with smtplib.SMTP(sys.argv[1], int(sys.argv[2])) as c:\n"
        "    c.sendmail('child@example.com', ['ann@example.com'], b'Subject: child\\r\\n\\r\\nx\\r\\n')\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, smtpsink.host, str(smtpsink.port)]
    ) as child:
        message = smtpsink.wait_for(subject="child", timeout=30)
    assert child.returncode == 0
    assert message.envelope.mail_from == "child@example.com"


@pytest.mark.anyio
async def test_wait_for_async_with_an_asyncio_client(smtpsink: Mailbox) -> None:
    import aiosmtplib

    async def send_soon() -> None:
        await aiosmtplib.send(
            make_message(subject="async"), hostname=smtpsink.host, port=smtpsink.port
        )

    import asyncio

    task = asyncio.ensure_future(send_soon())
    # The client runs on this same loop: a blocking wait would deadlock here.
    message = await smtpsink.wait_for_async(subject="async", timeout=10)
    await task
    assert message.subject == "async"


def _send_from_a_task(smtpsink: Mailbox, subject: str) -> asyncio.Task[object]:
    """The code under test, as an async application runs it: a task on the
    test's own loop that sends one message."""
    import aiosmtplib

    return asyncio.ensure_future(
        aiosmtplib.send(
            make_message(subject=subject), hostname=smtpsink.host, port=smtpsink.port
        )
    )


@pytest.mark.anyio
async def test_nothing_sent_with_a_watch_in_a_coroutine_is_refused(
    smtpsink: Mailbox,
) -> None:
    # It blocked the test's loop for the watch: the task's mail could not go
    # out meanwhile, and the check passed while the code did send.
    task = _send_from_a_task(smtpsink, "Sent all the same")
    with pytest.raises(RuntimeError) as refused:
        smtpsink.assert_nothing_sent(within=1)
    assert str(refused.value) == (
        "assert_nothing_sent(within=1) in a coroutine would block this thread's "
        "event loop for 1 s: mail sent by a task of that loop could not go out "
        "meanwhile, and the check would pass whatever the code does. Use "
        "await smtpsink.assert_nothing_sent_async(within=1)."
    )
    smtpsink.assert_nothing_sent()  # no watch, no wait: as it always was
    # The twin watches with the loop running: the task's mail fails it.
    with pytest.raises(AssertionError) as failed:
        await smtpsink.assert_nothing_sent_async(within=30)
    assert str(failed.value).splitlines()[:3] == [
        "expected no message within 30 s; found 1.",
        "Messages that arrived in this test (1):",
        f"  {smtpsink.messages[0].summary()}",
    ]
    await task


def test_a_loop_marked_running_under_a_plain_test_is_no_coroutine(
    smtpsink: Mailbox,
) -> None:
    # pytest-playwright's sync API (and nest_asyncio) leave a loop marked
    # running on the main thread under plain def tests: the watch is right
    # there (the mail comes from another thread or process), and was refused.
    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(loop)
    try:
        smtpsink.assert_nothing_sent(within=0.1)
        with pytest.raises(AssertionError) as failed:
            smtpsink.wait_for(timeout=0.1)
    finally:
        asyncio.events._set_running_loop(None)
        loop.close()
    assert "coroutine" not in str(failed.value)


@pytest.mark.anyio
async def test_nothing_sent_async_passes_when_nothing_comes(smtpsink: Mailbox) -> None:
    await smtpsink.assert_nothing_sent_async(within=0.2)
    await smtpsink.assert_nothing_sent_async()
    with pytest.raises(ValueError, match="within must be a finite number"):
        await smtpsink.assert_nothing_sent_async(within=-1)


@pytest.mark.anyio
async def test_wait_until_async_keeps_the_loop_running(smtpsink: Mailbox) -> None:
    task = _send_from_a_task(smtpsink, "Hi")

    def ended() -> bool:
        return smtpsink.sessions[-1].end is not None

    await smtpsink.wait_until_async(ended, timeout=30)
    await task
    with pytest.raises(AssertionError) as failed:
        await smtpsink.wait_until_async(lambda: False, timeout=0.1)
    assert str(failed.value).splitlines()[0] == (
        "wait_until_async(<lambda>) still false after 0.1 s."
    )


@pytest.mark.anyio
async def test_nothing_arrived_in_a_coroutine_advises_the_async_wait(
    smtpsink: Mailbox,
) -> None:
    # It advised wait_for(...), which blocks the loop that the sender's task
    # needs (and then failed saying so).
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    hint = str(caught.value).splitlines()[2]
    assert hint.endswith(
        "wait for the mail with await wait_for_async(...) in a coroutine."
    )


@pytest.mark.anyio
async def test_a_blocking_wait_in_a_coroutine_says_so_when_it_times_out(
    smtpsink: Mailbox,
) -> None:
    # The hint said that no client connected, and sent the user to check the
    # host, the port and the framework's mail settings.
    task = _send_from_a_task(smtpsink, "Blocked")
    with pytest.raises(AssertionError) as failed:
        smtpsink.wait_for(timeout=0.1)
    lines = str(failed.value).splitlines()
    assert lines[1:3] == [
        "No messages arrived in this test.",
        "Hint: wait_for was called in a coroutine and blocked this thread's "
        "event loop for the whole wait: mail that a task of that loop sends could "
        "not go out meanwhile. In a coroutine, await smtpsink.wait_for_async(...).",
    ]
    # Then the usual hint, right if the sender is a thread or a process.
    assert lines[3].startswith(f"Hint: no client connected to {smtpsink.url}")
    with pytest.raises(AssertionError) as failed:
        smtpsink.wait_until(lambda: smtpsink.messages, timeout=0.1)
    assert str(failed.value).splitlines()[1] == (
        "Hint: wait_until was called in a coroutine and blocked this thread's "
        "event loop for the whole wait: mail that a task of that loop sends could "
        "not go out meanwhile. In a coroutine, await smtpsink.wait_until_async(...)."
    )
    await task


@pytest.mark.anyio
async def test_an_async_condition_is_refused(smtpsink: Mailbox) -> None:
    # Its coroutine, never awaited, was true: the wait returned at once.
    async def ended() -> bool:
        return False

    expected = (
        "the condition ended returned an awaitable (an async def function?), "
        "which is never awaited here: give a plain function or lambda that "
        "returns a truth value"
    )
    with pytest.raises(TypeError) as refused:
        _ = await smtpsink.wait_until_async(ended, timeout=5)
    assert str(refused.value) == expected
    with pytest.raises(TypeError) as refused:
        _ = await asyncio.to_thread(smtpsink.wait_until, ended, 5)
    assert str(refused.value) == expected


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_a_blocking_watch_under_trio_is_refused_too(smtpsink: Mailbox) -> None:
    # anyio's trio backend: no asyncio loop runs, and the watch blocked
    # trio's as it did asyncio's.
    import anyio

    with pytest.raises(RuntimeError) as refused:
        smtpsink.assert_nothing_sent(within=1)
    assert str(refused.value) == (
        "assert_nothing_sent(within=1) in a trio coroutine would block this "
        "thread's event loop for 1 s: mail sent by a task of that loop could not "
        "go out meanwhile, and the check would pass whatever the code does. Use "
        "await anyio.to_thread.run_sync(lambda: smtpsink.assert_nothing_sent("
        "within=1)) (or trio.to_thread)."
    )
    # As it says: in a worker thread, trio's loop runs on.
    await anyio.to_thread.run_sync(lambda: smtpsink.assert_nothing_sent(within=0.1))
    with pytest.raises(AssertionError) as failed:
        smtpsink.wait_for(timeout=0.1)
    assert str(failed.value).splitlines()[2] == (
        "Hint: wait_for was called in a coroutine and blocked this thread's event "
        "loop for the whole wait: mail that a task of that loop sends could not "
        "go out meanwhile. Under trio, run it in a thread: await "
        "anyio.to_thread.run_sync(lambda: smtpsink.wait_for(...)) (or "
        "trio.to_thread)."
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_an_async_wait_outside_asyncio_says_what_to_do(smtpsink: Mailbox) -> None:
    # Awaited under trio (anyio's trio backend), it failed with asyncio's
    # bare "no running event loop". Driven here as any non-asyncio loop
    # drives a coroutine.
    for waiting, blocking in [
        (smtpsink.wait_for_async(timeout=1), "wait_for"),
        (smtpsink.wait_until_async(lambda: False, timeout=1), "wait_until"),
        (smtpsink.assert_nothing_sent_async(within=1), "assert_nothing_sent"),
    ]:
        with pytest.raises(RuntimeError) as refused:
            waiting.send(None)
        waiting.close()
        # A lambda: trio.to_thread.run_sync(smtpsink.wait_for), as it said,
        # passes no criteria.
        assert str(refused.value) == (
            "the *_async waits run on asyncio (pytest-asyncio, or anyio's asyncio "
            "backend), and no asyncio loop is running here; under trio, run the "
            "blocking wait in a thread: await anyio.to_thread.run_sync(lambda: "
            f"smtpsink.{blocking}(...)) (or trio.to_thread)"
        )


def test_a_timeout_past_what_the_clock_holds_waits_for_ever(
    smtpsink: Mailbox, send: Send
) -> None:
    # 1e10 s and more passed the checks, then raised OverflowError ("timestamp
    # out of range for platform time_t") from threading once the wait blocked.
    sender = threading.Thread(target=send, kwargs={"subject": "Late"})
    sender.start()
    try:
        assert smtpsink.wait_for(subject="Late", timeout=1e300).subject == "Late"
    finally:
        sender.join()


@pytest.mark.anyio
async def test_an_async_timeout_past_what_the_clock_holds_waits_for_ever(
    smtpsink: Mailbox, send: Send
) -> None:
    sender = threading.Thread(target=send, kwargs={"subject": "Late"})
    sender.start()
    try:
        message = await smtpsink.wait_for_async(subject="Late", timeout=1e300)
        assert message.subject == "Late"
    finally:
        sender.join()


def test_wait_for_timeout_reports_what_arrived(smtpsink: Mailbox, send: Send) -> None:
    send(subject="Welcome", to=["bob@example.com"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_for(to="ann@example.com", timeout=0.2)
    text = str(caught.value)
    assert re.match(
        r"wait_for timed out: expected 1 message within 0.2 s \(waited \d+\.\d\d s\) matching "
        r"to='ann@example.com'; found 0\.\nMessages that arrived in this test \(1\):\n"
        r"  #\d+ [\d:.]+ app@example.com -> bob@example.com \| To: bob@example.com \| "
        r"Subject: 'Welcome' \| \d+ bytes\nClosest: #\d+, which differs in:\n"
        r"  to: wanted 'ann@example.com', got \['bob@example.com'\]$",
        text,
    ), text


def test_a_long_subject_is_shown_where_it_differs(
    smtpsink: Mailbox, send: Send
) -> None:
    # Cut to its first 200 characters, a subject that differed at its end
    # never showed the difference: "(v2)" was nowhere in the failure.
    base = "Weekly digest: " + ", ".join(f"item{i}" for i in range(40))
    send(subject=base + " (v2)")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject=base + " (v1)")
    closest = str(caught.value).rsplit("which differs in:\n", 1)[1]
    # Each side cut where they differ (the wanted one was shown whole: a
    # 20,000-character text= twice, in the head line and here).
    assert closest == (
        f"  subject: wanted [{len(base) - 47} characters as received, then] "
        f"{base[-47:] + ' (v1)'!r}, got [{len(base) - 47} characters as wanted, "
        f"then] {base[-47:] + ' (v2)'!r}"
    )
    head = str(caught.value).split("\n", 1)[0]
    wanted = base + " (v1)"
    assert head.endswith(
        f"matching subject={wanted[:200]!r}... [{len(wanted) - 200} more characters]; "
        "found 0."
    )
    # A short one is shown whole, as before.
    with pytest.raises(AssertionError, match=r"got 'Weekly digest: item0, item1, "):
        smtpsink.assert_sent(subject=base[:40])


def test_a_long_wanted_text_is_shown_cut(smtpsink: Mailbox, send: Send) -> None:
    # text=expected_body (a fixture file) printed the whole file twice.
    send(text="short\n")
    wanted = "A" * 20_000
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(text=wanted, subject=re.compile("B" * 5_000))
    text = str(caught.value)
    assert max(map(len, text.splitlines())) < 800, text
    cut = f"{wanted[:200]!r}... [19800 more characters]"
    pattern = f"re.compile({'B' * 200!r}... [4800 more characters])"
    assert text.startswith(
        f"expected at least 1 message matching text={cut}, subject={pattern}; "
    )
    assert f"\n  text: wanted {cut}, got 'short\\n'\n" in text, text
    assert f"\n  subject: wanted {pattern}, got 'Hello'" in text, text


def test_a_long_recipient_list_is_shown_shortened_with_the_near_miss(
    smtpsink: Mailbox, send: Send
) -> None:
    # 300 recipients made a "differs in" line of 6,000 characters.
    recipients = [f"u{i}@example.com" for i in range(300)]
    send(subject="All hands", rcpt=recipients)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(rcpt_to="u250@example.con")
    closest = str(caught.value).rsplit("which differs in:\n", 1)[1]
    assert closest == (
        "  rcpt_to: wanted 'u250@example.con', got ['u0@example.com', "
        + ", ".join(repr(r) for r in recipients[1:10])
        + ", ... (+290 more)]; the closest: 'u250@example.com'"
    )


def test_assert_nothing_sent_catches_late_mail(smtpsink: Mailbox) -> None:
    store = smtpsink._store

    def watched() -> None:
        # Mail that comes before the assertion watches fails it at once,
        # in other words: the mail must come while it watches.
        deadline = time.monotonic() + 30
        while not store.watchers and time.monotonic() < deadline:
            time.sleep(0.001)  # a poll of the assertion's state, not a delay

    timer = _send_later(smtpsink, "late", 0, when=watched)
    started = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"expected no message within 30 s; found 1"
    ):
        smtpsink.assert_nothing_sent(within=30)
    timer.join()
    # It failed on arrival, not at the end of the window.
    assert time.monotonic() - started < 30


def test_assert_nothing_sent_with_mail_already_there_fails_at_once(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="early")
    started = time.monotonic()
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_nothing_sent(within=30)
    # Nothing was watched: the report does not claim a window.
    assert str(caught.value).startswith("expected no message; found 1"), caught.value
    assert "Subject: 'early'" in str(caught.value)
    assert time.monotonic() - started < 30


def test_assert_nothing_sent_passes_on_silence(smtpsink: Mailbox) -> None:
    smtpsink.assert_nothing_sent()
    smtpsink.assert_nothing_sent(within=0.05)


@pytest.mark.parametrize(
    ("call", "error", "text"),
    [
        (lambda box: box.wait_for(timeout=float("nan")), ValueError, "timeout"),
        (lambda box: box.wait_for(timeout=float("inf")), ValueError, "timeout"),
        (lambda box: box.wait_for(timeout="1"), TypeError, "timeout"),
        (lambda box: box.wait_until(bool, timeout=float("nan")), ValueError, "timeout"),
        (
            lambda box: box.assert_nothing_sent(within=float("nan")),
            ValueError,
            "within",
        ),
        (
            lambda box: box.assert_nothing_sent(within=float("inf")),
            ValueError,
            "within",
        ),
        (lambda box: box.assert_nothing_sent(within="1"), TypeError, "within"),
    ],
    ids=[
        "nan",
        "inf",
        "str",
        "wait_until-nan",
        "within-nan",
        "within-inf",
        "within-str",
    ],
)
def test_waits_refuse_a_time_that_is_not_a_finite_number(
    smtpsink: Mailbox, call: Callable[[Mailbox], object], error: type, text: str
) -> None:
    """NaN compares false with everything, so it passed the check for a
    negative time and then waited for ever; a str failed deep inside."""
    with pytest.raises(error, match=rf"^{text} must be a .*number of seconds"):
        call(smtpsink)


def test_a_positional_string_is_taken_for_the_criterion_meant(
    smtpsink: Mailbox,
) -> None:
    with pytest.raises(TypeError, match=r"^count must be") as raised:
        smtpsink.assert_sent("ann@example.com")  # type: ignore[call-overload]
    assert str(raised.value) == (
        "count must be a whole number >= 0, got the str 'ann@example.com' (criteria "
        "are keywords: did you mean to='ann@example.com'?)"
    )
    with pytest.raises(TypeError, match=r"did you mean subject='Welcome'\?"):
        smtpsink.wait_for("Welcome", timeout=0)  # type: ignore[call-overload]
    # A wrong type is a TypeError, as for timeout= (it was a ValueError).
    with pytest.raises(TypeError, match=r"got the bool True$"):
        smtpsink.assert_sent(count=True)
    with pytest.raises(TypeError, match=r"got the float 1\.0$"):
        smtpsink.wait_for(count=1.0, timeout=0)  # type: ignore[call-overload]


def test_wait_until_times_out_listing_sessions_and_messages(
    smtpsink: Mailbox, send: Send
) -> None:
    send(subject="arrived")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.helo("idle.example")

    def never() -> bool:
        return False

    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_until(never, timeout=0.05)
    lines = str(caught.value).splitlines()
    assert lines[0] == "wait_until(never) still false after 0.05 s."
    assert lines[1] == "Sessions in this test (2):"
    assert re.fullmatch(
        r"  127\.0\.0\.1:\d+ ehlo='.*' tls=no auth=None messages=1 end=quit "
        r"commands=EHLO MAIL RCPT DATA QUIT "
        r"last: S: 221 Bye",
        lines[2],
    ), lines[2]
    assert re.fullmatch(
        r"  127\.0\.0\.1:\d+ ehlo='idle\.example' tls=no auth=None messages=0 "
        r"end=(quit|open) commands=HELO( QUIT)? "
        r"last: .*",
        lines[3],
    ), lines[3]
    assert lines[4] == "Messages in this test (1):"
    assert "Subject: 'arrived'" in lines[5]


def test_wait_until_times_out_listing_a_session_held_at_connect(
    smtpsink: Mailbox,
) -> None:
    # Its greeting has no reply yet: not an IndexError, and the fault that
    # holds it is named (it read "nothing yet").
    smtpsink.hang("CONNECT")
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=5):
        # The fault's mark comes a loop step after the session: wait for it.
        smtpsink.wait_until(
            lambda: smtpsink.sessions[0].transcript[0].injected, timeout=30
        )
        with pytest.raises(AssertionError) as caught:
            smtpsink.wait_until(lambda: False, timeout=0.05)
    assert (
        str(caught.value)
        .splitlines()[2]
        .endswith("last: S: (none)  [injected: no greeting]")
    )
    smtpsink.clear_faults()


def test_wait_until_shows_what_a_condition_that_never_works_raised(
    smtpsink: Mailbox, send: Send
) -> None:
    # IndexError counts as "not yet", but a wrong index (a bug in the
    # condition) must not look like a slow sink when the wait gives up.
    send(subject="one")

    def second_session() -> bool:
        return smtpsink.sessions[1].end is not None

    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_until(second_session, timeout=0.05)
    lines = str(caught.value).splitlines()
    assert lines[0] == "wait_until(second_session) still false after 0.05 s."
    assert lines[1] == (
        "Its last call raised IndexError: tuple index out of range "
        "(an IndexError or KeyError counts as 'not yet')."
    )
    assert lines[2] == "Sessions in this test (1):"


def test_wait_until_lets_other_errors_of_the_condition_through(
    smtpsink: Mailbox,
) -> None:
    def broken() -> bool:
        return smtpsink.sessions.end  # type: ignore[attr-defined,no-any-return]

    with pytest.raises(AttributeError, match="end"):
        smtpsink.wait_until(broken, timeout=30)  # at once, not after 30 s


def test_wait_until_waits_for_an_assertion_to_pass(smtpsink: Mailbox) -> None:
    # A background reader (an IDLE listener, a poller) moves the mail: the
    # mailbox's assert_in raised at its first check, and wait_until let that
    # AssertionError through at once, however right the expectation.
    import imaplib

    smtpsink.deliver(b"Subject: Hi\r\n\r\nx\r\n", to="ann@example.com")
    box = smtpsink.mailbox("ann@example.com")
    checked = threading.Event()

    def reader() -> None:
        checked.wait(30)  # moves only once the check has failed
        client = imaplib.IMAP4(smtpsink.imap.host, smtpsink.imap.port)
        try:
            client.login("ann@example.com", "pw")
            client.select("INBOX")
            client.create("Handled")
            # Its UID is the sink's next: 1 only in a sink's first test.
            client.uid("MOVE", "1:*", "Handled")
        finally:
            client.logout()

    def handled() -> object:
        try:
            return box.assert_in("Handled", subject="Hi")
        finally:
            checked.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        smtpsink.wait_until(handled, timeout=30)
    finally:
        checked.set()
        thread.join()
    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_until(lambda: box.assert_in("Archive", subject="Hi"), timeout=0.1)
    report = str(caught.value).splitlines()
    assert report[:2] == [
        "wait_until(<lambda>) still false after 0.1 s.",
        "Its last call failed:",
    ]
    assert report[2] == (
        "  expected exactly 1 message in ann@example.com's Archive matching "
        "subject='Hi'; found 0 (there is no folder 'Archive')."
    )


def test_wait_until_waits_through_lookup_errors(smtpsink: Mailbox) -> None:
    timer = _send_later(smtpsink, "later", 0.05)
    seen: list[str] = []

    def delivered() -> bool:
        seen.append("called")
        return smtpsink.messages[0].subject == "later"  # IndexError until then

    smtpsink.wait_until(delivered, timeout=30)
    timer.join()
    assert len(seen) >= 2  # it failed (IndexError) at least once, then held


# -- failure output as users see it ----------------------------------------------------------


def test_failure_output_points_at_the_users_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib

def test_welcome(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com", "boss@example.com"],
                        b"To: ann@example.com\\r\\nSubject: Welcome aboard\\r\\n\\r\\nhi\\r\\n")
    smtpsink.assert_sent(to="boss@example.com", subject="Welcome")
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>       smtpsink.assert_sent(to="boss@example.com", subject="Welcome")',
            "E       AssertionError: expected at least 1 message matching to='boss@example.com', subject='Welcome'; found 0.",
            "E       Messages that arrived in this test (1):",
            "E         #* app@example.com -> ann@example.com, boss@example.com | To: ann@example.com | Subject: 'Welcome aboard' | * bytes",
            "E       Closest: #*, which differs in:",
            "E         to: wanted 'boss@example.com', got ['ann@example.com']",
            "E         subject: wanted 'Welcome', got 'Welcome aboard'",
            "E       Hint: boss@example.com received #* but is not in its 'to' header (a Bcc, or a different header): match envelope recipients with rcpt_to='boss@example.com'",
            "E       Hint: subject= means equal: #*'s subject 'Welcome aboard' only contains it; use re.compile('Welcome')",
        ]
    )
    # __tracebackhide__: no frames from inside the plugin
    assert plugin_frames(result.stdout.str(), "_mailbox.py") == []


def test_errors_in_a_tests_own_arguments_show_no_plugin_frames(
    pytester: pytest.Pytester,
) -> None:
    # A predicate that raises, an unknown lint code, a marker on a test that
    # does not use the fixture (under -W error): the test's line and the
    # plugin's message, not the plugin's code (__tracebackhide__).
    pytester.makepyfile(
        """
import smtplib
import pytest

def test_predicate(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"\\r\\nhi\\r\\n")
    smtpsink.assert_sent(subject=lambda s: s.startswith("Wel"))

def test_lint_code(smtpsink):
    smtpsink.assert_clean(ignore=["missing-dat"])

@pytest.mark.smtpsink(max_size=1000)
def test_marker_alone():
    pass

def test_dns_zone(smtpsink):
    smtpsink.dns.mx("p.example", [(10, smtpsink)])
    smtpsink.dns.null_mx("p.example")

def test_async_condition(smtpsink):
    async def ready():
        return True

    smtpsink.wait_until(ready, timeout=1)

def test_condition_raises(smtpsink):
    smtpsink.wait_until(lambda: 1 / 0, timeout=1)

def test_spamd_unreachable(smtpsink):
    smtpsink.deliver("Subject: x\\r\\n\\r\\nx\\r\\n", to="ann@example.com")
    message = smtpsink.mailbox("ann@example.com").messages()[0]
    message.spam_report(spamd="127.0.0.1:1", timeout=5)
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "-W", "error")
    result.assert_outcomes(failed=6, passed=1, errors=1)  # the marker: at teardown
    result.stdout.fnmatch_lines(
        [
            "E * @pytest.mark.smtpsink does nothing here:*",
            "E * the criterion subject=<lambda> raised AttributeError:*",
            "E * ignore: 'missing-dat' is not a lint code (did you mean 'missing-date'?)*",
        ],
        consecutive=False,
    )
    output = result.stdout.str()
    assert "E       ValueError: p.example has MX records (mx()): a null MX is" in output
    assert "ZeroDivisionError: division by zero" in output
    assert "returned an awaitable (an async def function?)" in output
    assert "SpamdError" in output
    modules = ("_match.py", "_messages.py", "_mailbox.py", "_lint.py", "plugin.py")
    assert plugin_frames(output, *modules, "_dns.py", "_message.py", "_store.py") == []


def test_a_tests_own_slips_show_no_plugin_frames(pytester: pytest.Pytester) -> None:
    # The most common slips: reading messages[0] before the mail came (a
    # bare "tuple index out of range"), the lambda forgotten in wait_until
    # ("'bool' object is not callable" from inside the wait), a mailbox
    # kept from an earlier test, waiting on a stopped sink, a naive date.
    pytester.makepyfile(
        """
import datetime
import smtplib

from pytest_smtpsink import SMTPSink

KEPT = []

def test_index(smtpsink):
    smtpsink.messages[0]

def test_index_past_the_end(smtpsink):
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: a\\r\\n\\r\\n")
    smtpsink.wait_for()
    smtpsink.messages.filter(subject="b")[0]

def test_no_lambda(smtpsink):
    smtpsink.wait_until(len(smtpsink.messages) == 1)

def test_keep(smtpsink):
    KEPT.append(smtpsink)

def test_stale():
    KEPT[0].wait_for(timeout=1)

def test_stopped():
    with SMTPSink() as sink:
        pass
    sink.wait_for(timeout=1)

def test_naive_date(smtpsink):
    smtpsink.deliver(b"Subject: x\\r\\n\\r\\n", to="ann@example.com",
                     date=datetime.datetime(2026, 1, 2))

def test_index_by_address(smtpsink):
    smtpsink.messages["ann@example.com"]

def test_slice_by_address(smtpsink):
    smtpsink.messages["ann@example.com":]
"""
    )
    result = pytester.runpytest("-p", "no:xdist", "-W", "error")
    result.assert_outcomes(failed=8, passed=1)
    result.stdout.fnmatch_lines(
        [
            # ?0?: [0] would be a set of characters to fnmatch.
            "E * IndexError: no message ?0?: no messages arrived in this test "
            "(wait_for() waits for mail that is on its way)",
            "E * IndexError: no message ?0?: messages.filter(subject='b') holds "
            "0 messages.",
            "E * Messages that arrived in this test (1):",
            "E * TypeError: wait_until() takes a condition to call, e.g. "
            "wait_until(lambda: len(smtpsink.messages) == 1); got bool False",
            "E * RuntimeError: this mailbox belongs to *, which has ended:*",
            "E * cannot wait for mail: the SMTP sink was stopped",
            "E * ValueError: date must be timezone-aware*",
            # It said "tuple indices must be integers or slices, not str".
            "E * TypeError: messages[[]...[]] takes a position or a slice, got "
            "'ann@example.com'; to find mail by its fields, use filter(...) or "
            "one(...) (messages.filter(to=...))",
            "E * TypeError: messages[[]...[]] takes positions in a slice, got "
            "slice('ann@example.com', None, None); *",
        ],
        consecutive=False,
    )
    modules = ("_messages.py", "_mailbox.py", "_store.py", "_server.py")
    assert plugin_frames(result.stdout.str(), *modules, "_user_mailbox.py") == []


def test_an_index_not_there_yet_inside_a_wait_builds_no_report(
    smtpsink: Mailbox,
) -> None:
    # messages[N] past the end listed every message, on each of the wait's
    # checks (one per recorded line): a run waiting so was 45 % slower.
    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_until(lambda: smtpsink.messages[0], timeout=0.1)
    assert (
        "Its last call raised IndexError: no message [0] yet (0 messages) (an "
        "IndexError or KeyError counts as 'not yet')."
    ) in str(caught.value)


def test_wait_until_returns_what_the_condition_returned(smtpsink: Mailbox) -> None:
    _send_later(smtpsink, "later", 0.05).join()
    message = smtpsink.wait_until(lambda: smtpsink.messages[0], timeout=30)
    assert message.subject == "later"


@pytest.mark.anyio
async def test_wait_until_async_returns_it_and_refuses_a_value(
    smtpsink: Mailbox,
) -> None:
    _send_later(smtpsink, "later", 0.05).join()
    message = await smtpsink.wait_until_async(lambda: smtpsink.messages[0], 30)
    assert message.subject == "later"
    with pytest.raises(TypeError, match=r"^wait_until_async\(\) takes a condition"):
        await smtpsink.wait_until_async(True)  # type: ignore[arg-type]


def test_failure_hint_for_html_only_text(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib
from email.message import EmailMessage

def test_html(smtpsink):
    m = EmailMessage()
    m["Subject"] = "Reset"
    m.set_content("<p>Reset your password</p>", subtype="html")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(m, "a@example.com", ["b@example.com"])
    smtpsink.assert_sent(text="Reset your password")
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.stdout.fnmatch_lines(
        [
            "E         text: wanted 'Reset your password', got no text part",
            "E       Hint: #* has it in its html part, not its text part: use body= to match either",
        ]
    )


def test_long_bodies_are_shortened_in_failures(smtpsink: Mailbox, send: Send) -> None:
    send(text="x" * 50_000)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(text="y")
    assert len(str(caught.value)) < 2_000
    assert "[49801 more characters]" in str(caught.value)


def test_a_header_mismatch_shows_the_values_the_message_has(
    smtpsink: Mailbox, send: Send
) -> None:
    # The value is what the test got wrong: a list of header names alone
    # does not say whether the header was missing or said something else.
    send(X_Mailer="app 2.0", X_Tag="a", X_Other="b")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(
            header={"x-mailer": "app 1.0", "X-Tag": "a", "X-Campaign": "spring"}
        )
    assert str(caught.value).endswith(
        "\n  header: wanted {'x-mailer': 'app 1.0', 'X-Tag': 'a', 'X-Campaign': "
        "'spring'}, got x-mailer: 'app 2.0'; no X-Campaign header (headers: From, "
        "To, Subject, X-Mailer, X-Tag, X-Other, Content-Type, "
        "Content-Transfer-Encoding, MIME-Version)"
    ), caught.value


def test_a_header_string_means_equal(smtpsink: Mailbox, send: Send) -> None:
    # As documented for every str criterion: a part of the value is no
    # match (nothing held it: "contains" would have passed unnoticed).
    send(X_Campaign="spring-sale-2026")
    with pytest.raises(AssertionError, match="found 0"):
        smtpsink.assert_sent(header={"X-Campaign": "spring"})
    smtpsink.assert_not_sent(header={"X-Campaign": "sale"})
    smtpsink.assert_sent(header={"x-campaign": "spring-sale-2026"})


def test_a_repeated_header_mismatch_shows_every_value(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "a@example.com",
            ["b@example.com"],
            b"Received: one\r\nReceived: tw\x1bo\r\nSubject: x\r\n\r\nx\r\n",
        )
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(header={"Received": re.compile("three")})
    assert str(caught.value).endswith(
        "\n  header: wanted {'Received': re.compile('three')}, "
        "got Received: 'one', 'tw\\x1bo'"
    ), caught.value


def test_a_missing_header_lists_the_names_of_many_headers_shortened(
    smtpsink: Mailbox,
) -> None:
    headers = "".join(f"X-H{n}: v\r\n" for n in range(500))
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], f"{headers}\r\nx\r\n")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(header={"X-Nope": "1"})
    assert str(caught.value).endswith(
        "got no X-Nope header (headers: X-H0, X-H1, X-H2, X-H3, X-H4, X-H5, X-H6, "
        "X-H7, X-H8, X-H9, X-H10, X-H11, X-H12, X-H13, X-H14, X-H15, X-H16, X-H17, "
        "X-H18, X-H19, X-H20, X-H21, X-H22, X-H23, X-H24, X-H25, X-H26, X-H27, "
        "X-H28, ... (+471 more))"
    ), caught.value


def test_many_messages_are_listed_up_to_a_limit(smtpsink: Mailbox) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for n in range(30):
            client.sendmail(
                "a@example.com", ["b@example.com"], f"Subject: n{n}\r\n\r\nx\r\n"
            )
    with pytest.raises(AssertionError) as raised:
        smtpsink.assert_sent(subject="nope")
    report = str(raised.value)
    # The closest (#1: all differ alike), then the newest: 20 in all.
    assert "Subject: 'n0'" in report
    assert "\n  ... 10 more\n" in report
    assert all(f"Subject: 'n{n}'" in report for n in range(11, 30))


def test_past_the_limit_the_matches_and_the_closest_are_listed(
    smtpsink: Mailbox,
) -> None:
    # Only the first 20 were listed: "(* marks the messages that match)"
    # with no line marked, and a "Closest: #31" not shown anywhere.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for n in range(40):
            to = "ann@example.com" if n in (3, 35) else "bob@example.com"
            client.sendmail("a@example.com", [to], f"To: {to}\r\nSubject: n{n}\r\n\r\n")
    with pytest.raises(AssertionError) as raised:
        smtpsink.assert_sent(to="ann@example.com", count=3)
    report = str(raised.value)
    assert re.search(r"\n\* #\d+ .*Subject: 'n3'", report), report
    assert re.search(r"\n\* #\d+ .*Subject: 'n35'", report), report
    with pytest.raises(AssertionError) as raised:
        smtpsink.assert_sent(to="ann@example.com", subject="n20")
    report = str(raised.value)
    closest = re.search(r"Closest: #(\d+),", report)
    assert closest is not None, report
    assert re.search(rf"\n  #{closest[1]} ", report), report


def test_one_after_a_filter_or_slice_names_the_query(smtpsink: Mailbox) -> None:
    # The report checked one()'s criteria against all that arrived: "found
    # 0" beside a listed match, and "Closest: #1, which differs in:" with
    # nothing after it; the filter was named nowhere.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for to, subject in [("bob", "Reset"), ("ann", "Welcome"), ("ann", "Receipt")]:
            raw = f"To: {to}@example.com\r\nSubject: {subject}\r\n\r\nx\r\n"
            client.sendmail("a@example.com", [f"{to}@example.com"], raw)
    ann = smtpsink.messages.filter(to="ann@example.com")
    with pytest.raises(AssertionError) as raised:
        ann.one(subject="Reset")
    report = str(raised.value)
    assert report.startswith(
        "expected exactly 1 message matching subject='Reset' among the 2 messages "
        "of messages.filter(to='ann@example.com'); found 0."
    ), report
    assert re.search(r"\n- #\d+ .*Subject: 'Reset'", report), report
    assert (
        "(- marks the messages that messages.filter(to='ann@example.com') left out)"
        in report
    )
    assert report.endswith(
        "which differs in:\n  subject: wanted 'Reset', got 'Receipt'"
    )
    with pytest.raises(AssertionError) as raised:
        smtpsink.messages[3:].one()
    assert "among the 0 messages of messages[3:]; found 0." in str(raised.value)
    assert "messages[3:] left none to look at." in str(raised.value)


def test_a_display_name_or_encoded_words_asked_for_get_a_hint(
    smtpsink: Mailbox,
) -> None:
    # to="Ann Smith" and a subject copied from the raw message as RFC 2047
    # encoded words failed with no hint of why.
    raw = (
        b"From: Example App <noreply@example.com>\r\n"
        b"To: Ann Smith <ann@example.com>\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nHi.\r\n"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@example.com", ["ann@example.com"], raw)
    number = smtpsink.messages[0].number

    def hints(**criteria: str) -> list[str]:
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent(**criteria)  # type: ignore[call-overload]
        return [line for line in str(caught.value).splitlines() if "Hint" in line]

    assert hints(to="ann smith") == [
        f"Hint: 'ann smith' is a display name (#{number} has 'Ann Smith "
        "<ann@example.com>'): to= compares addresses; use to='ann@example.com', or "
        "match the name with to=lambda found: any(a.name == 'Ann Smith' for a in "
        "found)"
    ]
    assert hints(from_="Example App") == [
        f"Hint: 'Example App' is a display name (#{number} has 'Example App "
        "<noreply@example.com>'): from_= compares addresses; use "
        "from_='noreply@example.com', or match the name with from_=lambda found: "
        "found is not None and found.name == 'Example App'"
    ]
    assert smtpsink.assert_sent(
        from_=lambda found: found is not None and found.name == "Example App"
    )
    assert hints(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=") == [
        f"Hint: subject= compares the decoded subject: #{number}'s Subject header "
        "is written with those RFC 2047 encoded words, which read 'Grüße'; use "
        "subject='Grüße'"
    ]
    assert hints(to="Bob") == []


def test_text_written_otherwise_gets_a_hint(smtpsink: Mailbox, send: Send) -> None:
    # Apps wrap text at 72 columns and templates escape "&": the words are
    # there, the test's string is not, and "differs in" showed a long body.
    send(
        subject="Your  order",
        text="Thanks for your order of\nTom & Jerry, shipped today.\n",
        html="<p>Thanks for your order of Tom &amp; Jerry.</p>",
    )
    send(subject="Quote", html="<p>Ann&#39;s order</p>")
    first, second = (m.number for m in smtpsink.messages)

    def report(**criteria: str) -> str:
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent(**criteria)  # type: ignore[call-overload]
        return str(caught.value)

    assert (
        f"Hint: #{first}'s text part has it with other spaces or line breaks; use "
        "re.compile('order\\\\s+of\\\\s+Tom\\\\s+\\\\&\\\\s+Jerry')"
    ) in report(text="order of Tom & Jerry")
    pattern = re.compile(r"order\s+of\s+Tom\s+\&\s+Jerry")
    assert smtpsink.assert_sent(text=pattern).number == first  # the advice works
    # Not "or use text=": its text part has the words wrapped (that advice
    # failed again); the escaped spelling to match instead.
    assert report(html="of Tom & Jerry").endswith(
        f"Hint: #{first}'s html part has it escaped, as 'of Tom &amp; Jerry': match "
        "the HTML as written (html='of Tom &amp; Jerry')"
    )
    assert smtpsink.assert_sent(html="of Tom &amp; Jerry").number == first
    # The spelling to match for a character reference too (it said only
    # "with HTML character references (such as &#39; for ')").
    assert report(html="Ann's order").endswith(
        f"Hint: #{second}'s html part has it escaped, as 'Ann&#39;s order': match "
        "the HTML as written (html='Ann&#39;s order')"
    )
    assert smtpsink.assert_sent(html="Ann&#39;s order").number == second
    # text= looks at the HTML too: the words are there, escaped.
    assert report(text="Ann's order").endswith(
        f"Hint: #{second}'s html part has it escaped, as 'Ann&#39;s order', not "
        "its text part: match the HTML as written (html='Ann&#39;s order')"
    )
    send(subject="Both", text="Ann & Bob\n", html="<p>Ann &amp; Bob</p>")
    third = smtpsink.messages[-1].number
    assert report(html="Ann & Bob").endswith(
        f"Hint: #{third}'s html part has it escaped, as 'Ann &amp; Bob': match the "
        "HTML as written (html='Ann &amp; Bob'), or use text="
    )
    assert (
        f"Hint: #{first}'s subject 'Your  order' differs from it only in spaces, "
        "tabs or line breaks"
    ) in report(subject="Your order")
    # Not there at all: no hint.
    assert "Hint" not in report(html="Tom and Jerry")
    assert "Hint" not in report(body="Tom and Jerry")


def test_text_written_otherwise_on_the_wire_gets_a_hint(smtpsink: Mailbox) -> None:
    # A subject in NFD printed as the NFC one asked for ("wanted 'Café',
    # got 'Café'"), and a CSV attached with LF ends arrived with CRLF ones
    # ("wanted b'...', got [<Attachment ... 20 bytes>]"): no hint said why.
    import unicodedata
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = unicodedata.normalize("NFD", "Café menu")
    message.set_content("Today's menu.")
    message.add_attachment("name,total\nann,10\n", subtype="csv", filename="export.csv")
    message.add_attachment(
        b"%PDF-1.4", maintype="application", subtype="pdf", filename="Ma\u0308rz.pdf"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(message)
    number = smtpsink.wait_for().number

    def report(**criteria: Any) -> str:
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent(**criteria)
        return str(caught.value)

    assert report(subject="Café menu").splitlines()[-1] == (
        f"Hint: #{number}'s subject differs from it only in how accented letters "
        "are written (Unicode normalization): 'Cafe\\u0301 menu' against "
        "'Caf\\xe9 menu'; compare unicodedata.normalize('NFC', ...) of each"
    )
    assert report(attachment=b"name,total\nann,10\n").splitlines()[-1] == (
        f"Hint: #{number}'s attachment 'export.csv' (text/csv) has it with CRLF line "
        "ends, as text parts travel over SMTP: compare with wanted.replace(b'\\n', "
        "b'\\r\\n'), or the content with .replace(b'\\r\\n', b'\\n')"
    )
    smtpsink.assert_sent(attachment=b"name,total\r\nann,10\r\n")  # the advice works
    # A file name in another case, as subject= says it (helper-181).
    assert report(attachment="EXPORT.csv").splitlines()[-1] == (
        f"Hint: attachment= is case-sensitive: #{number} has 'export.csv'; use "
        "re.compile('^EXPORT\\\\.csv$', re.IGNORECASE)"
    )
    smtpsink.assert_sent(attachment=re.compile("^EXPORT\\.csv$", re.IGNORECASE))
    # The file name as the application wrote it (decomposed, as macOS file
    # systems give names) matches the composed one mail-parser reads.
    smtpsink.assert_sent(attachment="Ma\u0308rz.pdf")
    smtpsink.assert_sent(attachment="M\u00e4rz.pdf")


def test_the_closest_of_equal_misses_is_the_nearest(
    smtpsink: Mailbox, send: Send
) -> None:
    # With one criterion every message misses it once: "Closest" was the
    # oldest, whatever it said, not the near miss.
    for subject in ("Invoice", "Welcome abord", "Receipt"):
        send(subject=subject)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome aboard")
    near = smtpsink.messages[1].number
    assert (
        f"\nClosest: #{near}, which differs in:\n  subject: wanted "
        "'Welcome aboard', got 'Welcome abord'"
    ) in str(caught.value), caught.value
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(to="ann@exmaple.com", subject="Receipt")
    last = smtpsink.messages[2].number
    assert f"\nClosest: #{last}, which differs in:\n  to: " in str(caught.value)


def test_the_null_sender_is_matched_as_summaries_write_it(smtpsink: Mailbox) -> None:
    # Summaries show a bounce's MAIL FROM:<> as "<>", but mail_from="<>"
    # matched nothing (only ""); and subject="" got the hint "only contains
    # it", which every subject does.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("", ["ann@example.com"], b"Subject: bounce\r\n\r\nx\r\n")
    assert smtpsink.assert_sent(mail_from="<>").subject == "bounce"
    assert smtpsink.assert_sent(mail_from="").subject == "bounce"
    with pytest.raises(AssertionError) as raised:
        smtpsink.assert_sent(subject="")
    assert "only contains it" not in str(raised.value)


def test_plain_assert_on_messages_is_readable(smtpsink: Mailbox, send: Send) -> None:
    send(subject="one")
    assert repr(smtpsink.messages).startswith("Messages([\n  <Message #")
    assert isinstance(smtpsink.messages[0], Message)


def test_plain_assert_diffs_are_readable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import smtplib

def send(sink, subject):
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], f"Subject: {subject}\\r\\n\\r\\nx\\r\\n")

def test_messages(smtpsink):
    send(smtpsink, "one")
    assert smtpsink.messages == []

def test_two_messages(smtpsink):
    send(smtpsink, "one")
    send(smtpsink, "two")
    first, second = smtpsink.messages
    assert first == second

def test_a_filter(smtpsink):
    send(smtpsink, "one")
    assert smtpsink.messages.filter(subject="two") == smtpsink.messages

def test_subjects(smtpsink):
    send(smtpsink, "one")
    assert smtpsink.messages == ["one"]
"""
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "E       *assert 1 message(s) arrived, compared with 0 item(s):",
            "E           #* a@example.com -> b@example.com | To: - | Subject: 'one' | * bytes",
            "E       *assert two different messages:",
            "E           #* Subject: 'one' *",
            "E           #* Subject: 'two' *",
            "E           subject: 'one' != 'two'",
            # Not "(no messages arrived)": one did, and the filter left none.
            "E       *assert 0 message(s) messages.filter(subject='two') holds, "
            "compared with 1 item(s):",
            "E           (none)",
            "E         against:",
            "E           #* Subject: 'one' *",
            # The item compared was never shown.
            "E       *assert 1 message(s) arrived, compared with 1 item(s):",
            "E           #* Subject: 'one' *",
            "E         against:",
            "E           'one'",
            "E         (a Message equals only itself: compare a field, e.g. "
            "[[]m.subject for m in smtpsink.messages[]] == [[]...[]])",
        ]
    )


def test_nothing_arrived_says_that_no_client_connected(smtpsink: Mailbox) -> None:
    # A test whose code never reached the sink (wrong port, or an in-memory
    # test backend such as Django's locmem) is told so, with the address
    # its code should have been given.
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    assert str(caught.value) == (
        "expected at least 1 message matching subject='Welcome'; found 0.\n"
        "No messages arrived in this test.\n"
        f"Hint: no client connected to {smtpsink.url} in this test either: "
        "is the code under test given this host and port? A test setting may "
        "also keep mail in memory (Django's test runner and pytest-django, "
        "Flask-Mailman and Flask-Mail with TESTING=True, unless "
        "MAIL_BACKEND='smtp' or MAIL_SUPPRESS_SEND=False is set "
        "before the extension starts): see the Recipes page "
        "of the docs. Or it sends in the background (a thread, a task "
        "queue) and has not connected yet: wait for the mail with wait_for(...)."
    )
    # Reading mailboxes is no SMTP client either.
    smtpsink.deliver("Subject: Seeded\r\n\r\nx\r\n", to="ann@example.com")
    with pytest.raises(AssertionError, match="no client connected") as caught:
        smtpsink.wait_for(subject="Welcome", timeout=0)
    # It did wait: no advice to.
    assert "has not connected yet" not in str(caught.value)


def test_nothing_arrived_shows_how_far_each_connection_got(
    smtpsink: Mailbox,
) -> None:
    # A client that connected and failed before its message was stored (a
    # refused recipient here; STARTTLS or AUTH the sink does not offer, in
    # a misconfigured app) is a different fix from one that never came:
    # the report shows its session and the last reply.
    smtpsink.fail("RCPT", 550, "No such user here")
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        client.send_message(make_message(subject="Welcome"))
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    text = str(caught.value)
    assert "\nNo messages arrived in this test.\n" in text, text
    assert (
        "\nHint: 1 SMTP session connected in this test but delivered no "
        "message; how far each got:\n  127.0.0.1:"
    ) in text, text
    session_line = text.rsplit("\n", 1)[1]
    assert "messages=0" in session_line, text
    assert "commands=EHLO MAIL RCPT" in session_line, text
    # smtplib's RSET and QUIT come after the refusal: the refusal is named
    # (as smtplib spells the command: "rcpt TO:", "rcpt to:" from 3.13).
    head, _, refusal = session_line.partition("; last refusal: ")
    assert head.endswith(" last: S: 221 Bye"), text
    assert refusal.lower() == (
        "c: rcpt to:<ann@example.com> s: 550 no such user here  [injected]"
    ), text
    assert "no client connected" not in text, text


def test_with_mail_arrived_the_report_names_what_the_sink_refused(
    smtpsink: Mailbox,
) -> None:
    # Once any message had arrived, the report listed it as the closest and
    # said nothing of the message or recipient the sink refused: the one
    # the test waits for, and only the transcripts told why.
    def send(subject: str, to: list[str]) -> None:
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.send_message(make_message(subject=subject, to=to))

    send("A", ["ann@example.com"])
    smtpsink.fail("EOD", 554, "Rejected as spam", match="bob@example.com")
    smtpsink.fail("RCPT", 550, "No such user", match="cy@example.com")
    with pytest.raises(smtplib.SMTPDataError):
        send("B", ["bob@example.com"])
    send("C", ["ann@example.com", "cy@example.com"])  # cy refused, ann kept
    checks: list[Callable[[], object]] = [
        lambda: smtpsink.assert_sent(subject="B"),
        lambda: smtpsink.wait_for(rcpt_to="cy@example.com", timeout=0.01),
    ]
    for check in checks:
        with pytest.raises(AssertionError) as caught:
            check()
        text = str(caught.value)
        hint, first, second = text.split("\n")[-3:]
        assert hint == (
            "Hint: the sink refused 2 commands in this test (a refused message or "
            "recipient is not listed above):"
        ), text
        assert first.startswith("  127.0.0.1:"), text
        assert re.search(
            r" messages=0 end=quit: C: <message content: \d+ bytes> "
            r"S: 554 Rejected as spam  \[injected\]$",
            first,
        ), text
        assert second.lower().endswith(
            " messages=1 end=quit: c: rcpt to:<cy@example.com> s: 550 no such user"
            "  [injected]"
        ), text
    # Nothing refused: no such hint.
    smtpsink.clear()
    send("D", ["ann@example.com"])
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="E")
    assert "refused" not in str(caught.value)
    # Over a connection kept from before (a pooled client's): its refusals
    # since, not those before.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(make_message(subject="F", to=["cy@example.com"]))
        smtpsink.clear()
        client.send_message(make_message(subject="G", to=["ann@example.com"]))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(make_message(subject="H", to=["cy@example.com"]))
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent(subject="H")
    hint, carried = str(caught.value).split("\n")[-2:]
    assert hint.startswith("Hint: the sink refused 1 command since clear() "), hint
    assert carried.lower().endswith(
        ": c: rcpt to:<cy@example.com> s: 550 no such user  [injected]"
    ), carried


def test_the_refusal_named_is_not_that_of_the_clients_rset(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    # A sink that requires STARTTLS refuses smtplib's RSET after the MAIL
    # too (RFC 3207): "last refusal: C: rset" blamed the clean-up, not the
    # MAIL the client gave up on.
    sink = smtpsink_factory(tls="starttls-required")
    with (
        smtplib.SMTP(sink.host, sink.port) as client,
        pytest.raises(smtplib.SMTPSenderRefused),
    ):
        client.send_message(make_message(subject="Welcome"))
    assert [e.command for e in sink.sessions[0].transcript if (e.code or 0) >= 400] == [
        "MAIL",
        "RSET",
    ]
    with pytest.raises(AssertionError) as caught:
        sink.assert_sent(subject="Welcome")
    refusal = str(caught.value).rsplit("; last refusal: ", 1)[1]
    assert refusal.lower().startswith("c: mail from:<"), caught.value
    assert refusal.endswith("S: 530 Must issue a STARTTLS command first"), caught.value


def _delivered_then_cleared(smtpsink: Mailbox) -> smtplib.SMTP:
    """A connection kept open, that delivered one message before clear()."""
    client = smtplib.SMTP(smtpsink.host, smtpsink.port)
    client.sendmail("a@example.com", ["b@example.com"], b"Subject: one\r\n\r\n")
    smtpsink.wait_for(subject="one")
    smtpsink.clear()
    return client


def test_a_connection_opened_before_clear_and_refused_after_it_is_named(
    smtpsink: Mailbox,
) -> None:
    # Only connections carried over from an earlier test were looked at:
    # after clear() the hint said no client had connected.
    client = _delivered_then_cleared(smtpsink)
    smtpsink.fail("RCPT", 550)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: two\r\n\r\n")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="two")
    client.quit()
    text = str(caught.value)
    assert "Hint: 1 SMTP session sent commands since clear() but delivered" in text
    assert text.endswith("S: 550 5.1.1 Mailbox unavailable  [injected]"), text


def test_a_kept_connection_that_only_quit_did_not_try_to_send(
    smtpsink: Mailbox,
) -> None:
    # It delivered before clear() and only said QUIT after: the hint said it
    # "sent commands since clear() but delivered no message", listing EHLO
    # MAIL RCPT DATA QUIT, as if the app had failed at DATA.
    client = _delivered_then_cleared(smtpsink)
    client.quit()
    session = smtpsink.sink.sessions[-1]
    smtpsink.wait_until(lambda: session.end == "quit")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="two")
    lines = str(caught.value).splitlines()
    assert "sent commands" not in str(caught.value), caught.value
    assert lines[2].startswith(f"Hint: no client connected to {smtpsink.url}")
    assert lines[3:5] == [
        "  (1 connection kept open from before sent only QUIT, RSET or NOOP "
        "since clear():",
        f"   {session.summary()}; delivered 1 message before)",
    ]


def test_a_kept_connection_that_only_timed_out_did_not_speak(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    # The sink's own 421 came at the view's time: the connection read as one
    # that "sent commands" in it. The timeout is fired after clear(), not
    # waited for: a short one could come before clear() on a busy machine,
    # and the test would pass without testing its case.
    sink = smtpsink_factory(idle_timeout=60)
    client = smtplib.SMTP(sink.host, sink.port)
    client.ehlo("pooled.example")
    (session,) = sink.sessions
    sink.clear()
    assert session.end is None
    time_out_now(sink)
    sink.wait_until(lambda: session.end == "timeout")
    client.close()
    with pytest.raises(AssertionError) as caught:
        sink.assert_sent()
    assert "Hint: no client connected to" in str(caught.value), caught.value


def test_the_last_refusal_is_not_the_idle_timeouts_421(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    # A client refused at RCPT that then sat idle: "last refusal" named the
    # timeout's 421, which refused nothing, not the 550.
    sink = smtpsink_factory(idle_timeout=0.5)
    sink.fail("RCPT", 550)
    with loop_held(sink):  # no pause of ours lets the half-second timeout in
        client = socket.create_connection((sink.host, sink.port), 30)
        client.sendall(
            b"EHLO client.example\r\nMAIL FROM:<app@example.com>\r\n"
            b"RCPT TO:<ann@example.com>\r\n"
        )
    with client:
        sink.wait_until(lambda: sink.sessions[0].end == "timeout")
    assert [r.code for r in sink.sessions[0].replies_to("RCPT")] == [550]
    with pytest.raises(AssertionError) as caught:
        sink.assert_sent()
    refusal = str(caught.value).rsplit("; last refusal: ", 1)[1]
    assert refusal.lower().startswith("c: rcpt to:<ann@example.com> s: 550"), refusal


def test_a_tls_client_on_a_plain_sink_is_named_so(smtpsink: Mailbox) -> None:
    # smtplib.SMTP_SSL (implicit TLS) on the plain default sink: the hint
    # showed the ClientHello's bytes as the "commands" and the refusal,
    # 600 characters of \\x16\\x03... that said nothing.
    import ssl

    with pytest.raises(ssl.SSLError):
        smtplib.SMTP_SSL(smtpsink.host, smtpsink.port, timeout=10)
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    session_line = str(caught.value).rsplit("\n", 1)[1]
    assert session_line.startswith("  127.0.0.1:"), caught.value
    # The session's own end says it, as in every report (Session.tls_error).
    assert session_line.endswith(
        " end=tls-on-plain-port (the client started TLS on a plain-text port (a "
        "client that speaks TLS from the start, e.g. smtplib.SMTP_SSL, reads the "
        "plain greeting as TLS and fails with WRONG_VERSION_NUMBER: connect "
        "without TLS, e.g. smtplib.SMTP (tls='starttls' to offer STARTTLS), or "
        "give the sink tls='implicit'))"
    ), caught.value
    assert "\\x16" not in str(caught.value)


def test_a_failed_check_lets_a_session_that_said_nothing_yet_settle(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # smtplib.SMTP_SSL fails on the greeting at once, and the test's check
    # could run before the sink's thread read its ClientHello: the hint then
    # showed an open session that had said nothing, not what to do. The
    # ClientHello here goes out only once the check waits for the session.
    from pytest_smtpsink._store import Store

    waiting = threading.Event()
    wait = Store.wait

    def noted_wait(store: Store, *args: Any, **kwargs: Any) -> bool:
        waiting.set()
        return wait(store, *args, **kwargs)

    monkeypatch.setattr(Store, "wait", noted_wait)
    # The wait ends when the session speaks: a long bound costs nothing here,
    # and a busy machine may take more than the half second.
    from pytest_smtpsink import _mailbox

    monkeypatch.setattr(_mailbox, "_SETTLE", 30.0)
    client = socket.create_connection((smtpsink.host, smtpsink.port), timeout=10)
    replies = client.makefile("rb")
    assert replies.readline().startswith(b"220 ")
    smtpsink.wait_until(lambda: smtpsink.sessions)
    waiting.clear()

    def hello_then_leave() -> None:
        waiting.wait(10)
        client.sendall(b"\x16\x03\x01\x00\x2f\x01" + bytes(47))
        replies.close()
        client.close()

    thread = threading.Thread(target=hello_then_leave)
    thread.start()
    try:
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent()
    finally:
        thread.join()
    assert " end=tls-on-plain-port (the client started TLS" in str(caught.value)


def test_mail_let_go_by_the_sinks_clear_is_said_alongside_what_came_after(
    smtpsink: Mailbox,
) -> None:
    # The let-go note replaced the whole analysis, and blamed a later test.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: a\r\n\r\n")
    smtpsink.sink.clear()  # every mailbox of the sink
    smtpsink.fail("RCPT", 550, "5.1.1 no such user")
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        client.sendmail("app@example.com", ["bob@example.com"], b"Subject: b\r\n\r\n")
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    report = str(caught.value)
    assert (
        "Hint: 1 SMTP session connected in this test but delivered no message" in report
    )
    assert "S: 550 5.1.1 no such user" in report
    assert report.splitlines()[-1].startswith(
        "Hint: 1 message and 1 session that arrived in this mailbox were let go "
        "since: a later test's smtpsink was made (the sink keeps only the running "
        "test's mail), or the sink's clear() was called."
    )


def test_an_assertion_waited_for_does_not_wait_for_silent_sessions(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # assert_sent as a wait_until condition, with a client connected that
    # says nothing: each failed check waited half a second for it, and the
    # wait overran its timeout by as much.
    from pytest_smtpsink import _mailbox
    from pytest_smtpsink._store import Store

    monkeypatch.setattr(_mailbox, "_SETTLE", 30.0)
    waits: list[float] = []
    wait = Store.wait

    def noted_wait(store: Store, predicate: Any, timeout: float, *args: Any) -> bool:
        waits.append(timeout)
        return wait(store, predicate, timeout, *args)

    monkeypatch.setattr(Store, "wait", noted_wait)
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=10) as c:
        c.recv(100)  # the greeting; then nothing
        smtpsink.wait_until(lambda: smtpsink.sessions)
        waits.clear()
        with pytest.raises(AssertionError, match=r"still false after 0\.2 s"):
            smtpsink.wait_until(smtpsink.assert_sent, timeout=0.2)
    assert 30.0 not in waits


def test_a_tls_record_the_sink_read_as_lines_is_still_named(smtpsink: Mailbox) -> None:
    # The sink looks at a connection's first packet for a TLS handshake; one
    # that came apart (or, as here, one it does not take for TLS) is read as
    # lines, and the hint then lost what it said before the end reason came.
    with socket.create_connection((smtpsink.host, smtpsink.port), timeout=10) as c:
        replies = c.makefile("rb")
        replies.readline()  # the greeting
        c.sendall(b"\x16\x03\x05\x00\x2f\x01\r\n")
        replies.readline()
        replies.close()
    smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)
    assert smtpsink.sessions[-1].end == "client-closed"
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    assert str(caught.value).endswith(
        " commands=(a TLS handshake); the client began TLS at once (implicit TLS, "
        "SMTPS, smtplib.SMTP_SSL), and this sink speaks plain SMTP first: ask for "
        "one with tls='implicit', or connect without TLS (and STARTTLS on a sink "
        "with tls='starttls')"
    ), caught.value


@pytest.mark.parametrize("wanted", ["starttls", "login"])
def test_a_client_that_quit_after_ehlo_is_asked_what_it_wanted(
    smtpsink_factory: Callable[..., Mailbox], wanted: str
) -> None:
    # Production settings in a test (EMAIL_USE_TLS, a user name): the client
    # says EHLO, finds no STARTTLS or AUTH, and quits; the app logs the
    # error. The hint listed "commands=EHLO QUIT" and said no more.
    plain = smtpsink_factory()
    auth_only = smtpsink_factory(auth="any", auth_plaintext=True)
    with smtplib.SMTP(plain.host, plain.port) as client:
        wants: Callable[[], object] = (
            client.starttls if wanted == "starttls" else lambda: client.login("a", "b")
        )
        with pytest.raises(smtplib.SMTPNotSupportedError):
            wants()
    with (
        smtplib.SMTP(auth_only.host, auth_only.port) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.starttls()
    (first,), (second,) = plain.sessions, auth_only.sessions
    plain.wait_until(lambda: first.end is not None and second.end is not None)
    with pytest.raises(AssertionError) as caught:
        plain.assert_sent()
    assert str(caught.value).endswith(
        "commands=EHLO QUIT last: S: 221 Bye; the client quit after EHLO: did it "
        "want STARTTLS or AUTH, which this sink does not offer? Turn TLS and login "
        "off for tests, or ask for a sink that offers them "
        "(@pytest.mark.smtpsink(tls='starttls', auth='any'))"
    ), caught.value
    with pytest.raises(AssertionError) as caught:
        auth_only.assert_sent()
    assert "; the client quit after EHLO: did it want STARTTLS, which" in str(
        caught.value
    )


def test_a_client_that_said_only_ehlo_and_left_it_open_is_not_said_to_quit(
    smtpsink: Mailbox,
) -> None:
    # Django's open() leaves the connection open when its starttls() raises:
    # "the client quit" read against end=open. It may also be about to go
    # on: the still-open line stays.
    client = smtplib.SMTP(smtpsink.host, smtpsink.port, timeout=30)
    try:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()
        smtpsink.wait_until(lambda: smtpsink.sessions[0].commands == ["EHLO"])
        with pytest.raises(AssertionError) as caught:
            smtpsink.assert_sent()
    finally:
        client.close()
    text = str(caught.value)
    assert (
        "end=open commands=EHLO last: S: 250 HELP; the client has sent only EHLO "
        "so far: did it want STARTTLS or AUTH, which this sink does not offer?"
    ) in text
    assert "is still open: if the mail leaves in the background" in text


def test_quit_after_ehlo_on_a_tls_sink_asks_for_auth_alone(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    # The advice was tls='starttls' for a session already encrypted (an
    # SMTP_SSL client would then fail), and a STARTTLS sink without auth=
    # (EHLO, STARTTLS, EHLO, QUIT: the usual mistake) got no hint at all.
    implicit = smtpsink_factory(tls="implicit")
    with (
        smtplib.SMTP_SSL(
            implicit.host, implicit.port, context=implicit.ssl_context()
        ) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.login("ann", "pw")
    starttls = smtpsink_factory(tls="starttls")
    with smtplib.SMTP(starttls.host, starttls.port) as client:
        client.starttls(context=starttls.ssl_context())
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login("ann", "pw")
    for sink in (implicit, starttls):
        first = sink.sessions[0]
        sink.wait_until(lambda: first.end is not None)  # noqa: B023 (waited at once)
        with pytest.raises(AssertionError) as caught:
            sink.assert_sent()
        assert str(caught.value).endswith(
            "last: S: 221 Bye; the client quit after EHLO: did it want AUTH, which "
            "this sink does not offer? Turn TLS and login off for tests, or ask for "
            "a sink that offers it (auth='any', keeping its tls=)"
        ), caught.value


def test_quit_after_ehlo_names_the_tests_own_hide_rule(smtpsink: Mailbox) -> None:
    smtpsink.hide("STARTTLS", "AUTH")
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.starttls()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert str(caught.value).endswith(
        "; the client quit after EHLO, whose reply the test's hide() fault rule "
        "changed: did it want STARTTLS or AUTH?"
    ), caught.value


@pytest.mark.parametrize(
    "fault", [lambda s: s.hide("PIPELINING"), lambda s: s.delay("EHLO", 0.01)]
)
def test_a_fault_at_ehlo_that_hid_nothing_asked_for_keeps_the_advice(
    smtpsink: Mailbox, fault: Callable[[Mailbox], object]
) -> None:
    # Any fault at EHLO was called "the test's hide() fault rule", and the
    # advice (this sink offers neither) was gone.
    fault(smtpsink)
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.starttls()
    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert "hide()" not in str(caught.value)
    assert "; the client quit after EHLO: did it want STARTTLS or AUTH, which " in (
        str(caught.value)
    )


def _report_after_ehlo_and_quit(sink: Mailbox, code: int = 250) -> str:
    """What ``assert_sent`` says after a client that said EHLO (answered
    with ``code``) and quit."""
    with smtplib.SMTP(sink.host, sink.port) as client:
        assert client.ehlo()[0] == code
    sink.wait_until(lambda: sink.sessions[-1].end is not None)
    with pytest.raises(AssertionError) as caught:
        sink.assert_sent()
    return str(caught.value)


def test_a_client_that_quit_after_ehlo_on_a_starttls_sink_gets_no_guess(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    report = _report_after_ehlo_and_quit(smtpsink_factory(tls="starttls"))
    assert "commands=EHLO QUIT" in report
    assert "did it want" not in report


def test_the_quit_after_ehlo_guess_reads_the_extensions_of_a_granted_ehlo(
    smtpsink_factory: Callable[..., Mailbox],
) -> None:
    # A sink named auth.example offers no AUTH: the guess read "AUTH" in the
    # whole reply, its name included, and asked only about STARTTLS.
    named = smtpsink_factory(hostname="auth.example")
    assert "did it want STARTTLS or AUTH, which" in _report_after_ehlo_and_quit(named)
    # An EHLO refused is why the client quit: no guess about extensions.
    refused = smtpsink_factory()
    refused.fail("EHLO", 550, "Not you")
    assert _report_after_ehlo_and_quit(refused, 550).endswith(
        "last refusal: C: ehlo [127.0.0.1] S: 550 Not you  [injected]"
    )


def test_a_mailbox_assertion_points_at_mail_for_it_at_another_sink(
    smtpsink: Mailbox, smtpsink_factory: Callable[..., Mailbox]
) -> None:
    # The application sent to one sink and read from the other: the
    # mailbox said only that it was empty.
    other = smtpsink_factory(hostname="reader.test")
    with smtplib.SMTP(other.host, other.port) as client:
        client.send_message(make_message(subject="Welcome"))
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox("ann@example.com").assert_in(subject="Welcome")
    text = str(caught.value)
    assert (
        f"\nHint: 1 matching message arrived at another sink of this test, "
        f"{other.sink.url}:\n  #"
    ) in text, text
    assert "Subject: 'Welcome'" in text.split("another sink", 1)[1], text
    with pytest.raises(AssertionError) as caught:
        smtpsink.mailbox("bob@example.com").assert_in(subject="Welcome")
    assert "another sink" not in str(caught.value)


def test_mail_sent_to_the_tests_other_sink_is_pointed_at(
    smtpsink: Mailbox, smtpsink_factory: Callable[..., Mailbox]
) -> None:
    # A test with two sinks (a relay, an MX pair) whose mail went to the
    # other one: the failure says where it went, not only that none came.
    other = smtpsink_factory(hostname="other.test")
    with smtplib.SMTP(other.host, other.port) as client:
        client.send_message(make_message(subject="Wrong door"))
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Wrong door")
    text = str(caught.value)
    assert "\nNo messages arrived in this test.\n" in text, text
    # Its number, not #1: the factory's sink for these settings is shared
    # by the worker's tests, and numbers go on across them.
    (wrong,) = other.messages
    assert (
        f"\nHint: 1 matching message arrived at another sink of this test, "
        f"{other.sink.url}:\n  #{wrong.number} "
    ) in text, text
    assert "Subject: 'Wrong door'" in text.split("another sink", 1)[1], text
    # With nothing here at all, mail there that does not match is shown too.
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Other door")
    assert (
        f"\nHint: 1 message arrived at another sink of this test, "
        f"{other.sink.url}, none matching:\n  #{wrong.number} "
    ) in str(caught.value), caught.value
    # wait_for says so too; once mail arrived here, only matching mail
    # elsewhere is pointed at.
    with pytest.raises(AssertionError, match="arrived at another sink"):
        smtpsink.wait_for(subject="Wrong door", timeout=0)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.send_message(make_message(subject="Right door"))
    with pytest.raises(AssertionError) as caught:
        other.assert_sent(subject="Nowhere")
    assert "another sink" not in str(caught.value)
    with pytest.raises(AssertionError) as caught:
        other.assert_sent(subject="Right door")
    assert f"arrived at another sink of this test, {smtpsink.sink.url}:" in str(
        caught.value
    )


def test_a_hint_about_many_messages_is_given_once(smtpsink: Mailbox) -> None:
    # One per message: 25 lines that differed only in the number, past the
    # 20 messages the report lists; and personal subjects ("Welcome 7") gave
    # the same advice once per subject, eight lines that pushed out the rest.
    subjects = ["Welcome to App"] * 25 + [f"Welcome {n}" for n in range(10)]
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for subject in subjects:
            client.sendmail(
                "a@example.com", ["b@example.com"], f"Subject: {subject}\r\n\r\nhi\r\n"
            )
        client.sendmail(
            "a@example.com", ["b@example.com"], "Subject: WELCOME\r\n\r\nhi\r\n"
        )
    smtpsink.wait_for(count=36)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="Welcome")
    hints = [
        line for line in str(caught.value).splitlines() if line.startswith("Hint:")
    ]
    n = smtpsink.messages[0].number  # the sink numbers from its start
    assert hints == [
        f"Hint: subject= means equal: #{n}'s subject 'Welcome to App' only contains "
        f"it; use re.compile('Welcome') (so do #{n + 1}, #{n + 2}, ... (+32 more))",
        f"Hint: subject= is case-sensitive: #{n + 35}'s subject 'WELCOME' is the same text "
        "in another case; use re.compile('Welcome', re.IGNORECASE)",
    ]


def test_a_number_in_a_subject_is_no_message_of_a_hint(smtpsink: Mailbox) -> None:
    # A deliver() message is named by no number: the "#12" of its subject
    # was taken for its label, and two such hints became one, "(so do #13)"
    # naming no message.
    box = smtpsink.mailbox("ann@example.com")
    for number in (12, 13):
        smtpsink.deliver(
            f"Subject: Order #{number} shipped\r\n\r\nx\r\n".encode(),
            to="ann@example.com",
        )
    with pytest.raises(AssertionError) as caught:
        box.assert_in(subject="Order")
    hints = [h for h in str(caught.value).splitlines() if h.startswith("Hint:")]
    assert hints == [
        "Hint: subject= means equal: the deliver() message's subject "
        f"'Order #{number} shipped' only contains it; use re.compile('Order')"
        for number in (12, 13)
    ]


def test_a_report_gives_eight_hints_at_most(smtpsink: Mailbox) -> None:
    names = [f"X-Tag-{n}" for n in range(10)]
    headers = "".join(f"{name}: a  b\r\n" for name in names)
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], f"{headers}\r\nhi\r\n")
    smtpsink.wait_for()
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(header=dict.fromkeys(names, "a b"))
    hints = [
        line for line in str(caught.value).splitlines() if line.startswith("Hint:")
    ]
    assert len(hints) == 8
    assert hints[0].startswith("Hint: #")
    assert "'s X-Tag-0 header is 'a  b', which differs from it only in" in hints[0]
    assert hints[-1] == "Hint: ... and 3 more hints"


def test_a_header_folded_with_a_tab_gets_a_hint_with_a_pattern(
    smtpsink: Mailbox,
) -> None:
    # Unfolded, a header keeps the folding's tab: header= found no match and
    # said nothing of why; subject= said so, with no remedy.
    raw = b"Subject: a long subject\r\n\tfolded\r\nX-Long: part one\r\n\tpart two\r\n\r\nx\r\n"
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("a@example.com", ["b@example.com"], raw)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(header={"X-Long": "part one part two"})
    n = smtpsink.messages[0].number  # the sink numbers from its start
    assert (
        f"Hint: #{n}'s X-Long header is 'part one\\tpart two', which differs from it "
        "only in spaces, tabs or line breaks (a folded header keeps its tab); use "
        "re.compile('part\\\\s+one\\\\s+part\\\\s+two')"
    ) in str(caught.value)
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(subject="a long subject folded")
    assert "use re.compile('a\\\\s+long\\\\s+subject\\\\s+folded')" in str(caught.value)
    smtpsink.assert_sent(header={"X-Long": re.compile(r"part\s+one\s+part\s+two")})
