"""The Gmail and Yahoo bulk-sender rules (`Message.bulk_sender_problems`,
`Mailbox.assert_bulk_sender_rules`) on newsletters signed with dkimpy and
sent with smtplib, over STARTTLS unless the test is about TLS."""

from __future__ import annotations

import email.utils
import re
import smtplib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import dkim
import external
import pytest
from conftest import Factory, make_message

from pytest_smtpsink import Mailbox
from pytest_smtpsink._bulk import BULK_CODES, aligned, organizational_domain

SIGNED = (b"from", b"to", b"subject", b"date", b"message-id")
ONE_CLICK = (b"list-unsubscribe", b"list-unsubscribe-post")


def unsigned_newsletter(unsubscribe: str) -> bytes:
    """A one-click newsletter from news@shop.example with the unsubscribe
    URL ``unsubscribe``, as bytes to sign: for tests that sign it their own
    way."""
    message = make_message(subject="November news", sender="news@shop.example")
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain="shop.example")
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def newsletter(
    sink: Mailbox,
    *,
    sender: str = "news@shop.example",
    signing_domain: str = "shop.example",
    sign: Sequence[bytes] = SIGNED + ONE_CLICK,
    tls: bool = True,
    drop: Sequence[str] = (),
    length: Sequence[bool] = (False,),
    **headers: str,
) -> None:
    """A newsletter as a careful sender builds, signs and sends it."""
    key = sink.dkim_key(signing_domain, selector="news")
    message = make_message(subject="November news", sender=sender)
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain="shop.example")
    message["List-Unsubscribe"] = (
        "<https://shop.example/u/abc>, <mailto:u@shop.example>"
    )
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name in drop:
        del message[name]
    for name, value in headers.items():
        del message[name.replace("_", "-")]
        message[name.replace("_", "-")] = value
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    if sign:
        # One signature per item of `length` (with l= where it is True).
        raw = (
            b"".join(
                dkim.sign(
                    raw,
                    b"news",
                    signing_domain.encode(),
                    key.encode(),
                    include_headers=list(sign),
                    length=with_length,
                )
                for with_length in length
            )
            + raw
        )
    with smtplib.SMTP(sink.host, sink.port) as client:
        if tls:
            client.starttls(context=sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)


@pytest.fixture
def tls_sink(smtpsink_factory: Factory) -> Mailbox:
    return smtpsink_factory(tls="starttls")


def codes(sink: Mailbox, alignment: str = "relaxed") -> list[str]:
    return [p.code for p in sink.assert_sent().bulk_sender_problems(alignment)]  # type: ignore[arg-type]


def test_a_careful_newsletter_meets_the_rules(tls_sink: Mailbox) -> None:
    newsletter(tls_sink)
    assert tls_sink.assert_sent().bulk_sender_problems() == []
    tls_sink.assert_bulk_sender_rules(alignment="strict")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"sign": ()}, "dkim-missing"),
        ({"signing_domain": "esp.example"}, "dkim-not-aligned"),
        ({"sign": SIGNED}, "unsubscribe-not-signed"),
        ({"drop": ["List-Unsubscribe"]}, "list-unsubscribe-missing"),
        ({"List_Unsubscribe": "<mailto:u@shop.example>"}, "list-unsubscribe-no-https"),
        # Each passed: a URI in a comment, and https:// with no host.
        (
            {"List_Unsubscribe": "<mailto:u@shop.example> (<https://shop.example/u>)"},
            "list-unsubscribe-no-https",
        ),
        ({"List_Unsubscribe": "<https://>"}, "list-unsubscribe-no-https"),
        # RFC 8058 3.1: one https URI; a receiver may POST to either (passed).
        (
            {"List_Unsubscribe": "<https://shop.example/u1>, <https://evil.example/u>"},
            "list-unsubscribe-several-https",
        ),
        ({"drop": ["List-Unsubscribe-Post"]}, "one-click-missing"),
        ({"List_Unsubscribe_Post": "One-Click"}, "one-click-missing"),
        ({"drop": ["Message-ID"]}, "message-id-invalid"),
        ({"From": "a@shop.example, b@shop.example"}, "from-not-single"),
    ],
)
def test_each_rule_is_reported(tls_sink: Mailbox, change: dict, code: str) -> None:  # type: ignore[type-arg]
    newsletter(tls_sink, **change)
    assert codes(tls_sink) == [code]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # It said "0 From header(s) with 0 address(es)".
        ({"drop": ["From"]}, "no From header; DMARC needs exactly one From address"),
        (
            {"From": "a@shop.example, b@shop.example"},
            "1 From header with 2 addresses: 'a@shop.example', 'b@shop.example'; "
            "DMARC needs exactly one From address",
        ),
        # "no valid Message-ID" of a missing one and a bad one alike.
        (
            {"drop": ["Message-ID"]},
            "no Message-ID (<left@right>); Gmail rejects bulk mail without a valid one",
        ),
        (
            {"Message_ID": "not-an-id"},
            "Message-ID 'not-an-id' is not valid (<left@right>); Gmail rejects "
            "bulk mail without a valid one",
        ),
        # "(add them to h=)" of one header.
        (
            {"sign": (*SIGNED, b"list-unsubscribe")},
            "the DKIM signature of d=shop.example does not cover "
            "List-Unsubscribe-Post (add it to h=); RFC 8058 asks that a valid "
            "signature cover it",
        ),
    ],
)
def test_what_a_rule_found_is_said(
    tls_sink: Mailbox,
    change: dict,  # type: ignore[type-arg]
    message: str,
) -> None:
    newsletter(tls_sink, **change)
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert problem.message == message


@pytest.mark.parametrize(
    "value",
    [
        # RFC 2369: white space inside the brackets (a folded URI, once
        # unfolded) is ignored.
        "<https://shop.example/ u/1>",
        "(unsubscribe here) <https://shop.example/u?(a)>, <mailto:u@shop.example>",
        # A "(" in a URI opens no comment (read as one never closed, the
        # header had no URI at all).
        "<https://shop.example/u?sort=(a>",
    ],
)
def test_an_https_uri_is_found_as_rfc_2369_writes_it(
    tls_sink: Mailbox, value: str
) -> None:
    newsletter(tls_sink, List_Unsubscribe=value)
    assert codes(tls_sink) == []


def test_an_unquoted_address_as_display_name_is_said_as_such(tls_sink: Mailbox) -> None:
    # It said "1 From header(s) with 2 address(es)", which is what the parser
    # made of it, not what was written; and lint said nothing at all.
    newsletter(tls_sink, From="news@shop.example <news@shop.example>")
    message = tls_sink.assert_sent()
    [problem] = message.bulk_sender_problems()
    assert (problem.code, problem.header) == ("from-not-single", "From")
    assert problem.message == (
        "From has an address as a display name, not quoted: 'news@shop.example'; "
        "readers and DMARC verifiers take it for a second From address (write "
        '"name" <address>, or the address alone); DMARC needs exactly one From '
        "address"
    )
    assert [p.code for p in message.lint()] == ["invalid-address"]


def test_unsubscribe_headers_signed_by_another_valid_signature_pass(
    tls_sink: Mailbox,
) -> None:
    # RFC 8058 4 asks that a valid signature cover them: a mailing
    # service's own did, and the rule asked the sender's aligned one to.
    sender = tls_sink.dkim_key("shop.example", selector="news")
    service = tls_sink.dkim_key("esp.example", selector="esp")
    raw = unsigned_newsletter("https://esp.example/u/abc")
    signed = (
        dkim.sign(
            raw, b"news", b"shop.example", sender.encode(), include_headers=SIGNED
        )
        + dkim.sign(
            raw,
            b"esp",
            b"esp.example",
            service.encode(),
            include_headers=[*SIGNED, *ONE_CLICK],
        )
        + raw
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], signed)
    assert codes(tls_sink) == []


def test_several_https_unsubscribe_uris_are_a_warning_naming_them(
    tls_sink: Mailbox,
) -> None:
    newsletter(
        tls_sink,
        List_Unsubscribe="<mailto:u@shop.example>, <https://shop.example/u1>, "
        "<https://evil.example/u>",
    )
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert (problem.code, problem.severity) == (
        "list-unsubscribe-several-https",
        "warning",
    )
    assert problem.message == (
        "List-Unsubscribe has 2 https URIs (https://shop.example/u1, "
        "https://evil.example/u); RFC 8058 asks for one, and a receiver may POST "
        "the unsubscribe to any of them"
    )


def test_a_list_unsubscribe_python_encoded_says_why(tls_sink: Mailbox) -> None:
    # Python's email package RFC 2047-encodes a value longer than 78
    # characters with no space: receivers find no URI in it, and the
    # problem did not say why an https URI the code wrote was not there.
    url = "https://shop.example/unsubscribe?token=" + "a1B2" * 30
    newsletter(tls_sink, List_Unsubscribe=f"<{url}>")
    message = tls_sink.assert_sent()
    assert b"\r\nList-Unsubscribe: =?utf-8?q?=3Chttps" in message.raw
    [problem] = message.bulk_sender_problems()
    assert problem.code == "list-unsubscribe-no-https"
    assert problem.message.endswith(
        "has no <https://...> URI; one-click unsubscribe (RFC 8058) needs one "
        "(the header is RFC 2047-encoded: Python's email package encodes a "
        "value longer than 78 characters with no space in it so; write the "
        "message with policy=email.policy.SMTP.clone(max_line_length=998))"
    )
    [lint] = [p for p in message.lint() if p.header == "List-Unsubscribe"]
    assert (lint.code, lint.severity) == ("invalid-encoded-word", "error")
    assert lint.message.startswith("List-Unsubscribe is RFC 2047-encoded, '=?utf-8?q?")


@pytest.mark.parametrize(
    "written", ['"news@shop.example"', 'Team: "news@shop.example";']
)
def test_a_quoted_string_alone_as_from_has_no_domain(
    tls_sink: Mailbox, written: str
) -> None:
    # getaddresses takes the quotes off: news@shop.example, one address,
    # aligned with d=shop.example, and every rule passed (in a group too).
    newsletter(tls_sink, From=written)
    message = tls_sink.assert_sent()
    [problem] = message.bulk_sender_problems()
    assert (problem.code, problem.header) == ("from-not-single", "From")
    assert problem.message == (
        "From has a quoted string with no @domain after it: "
        "'\"news@shop.example\"', a local part alone, so readers and DMARC "
        "verifiers find no From domain (write the address unquoted, or "
        '"name" <address>); DMARC needs exactly one From address'
    )
    assert [p.code for p in message.lint()] == ["invalid-address"]
    # With its domain after the quotes, it is an address.
    newsletter(tls_sink, From='"news"@shop.example')
    assert tls_sink.messages[-1].bulk_sender_problems() == []


def test_from_addresses_run_together_are_not_one_from(tls_sink: Mailbox) -> None:
    # getaddresses reads "a b" as one address, "@shop.example": it counted
    # as the single From, and the rule passed.
    newsletter(tls_sink, From="news@shop.example ann@other.example")
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert (problem.code, problem.header) == ("from-not-single", "From")
    assert problem.message == (
        "From has addresses not separated by a comma: "
        "'news@shop.example ann@other.example'; DMARC needs exactly one From "
        "address"
    )


@pytest.mark.parametrize(
    ("written", "said"),
    [
        # A display name with an unquoted comma (Django's DEFAULT_FROM_EMAIL
        # = "Shop, Inc. <...>"): "2 addresses: 'Shop', ..." gave no reason.
        (
            "Shop, Inc. <news@shop.example>",
            "From has a display name with an unquoted ',', 'Shop, Inc.', which "
            "readers split into an address of its own and another (quote the "
            'name: "Shop, Inc." <address>)',
        ),
        (
            "Shop Ltd, Inc. <news@shop.example>",
            "From has a display name with an unquoted ',', 'Shop Ltd, Inc.', "
            "which readers split into an address of its own and another (quote "
            'the name: "Shop Ltd, Inc." <address>)',
        ),
        # A local part alone: it was a From domain 'news' that no signature
        # aligned with (dkim-not-aligned).
        (
            "news",
            "From has 'news', a local part with no @domain, so readers and DMARC "
            "verifiers find no From domain",
        ),
        # Two addresses, one of them with no domain: two, as before.
        (
            "news@shop.example, ann",
            "1 From header with 2 addresses: 'news@shop.example', 'ann'",
        ),
    ],
)
def test_a_from_word_with_no_domain_is_said_why_it_is_no_single_from(
    tls_sink: Mailbox, written: str, said: str
) -> None:
    newsletter(tls_sink, From=written)
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert (problem.code, problem.header) == ("from-not-single", "From")
    assert problem.message == f"{said}; DMARC needs exactly one From address"


def test_a_comma_in_a_from_comment_is_no_unquoted_name(tls_sink: Mailbox) -> None:
    # One address whose comment has a comma: it was said to be a display
    # name with an unquoted comma.
    newsletter(tls_sink, From="Shop (Europe, UK) <news@shop.example>")
    assert tls_sink.assert_sent().bulk_sender_problems() == []


def test_a_body_length_signature_is_a_warning_not_a_pass(tls_sink: Mailbox) -> None:
    # l= meets the rules to the letter, and bulk_sender_problems() said
    # nothing of the warning DkimResult carries.
    newsletter(tls_sink, length=(True,))
    message = tls_sink.assert_sent()
    [result] = message.dkim
    [problem] = message.bulk_sender_problems()
    assert (problem.code, problem.severity, problem.header) == (
        "dkim-body-length",
        "warning",
        "DKIM-Signature",
    )
    assert problem.message == (
        f"the DKIM signature of d=shop.example s=news verifies, but "
        f"{result.warnings[0]}"
    )
    assert result.warnings[0].startswith("l=")
    with pytest.raises(AssertionError, match="warning dkim-body-length"):
        tls_sink.assert_bulk_sender_rules()
    tls_sink.assert_bulk_sender_rules(ignore=["dkim-body-length"])


def test_a_signature_with_l_beside_one_without_it_is_still_a_warning(
    tls_sink: Mailbox,
) -> None:
    # It passed: but a receiver needs one aligned signature that verifies,
    # so text added after the l= one's length passes by it while the other
    # fails (RFC 6376 8.2), whichever the sink had picked.
    newsletter(tls_sink, length=(True, False))
    assert [bool(r.warnings) for r in tls_sink.assert_sent().dkim] == [True, False]
    assert codes(tls_sink) == ["dkim-body-length"]
    newsletter(tls_sink, length=(False, True))
    assert codes(tls_sink) == ["dkim-body-length"]


def test_mail_sent_without_tls_fails_the_tls_rule(smtpsink: Mailbox) -> None:
    newsletter(smtpsink, tls=False)
    [problem] = smtpsink.assert_sent().bulk_sender_problems()
    assert str(problem) == (
        "error no-tls: the message was sent without TLS; Gmail and Yahoo require "
        "TLS from bulk senders (test with a sink that has tls='starttls')"
    )


def test_mail_sent_after_helo_says_helo_is_offered_no_starttls(
    tls_sink: Mailbox,
) -> None:
    newsletter(tls_sink, tls=False)
    raw = tls_sink.assert_sent().raw
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.helo()  # no extension list, so no STARTTLS (RFC 5321 4.1.1.1)
        client.sendmail("news@shop.example", ["ann@example.com"], raw)
    [problem] = tls_sink.messages[-1].bulk_sender_problems()
    assert problem.message.endswith(
        "(the client greeted with HELO, which is offered no STARTTLS: have it "
        "send EHLO and call starttls(), on a sink that has tls='starttls')"
    )


def test_mail_sent_without_the_starttls_offered_says_the_client_did_not_use_it(
    tls_sink: Mailbox,
) -> None:
    # It said to test with a sink that has tls='starttls', which this has.
    newsletter(tls_sink, tls=False)
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert str(problem) == (
        "error no-tls: the message was sent without TLS; Gmail and Yahoo require "
        "TLS from bulk senders (the sink offered STARTTLS and the client did not "
        "use it: have it call starttls() before sending)"
    )


def test_a_signature_that_fails_says_why(tls_sink: Mailbox) -> None:
    newsletter(tls_sink)
    message = tls_sink.assert_sent()
    tls_sink.dkim_key("shop.example", selector="news")  # the key rotated since
    [problem] = message.bulk_sender_problems()
    assert problem.code == "dkim-failed"
    assert problem.message == (
        "no DKIM signature verifies: d=shop.example s=news: signed with an "
        "earlier key for news._domainkey.shop.example, which a later dkim_key() "
        "call replaced"
    )


def test_relaxed_and_strict_alignment(tls_sink: Mailbox) -> None:
    newsletter(tls_sink, sender="news@mail.shop.example", signing_domain="shop.example")
    assert codes(tls_sink, "relaxed") == []
    assert codes(tls_sink, "strict") == ["dkim-not-aligned"]
    with pytest.raises(ValueError, match="alignment must be 'relaxed' or 'strict'"):
        tls_sink.assert_bulk_sender_rules(alignment="loose")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        ("shop.example", "shop.example"),
        ("a.b.shop.example", "shop.example"),
        ("mail.shop.co.uk", "shop.co.uk"),
        ("alice.me.uk", "alice.me.uk"),  # not me.uk: mallory.me.uk aligned
        ("mail.shop.ltd.uk", "shop.ltd.uk"),
        ("news.me.de", "me.de"),  # the UK's labels, under .uk only
        ("Shop.Example.", "shop.example"),
    ],
)
def test_organizational_domain(domain: str, organizational: str) -> None:
    assert organizational_domain(domain) == organizational


def test_aligned() -> None:
    assert aligned("shop.example", "news.shop.example", "relaxed")
    assert not aligned("shop.example", "news.shop.example", "strict")
    assert not aligned("other.example", "shop.example", "relaxed")


def test_the_assertion_lists_each_message_and_its_problems(
    smtpsink: Mailbox,
) -> None:
    newsletter(smtpsink, tls=False, drop=["List-Unsubscribe-Post"])
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_bulk_sender_rules()
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "expected mail that meets the bulk-sender rules (relaxed DKIM alignment); "
        "1 of 1 message has problems:"
    )
    assert "Subject: 'November news'" in lines[1]
    assert lines[2].startswith(
        "    error one-click-missing (header List-Unsubscribe-Post): "
        "List-Unsubscribe-Post must be exactly 'List-Unsubscribe=One-Click'"
    )
    assert lines[3].startswith("    error no-tls: the message was sent without TLS")
    smtpsink.assert_bulk_sender_rules(ignore=["no-tls", "one-click-missing"])


def test_a_key_under_1024_bits_is_named(tls_sink: Mailbox) -> None:
    # cryptography refuses to make such a key; openssl still can.
    openssl = external.require("openssl", "apt-get install openssl")
    small = subprocess.run(
        [openssl, "genrsa", "-traditional", "512"],
        capture_output=True,
        check=True,
    ).stdout
    tls_sink.dkim_key("shop.example", selector="news", private_key=small)
    message = make_message(sender="news@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    raw = dkim.sign(raw, b"news", b"shop.example", small) + raw
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)
    message_seen = tls_sink.assert_sent()
    [result] = message_seen.dkim
    assert (result.verified, result.key_bits) == (False, 512)
    assert result.reason == (
        "public key too small: the key at news._domainkey.shop.example has 512 "
        "bits, and verifiers require at least 1024 (RFC 8301)"
    )
    (too_small,) = [
        p for p in message_seen.bulk_sender_problems() if p.code == "dkim-key-too-small"
    ]
    assert too_small.message == (
        "the DKIM key of d=shop.example s=news is shorter than 1024 bits (512)"
    )


def test_the_ignore_list_is_checked(smtpsink: Mailbox) -> None:
    with pytest.raises(
        ValueError,
        match=r"'no_tls' is not a bulk-sender rule code \(did you mean 'no-tls'\?\)",
    ):
        smtpsink.assert_bulk_sender_rules(ignore=["no_tls"])
    # Each check's codes are its own: a code of the other one says so.
    with pytest.raises(
        ValueError,
        match=r"^ignore: 'missing-date' is not a bulk-sender rule code \(it is a "
        r"lint code: assert_clean\(ignore=\.\.\.\)\); the codes are listed",
    ):
        smtpsink.assert_bulk_sender_rules(ignore=["missing-date"])
    with pytest.raises(
        ValueError,
        match=r"^ignore: 'dkim-missing' is not a lint code \(it is a bulk-sender "
        r"rule code: assert_bulk_sender_rules\(ignore=\.\.\.\)\); the codes",
    ):
        smtpsink.assert_clean(ignore=["dkim-missing"])
    newsletter(smtpsink, tls=False)
    smtpsink.assert_bulk_sender_rules(ignore="no-tls")  # one code, as a string


def test_the_assertion_fails_when_no_mail_arrived(smtpsink: Mailbox) -> None:
    # It passed: an application that sent nothing met the rules.
    with pytest.raises(AssertionError) as failure:
        smtpsink.assert_bulk_sender_rules()
    lines = str(failure.value).splitlines()
    assert lines[0] == "expected mail to check, none arrived in this test"
    assert lines[1].startswith(f"Hint: no client connected to {smtpsink.url}")


def test_the_codes_are_the_documented_ones_and_the_checked_ones() -> None:
    root = Path(__file__).parents[1]
    page = (root / "docs" / "deliverability.rst").read_text()
    section = page[page.index("Since February 2024") : page.index("SPF, the DMARC")]
    documented = set(re.findall(r"``([a-z]+(?:-[a-z0-9]+)+)``", section))
    assert documented == BULK_CODES
    source = (root / "pytest_smtpsink" / "_bulk.py").read_text()
    made = set(re.findall(r'Problem\(\s*"([a-z0-9-]+)"', source))
    assert made == BULK_CODES


def test_a_from_no_parser_can_read_is_a_problem_not_an_exception(
    tls_sink: Mailbox,
) -> None:
    # 600 nested comments, folded to keep lines short: the stdlib's address
    # parser recurses once per level.
    raw = (
        b"From: " + b"(" * 600 + b"\r\n " + b")" * 600 + b" news@shop.example\r\n"
        b"To: ann@example.com\r\nSubject: November news\r\n"
        b"Message-ID: <1@shop.example>\r\n\r\nHi.\r\n"
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)
    problems = tls_sink.assert_sent().bulk_sender_problems()
    assert [p.code for p in problems] == [
        "from-not-single",
        "dkim-missing",
        "list-unsubscribe-missing",
    ]
    assert "comments nested too deeply" in problems[0].message


def test_a_message_id_with_a_comment_is_valid(tls_sink: Mailbox) -> None:
    # RFC 5322 3.6.4 allows comments around the <left@right>.
    newsletter(tls_sink, Message_ID="<1@shop.example> (added by the mailer)")
    assert codes(tls_sink) == []


def test_an_international_from_domain_aligns_with_its_a_label(
    tls_sink: Mailbox,
) -> None:
    # RFC 8616: with SMTPUTF8 the From domain may be a U-label while d=
    # is its A-label; DMARC compares them as A-labels.
    key = tls_sink.dkim_key("xn--bcher-kva.example", selector="news")
    raw = (
        "From: news@bücher.example\r\nTo: ann@example.com\r\n"
        "Subject: November news\r\nMessage-ID: <1@xn--bcher-kva.example>\r\n"
        "List-Unsubscribe: <https://xn--bcher-kva.example/u/abc>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nHi.\r\n"
    ).encode()
    raw = (
        dkim.sign(
            raw,
            b"news",
            b"xn--bcher-kva.example",
            key.encode(),
            include_headers=list(SIGNED + ONE_CLICK),
        )
        + raw
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail(
            "bounces@xn--bcher-kva.example",
            ["ann@example.com"],
            raw,
            mail_options=["SMTPUTF8"],
        )
    assert codes(tls_sink, "strict") == []


def test_any_aligned_signature_may_cover_the_unsubscribe_headers(
    tls_sink: Mailbox,
) -> None:
    # Two aligned signatures (a mailing service's and the shop's own): only
    # the first was looked at, which need not be the one covering them.
    covering = tls_sink.dkim_key("shop.example", selector="news")
    other = tls_sink.dkim_key("shop.example", selector="ops")
    raw = unsigned_newsletter("https://shop.example/u/abc")
    signed = dkim.sign(
        raw,
        b"news",
        b"shop.example",
        covering.encode(),
        include_headers=[*SIGNED, *ONE_CLICK],
    )
    raw = signed + raw
    raw = (
        dkim.sign(
            raw, b"ops", b"shop.example", other.encode(), include_headers=list(SIGNED)
        )
        + raw
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)
    message_seen = tls_sink.assert_sent()
    assert [r.selector for r in message_seen.dkim] == ["ops", "news"]
    assert codes(tls_sink) == []


def test_not_aligned_says_why_the_senders_own_signature_failed(
    tls_sink: Mailbox,
) -> None:
    # The shop signs, a mailing service changes the body and signs it as
    # its own: the service's signature verifies, the shop's does not, and
    # the problem must say so (not read as if the shop never signed).
    own = tls_sink.dkim_key("shop.example", selector="news")
    service = tls_sink.dkim_key("esp.example", selector="e1")
    raw = unsigned_newsletter("https://shop.example/u/abc")
    headers = [*SIGNED, *ONE_CLICK]
    signed = dkim.sign(
        raw, b"news", b"shop.example", own.encode(), include_headers=headers
    )
    changed = signed + raw + b"Sent by the mailing service\r\n"
    raw = (
        dkim.sign(
            changed, b"e1", b"esp.example", service.encode(), include_headers=headers
        )
        + changed
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)
    [problem] = tls_sink.assert_sent().bulk_sender_problems()
    assert problem.code == "dkim-not-aligned"
    assert problem.message.startswith(
        "no verified DKIM signature is aligned (relaxed) with the From domain "
        "shop.example: signed by d=esp.example; d=shop.example s=news is aligned "
        "but failed: the body changed after signing (body hash mismatch"
    )
    # Gmail's and Yahoo's rule is DMARC's, which an aligned SPF domain passes
    # too: the envelope sender's is said when it aligns.
    spf = (
        "; DMARC passes on an aligned SPF domain too, which a captured message "
        "cannot show"
    )
    assert problem.message.endswith(
        f"{spf}: the envelope sender's domain shop.example aligns, so if its SPF "
        "record lists the sending servers, Gmail and Yahoo accept the message "
        "(ignore='dkim-not-aligned' then)"
    )
    with smtplib.SMTP(tls_sink.host, tls_sink.port) as client:
        client.starttls(context=tls_sink.ssl_context())
        client.sendmail("bounces@esp.example", ["ann@example.com"], raw)
    [problem] = tls_sink.messages[-1].bulk_sender_problems()
    assert problem.message.endswith(spf)


def test_delivered_mail_is_not_judged_for_tls(smtpsink: Mailbox) -> None:
    # deliver() (an .eml of the newsletter, checked without sending it) has
    # no SMTP hop: "sent without TLS" was a problem no change could fix.
    key = smtpsink.dkim_key("shop.example", selector="news")
    raw = unsigned_newsletter("https://shop.example/u/abc")
    signed = (
        dkim.sign(
            raw,
            b"news",
            b"shop.example",
            key.encode(),
            include_headers=[*SIGNED, *ONE_CLICK],
        )
        + raw
    )
    delivered = smtpsink.deliver(signed, to="ann@example.com")
    assert delivered.bulk_sender_problems() == []
    # Sent over SMTP without TLS, the same bytes fail the rule.
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("bounces@shop.example", ["ann@example.com"], signed)
    assert codes(smtpsink) == ["no-tls"]


def _signed_newsletter(
    sink: Mailbox, sign: Sequence[bytes], *, above: bytes = b"", extra: bytes = b""
) -> None:
    """The newsletter with ``extra`` header lines (before signing) and
    ``above`` (added on top after signing, as a later hop could)."""
    key = sink.dkim_key("shop.example", selector="news")
    raw = (
        b"From: news@shop.example\r\nTo: ann@example.com\r\n"
        b"Subject: November news\r\nMessage-ID: <1@shop.example>\r\n"
        + extra
        + b"List-Unsubscribe: <https://shop.example/u/abc>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nHi.\r\n"
    )
    raw = (
        above
        + dkim.sign(
            raw, b"news", b"shop.example", key.encode(), include_headers=list(sign)
        )
        + raw
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=sink.ssl_context())
        client.sendmail("bounces@shop.example", ["ann@example.com"], raw)


def test_an_unsigned_list_unsubscribe_above_the_signed_one_is_not_signed(
    tls_sink: Mailbox,
) -> None:
    # h= names List-Unsubscribe once: the signature covers the bottom-most
    # one (RFC 6376 5.4.2), and the one above it, which readers take, is
    # anyone's. It passed: the name was in h=.
    _signed_newsletter(
        tls_sink,
        SIGNED + ONE_CLICK,
        above=b"List-Unsubscribe: <https://evil.example/u>\r\n",
    )
    message = tls_sink.assert_sent()
    assert [r.verified for r in message.dkim] == [True]
    problems = message.bulk_sender_problems()
    assert [p.code for p in problems] == [
        "list-unsubscribe-duplicate",
        "unsubscribe-not-signed",
    ]
    assert problems[0].message == (
        "2 List-Unsubscribe headers; RFC 8058 has one-click unsubscribe use "
        "exactly one, and receivers may take either"
    )
    assert problems[1].header == "List-Unsubscribe"
    assert problems[1].message == (
        "the DKIM signature of d=shop.example covers 1 of the 2 List-Unsubscribe "
        "headers, and a signature covers them from the bottom up (RFC 6376 "
        "5.4.2): the top one, which is read, is not signed; RFC 8058 asks that "
        "a valid signature cover it"
    )


def test_two_list_unsubscribe_post_headers_are_a_problem_even_when_signed(
    tls_sink: Mailbox,
) -> None:
    # Both instances named in h=: signed, but still two where RFC 8058 has one.
    _signed_newsletter(
        tls_sink,
        (*SIGNED, *ONE_CLICK, b"list-unsubscribe-post"),
        extra=b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    )
    problems = tls_sink.assert_sent().bulk_sender_problems()
    assert [(p.code, p.header) for p in problems] == [
        ("list-unsubscribe-duplicate", "List-Unsubscribe-Post")
    ]
