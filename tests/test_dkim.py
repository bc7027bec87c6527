"""DKIM verification (`Message.dkim`) with test keys (`Mailbox.dkim_key`):
an application signs with dkimpy, sends with smtplib, the test verifies."""

from __future__ import annotations

import base64
import os
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Sequence

import dkim
import pytest
from conftest import make_message
from cryptography.hazmat.primitives import serialization

from pytest_smtpsink import DkimResult, Mailbox


def send_signed(
    sink: Mailbox,
    private_key: str,
    *,
    domain: str = "shop.example",
    selector: str = "s1",
    after_signing: bytes = b"",
    length: bool = False,
    **headers: str,
) -> None:
    """What a signing application does: build, sign, send the signed bytes."""
    message = make_message(sender=f"noreply@{domain}", **headers)
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(
        raw, selector.encode(), domain.encode(), private_key.encode(), length=length
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail(
            f"noreply@{domain}", ["ann@example.com"], signature + raw + after_signing
        )


def test_a_signature_made_with_the_published_key_verifies(smtpsink: Mailbox) -> None:
    key = smtpsink.dkim_key("shop.example", selector="s1")
    assert key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    send_signed(smtpsink, key)
    [result] = smtpsink.assert_sent().dkim
    assert result == DkimResult(
        domain="shop.example",
        selector="s1",
        verified=True,
        reason=None,
        algorithm="rsa-sha256",
        key_bits=2048,
        signed_headers=result.signed_headers,
    )
    assert {"from", "to", "subject"} <= set(result.signed_headers)
    assert str(result) == "DKIM d=shop.example s=s1: verified"


def test_past_ten_signatures_the_rest_are_not_verified(smtpsink: Mailbox) -> None:
    # Each was verified on a parse of the whole header: 2,000 took 12 s.
    key = smtpsink.dkim_key("shop.example", selector="s1")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(raw, b"s1", b"shop.example", key.encode())
    junk = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=other%d.example; s=x; h=from; bh=; b=\r\n"
        % n
        for n in range(3000)
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example", ["ann@example.com"], signature + junk + raw
        )
    results = smtpsink.assert_sent().dkim
    assert len(results) == 3001
    assert results[0].verified
    assert [r.domain for r in results[1:3]] == ["other0.example", "other1.example"]
    assert results[10].reason == (
        "not verified: only a message's first 10 DKIM signatures are (it has "
        "3001; RFC 6376 6.1 lets a verifier stop, and receivers do)"
    )
    assert results[-1].domain == "other2999.example"


def test_a_body_changed_after_signing_fails_with_the_reason(
    smtpsink: Mailbox,
) -> None:
    key = smtpsink.dkim_key("shop.example", selector="footer")
    # A mail library that appends a footer after the app signed.
    send_signed(smtpsink, key, selector="footer", after_signing=b"--\r\nSent by X\r\n")
    [result] = smtpsink.assert_sent().dkim
    assert not result.verified
    assert result.reason is not None
    assert result.reason.startswith("the body changed after signing")


def test_a_body_length_limit_verifies_with_a_warning(smtpsink: Mailbox) -> None:
    # l= signs a length, not the body: what is appended after it verified
    # as if signed (RFC 6376 8.2), and the result said nothing.
    key = smtpsink.dkim_key("shop.example")
    appended = b"Urgent: pay the new account https://evil.example/\r\n"
    send_signed(smtpsink, key, length=True, text="Your invoice is attached.\n")
    send_signed(
        smtpsink,
        key,
        length=True,
        text="Your invoice is attached.\n",
        after_signing=appended,
    )
    plain, extended = (message.dkim[0] for message in smtpsink.messages)
    # What dkimpy says of l=: both verify.
    assert plain.verified
    assert extended.verified
    signed = int(re.findall(rb"\bl=(\d+)", smtpsink.messages[0].raw)[0])
    assert plain.warnings == (
        f"l={signed} signs the body's length, not the whole body: text appended "
        "later would still verify (RFC 6376 8.2); sign without l=",
    )
    assert extended.warnings == (
        f"l={signed} signs only the first {signed} bytes of the body: the "
        f"{len(appended)} bytes after them are not signed, and anyone on the way "
        "could have added them (RFC 6376 8.2); sign without l=",
    )
    assert str(extended) == (
        f"DKIM d=shop.example s=s1: verified, but {extended.warnings[0]}"
    )
    # Without l=, nothing to warn of.
    send_signed(smtpsink, key)
    assert smtpsink.messages[-1].dkim[0].warnings == ()


def test_a_key_that_is_not_published_fails_saying_how_to_publish_it(
    smtpsink: Mailbox,
) -> None:
    key = smtpsink.dkim_key("shop.example", selector="published")
    send_signed(smtpsink, key, selector="unpublished")
    [result] = smtpsink.assert_sent().dkim
    assert not result.verified
    assert result.reason == (
        "no key published for unpublished._domainkey.shop.example: publish one "
        "with smtpsink.dkim_key('shop.example', selector='unpublished')"
    )


def signed_news(sink: Mailbox, signed: list[bytes]) -> tuple[bytes, bytes]:
    """A newsletter of shop.example and its DKIM-Signature header (s1,
    over the headers named ``signed``), its key published."""
    key = sink.dkim_key("shop.example", selector="s1")
    message = make_message(sender="news@shop.example", subject="News")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    return raw, dkim.sign(
        raw, b"s1", b"shop.example", key.encode(), include_headers=signed
    )


def send_news(sink: Mailbox, data: bytes) -> None:
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("news@shop.example", ["ann@example.com"], data)


def test_a_signature_leaving_out_what_readers_see_has_a_warning(
    smtpsink: Mailbox,
) -> None:
    # h=from alone verified with no warning after the subject was
    # rewritten on the way: weaker than it looked (RFC 6376 5.4.1).
    raw, signature = signed_news(smtpsink, [b"from"])
    rewritten = raw.replace(b"Subject: News", b"Subject: Your account is locked")
    send_news(smtpsink, signature + rewritten)
    [result] = smtpsink.assert_sent().dkim
    assert (result.verified, result.signed_headers) == (True, ("from",))
    assert result.warnings == (
        "it does not sign Subject and To, which the message has: anyone on the "
        "way could change them and it would still verify (RFC 6376 5.4.1 "
        "recommends signing them); add them to h=",
    )
    # Not the bulk-sender rule about l=, which judges the body's length.
    assert "dkim-body-length" not in [
        p.code for p in smtpsink.assert_sent().bulk_sender_problems()
    ]


def test_a_multipart_signature_without_content_type_has_a_warning(
    smtpsink: Mailbox,
) -> None:
    # multipart/alternative rewritten as multipart/mixed verified with no
    # warning: readers then showed the text and the HTML one after another.
    key = smtpsink.dkim_key("shop.example", selector="s1")
    message = make_message(sender="news@shop.example", subject="News")
    message.add_alternative("<p>News</p>", subtype="html")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    shown = [b"from", b"to", b"subject", b"date"]
    for signed, warned in ((shown, True), ([*shown, b"content-type"], False)):
        signature = dkim.sign(
            raw, b"s1", b"shop.example", key.encode(), include_headers=signed
        )
        rewritten = raw.replace(b"multipart/alternative", b"multipart/mixed", 1)
        send_news(smtpsink, signature + (rewritten if warned else raw))
        result = smtpsink.messages[-1].dkim[0]
        assert result.verified
        warning = (
            "it does not sign Content-Type, which the message has (multipart): "
            "anyone on the way could change how its parts are shown (alternative "
            "made mixed, another boundary) and it would still verify; add "
            "content-type to h="
        )
        assert (warning in result.warnings) is warned, result.warnings


def test_a_shown_header_added_above_the_signed_one_has_a_warning(
    smtpsink: Mailbox,
) -> None:
    # A signature covers instances from the bottom up (RFC 6376 5.4.2): a
    # Subject added above the signed one verified with no warning, and it
    # is the one readers show.
    added = b"Subject: Your account is locked\r\n"
    raw, signature = signed_news(smtpsink, [b"from", b"subject", b"to", b"date"])
    send_news(smtpsink, added + signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert result.verified
    assert result.warnings == (
        "it signs 1 of the 2 Subject headers the message has, from the bottom "
        "up (RFC 6376 5.4.2): the top one, which readers show, is not signed, "
        "and anyone on the way could have added it; name Subject in h= once "
        "more than the message has it (RFC 6376 8.15)",
    )
    # Signed once more than the message has it (over-signing), the added
    # Subject does not verify.
    raw, oversigned = signed_news(
        smtpsink, [b"from", b"subject", b"subject", b"to", b"date"]
    )
    send_news(smtpsink, oversigned + raw)  # unchanged, it verifies
    send_news(smtpsink, added + oversigned + raw)
    assert [m.dkim[0].verified for m in smtpsink.messages[-2:]] == [True, False]


def test_a_key_an_earlier_test_published_is_named_as_such(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys last for the run: an earlier test's key for a common selector
    # made this test's failure read "a signed header changed after signing".
    this_test = os.environ["PYTEST_CURRENT_TEST"]
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_a.py::test_earlier (call)")
    smtpsink.dkim_key("shop.example", selector="shared")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", this_test)
    apps_key = smtpsink.dkim_key("elsewhere.example", selector="maker")
    send_signed(smtpsink, apps_key, selector="shared")
    [result] = smtpsink.assert_sent().dkim
    assert result.reason == (
        "the signature does not verify with the key published for "
        "shared._domainkey.shop.example during tests/test_a.py::test_earlier, an "
        "earlier test (the body is unchanged): keys last for the run (a session "
        "fixture's too), so publish the key it was signed with in this test "
        "(dkim_key(..., private_key=pem)), or a signed header changed after "
        "signing"
    )
    # Published in this test, a key that does not verify is said as before.
    smtpsink.dkim_key("shop.example", selector="shared")
    [result] = smtpsink.assert_sent().dkim
    assert result.reason is not None
    assert result.reason.startswith(
        "the signature does not verify with the key published for "
        "shared._domainkey.shop.example (the body is unchanged)"
    )


def test_a_key_only_in_the_dns_stub_is_named_as_such(smtpsink: Mailbox) -> None:
    # The reason said "no key published" of a record the test had just
    # put in the stub, for the application's own lookups.
    key = smtpsink.dkim_key("elsewhere.example", selector="maker")
    smtpsink.dns.txt("stubonly._domainkey.shop.example", "v=DKIM1; k=rsa; p=...")
    send_signed(smtpsink, key, selector="stubonly")
    [result] = smtpsink.assert_sent().dkim
    assert result.reason == (
        "no key published for stubonly._domainkey.shop.example by dkim_key(): "
        "a TXT record put there with smtpsink.dns.txt() is for the application "
        "under test, not Message.dkim; give its private key with "
        "smtpsink.dkim_key('shop.example', selector='stubonly', private_key=pem)"
    )
    smtpsink.dkim_key("shop.example", selector="stubonly", private_key=key)
    [result] = smtpsink.assert_sent().dkim
    assert result.verified


def test_a_revoked_key_in_the_dns_stub_is_named_as_such(smtpsink: Mailbox) -> None:
    # An empty p= revokes the key (RFC 6376 3.6.1): the reason advised
    # publishing the key, which made the signature verify where a receiver
    # fails it.
    key = smtpsink.dkim_key("elsewhere.example", selector="maker")
    smtpsink.dns.txt("rev._domainkey.shop.example", "v=DKIM1; k=rsa; p=")
    send_signed(smtpsink, key, selector="rev")
    [result] = smtpsink.assert_sent().dkim
    assert (result.verified, result.reason) == (
        False,
        "the key at rev._domainkey.shop.example is revoked: the TXT record put "
        "there with smtpsink.dns.txt() has an empty p= (RFC 6376 3.6.1), so "
        "receivers fail the signature, as this does",
    )


def test_a_stub_record_of_an_earlier_test_is_not_named(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stub's records go with their test: the reason named a record
    # another test had put there, long gone.
    this_test = os.environ["PYTEST_CURRENT_TEST"]
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_a.py::test_earlier (call)")
    smtpsink.dns.txt("gone._domainkey.shop.example", "v=DKIM1; k=rsa; p=...")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", this_test)
    key = smtpsink.dkim_key("elsewhere.example", selector="maker")
    send_signed(smtpsink, key, selector="gone")
    [result] = smtpsink.assert_sent().dkim
    assert result.reason == (
        "no key published for gone._domainkey.shop.example: publish one with "
        "smtpsink.dkim_key('shop.example', selector='gone')"
    )


def test_a_different_key_fails_and_the_app_own_key_can_be_published(
    smtpsink: Mailbox,
) -> None:
    apps_key = smtpsink.dkim_key("shop.example", selector="own")
    smtpsink.dkim_key("shop.example", selector="own")  # replaced by another key
    send_signed(smtpsink, apps_key, selector="own")
    [result] = smtpsink.assert_sent().dkim
    assert not result.verified
    assert result.reason == (
        "signed with an earlier key for own._domainkey.shop.example, which a "
        "later dkim_key() call replaced"
    )
    # The application's existing key, published as its zone would.
    assert smtpsink.dkim_key("shop.example", "own", private_key=apps_key) == apps_key
    assert smtpsink.assert_sent().dkim[0].verified


def test_a_header_changed_or_another_key_is_said_honestly(smtpsink: Mailbox) -> None:
    # dkimpy cannot tell these apart: both are a signature over the headers
    # that does not verify with the published key, the body hash matching.
    key = smtpsink.dkim_key("shop.example", selector="hdr")
    message = make_message(sender="noreply@shop.example", subject="Original")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signed = dkim.sign(raw, b"hdr", b"shop.example", key.encode()) + raw
    others = smtpsink.dkim_key("other.example")  # never published for hdr
    by_another = dkim.sign(raw, b"hdr", b"shop.example", others.encode()) + raw
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        for sent in (
            signed.replace(b"Subject: Original", b"Subject: Changed"),
            by_another,
        ):
            client.sendmail("noreply@shop.example", ["ann@example.com"], sent)
    expected = (
        "the signature does not verify with the key published for "
        "hdr._domainkey.shop.example (the body is unchanged): a signed header "
        "changed after signing, or another key signed it"
    )
    assert [m.dkim[0].reason for m in smtpsink.messages] == [expected, expected]


def test_with_l_a_changed_header_does_not_claim_the_whole_body_unchanged(
    smtpsink: Mailbox,
) -> None:
    # The reason said "(the body is unchanged)" of a body with text appended
    # after the l= bytes.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example", subject="Original")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signed = dkim.sign(raw, b"s1", b"shop.example", key.encode(), length=True) + raw
    tampered = signed.replace(b"Subject: Original", b"Subject: Changed")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example", ["ann@example.com"], tampered + b"Pay here.\r\n"
        )
    assert smtpsink.assert_sent().dkim[0].reason == (
        "the signature does not verify with the key published for "
        "s1._domainkey.shop.example (the body's first l= bytes are unchanged; any "
        "after them are not signed): a signed header changed after signing, or "
        "another key signed it"
    )


@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        (b"v=1; ", b"", "the v= tag is missing (RFC 6376 3.5 requires it)"),
        (
            b"v=1; ",
            b"v=1; x=1000; ",
            "x=1000: the signature expired at 1970-01-01 00:16:40 UTC (RFC 6376 3.5)",
        ),
        (
            b"c=relaxed/simple",
            b"c=foo/bar",
            "the DKIM-Signature header is malformed (invalid c= value: foo)",
        ),
        (b"v=1; ", b"v=2; ", "v= value is not 1 (2)"),
        # Python's own error for int(b""): "invalid literal for int() ...".
        (
            b"v=1; ",
            b"v=1; l=; ",
            "a tag that takes a number (l=, t= or x=) is empty or not a number "
            "(RFC 6376 3.5)",
        ),
    ],
)
def test_dkimpy_reasons_show_tag_values_as_text(
    smtpsink: Mailbox, before: bytes, after: bytes, reason: str
) -> None:
    # They read "missing b'v'=", "x= value is past (b'1000')".
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signed = dkim.sign(raw, b"s1", b"shop.example", key.encode()) + raw
    assert before in signed
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example",
            ["ann@example.com"],
            signed.replace(before, after, 1),
        )
    [result] = smtpsink.assert_sent().dkim
    assert (result.verified, result.reason) == (False, reason)


def test_one_result_per_signature_and_none_without(smtpsink: Mailbox) -> None:
    key = smtpsink.dkim_key("shop.example", selector="a")
    send_signed(smtpsink, key, selector="a")
    message = smtpsink.assert_sent()
    resigned = dkim.sign(message.raw, b"b", b"shop.example", key.encode())
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example", ["ann@example.com"], resigned + message.raw
        )
        client.sendmail(
            "noreply@shop.example", ["ann@example.com"], b"Subject: x\r\n\r\nx\r\n"
        )
    twice, unsigned = smtpsink.messages[1:]
    assert [(r.selector, r.verified) for r in twice.dkim] == [("b", False), ("a", True)]
    assert unsigned.dkim == ()


@pytest.mark.parametrize(
    "header",
    [b"DKIM-Signature: garbage", b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example"],
)
def test_a_malformed_signature_is_a_failed_result_not_an_exception(
    smtpsink: Mailbox, header: bytes
) -> None:
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "a@x.example", ["b@x.example"], header + b"\r\nSubject: x\r\n\r\nx\r\n"
        )
    [result] = smtpsink.assert_sent().dkim
    assert not result.verified
    assert result.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # dkimpy's own text was the tag alone: "malformed (b'd')".
        (
            (b"v=1;", b"v=1; s=other;"),
            "the DKIM-Signature header is malformed (the tag s= appears more "
            "than once)",
        ),
        (
            (b"v=1;", b"v=1; nonsense;"),
            "the DKIM-Signature header is malformed ('nonsense' is not a "
            "tag=value pair)",
        ),
    ],
)
def test_a_signature_dkimpy_cannot_split_says_what_and_whose(
    smtpsink: Mailbox, change: tuple[bytes, bytes], reason: str
) -> None:
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(raw, b"s1", b"shop.example", key.encode())
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example",
            ["ann@example.com"],
            signature.replace(*change) + raw,
        )
    [result] = smtpsink.assert_sent().dkim
    # Whose signature it is, though dkimpy gave no fields.
    assert (result.domain, result.verified, result.reason) == (
        "shop.example",
        False,
        reason,
    )
    assert result.selector in ("s1", "other")  # s= twice: the first one


def test_a_result_shows_the_signature_control_characters_escaped(
    smtpsink: Mailbox,
) -> None:
    """d= and s= are the sender's text: a result printed in a failure
    message must not carry its ESC (terminal title, clear screen)."""
    header = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=ex\x1b[2J\x07.example;"
        b" s=s\x1b[2J1; h=from; bh=abc; b=xyz"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "a@x.example", ["b@x.example"], header + b"\r\nSubject: x\r\n\r\nx\r\n"
        )
    [result] = smtpsink.assert_sent().dkim
    assert result.domain == "ex\x1b[2J\x07.example"  # as sent
    assert str(result).startswith(
        "DKIM d=ex\\x1b[2J\\x07.example s=s\\x1b[2J1: FAILED: "
    )
    [problem] = [
        p
        for p in smtpsink.messages[0].bulk_sender_problems()
        if p.code == "dkim-failed"
    ]
    assert "\x1b" not in str(problem)
    assert "d=ex\\x1b[2J\\x07.example s=s\\x1b[2J1: " in str(problem)


def test_a_header_dkimpy_cannot_read_is_not_blamed_on_the_signature(
    smtpsink: Mailbox,
) -> None:
    # "Name : value" is RFC 5322's obsolete syntax; dkimpy refuses the
    # whole message for it, whichever header it is.
    key = smtpsink.dkim_key("shop.example", selector="s1")
    send_signed(smtpsink, key)
    raw = smtpsink.assert_sent().raw.replace(b"\r\nTo:", b"\r\nX-Old : yes\r\nTo:")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@shop.example", ["ann@example.com"], raw)
    [result] = smtpsink.assert_sent(count=2)[1].dkim
    assert (result.verified, result.domain, result.selector) == (
        False,
        "shop.example",
        "s1",
    )
    assert result.reason == (
        "dkimpy cannot read the message's header block, so no signature in it "
        "can be verified (Unexpected characters in RFC822 header: "
        "b'X-Old : yes')"
    )


def test_bad_arguments_are_named(smtpsink: Mailbox) -> None:
    with pytest.raises(ValueError, match="domain must be a domain name"):
        smtpsink.dkim_key("localhost")
    with pytest.raises(
        ValueError, match=r"got '-bad\.example': '-bad' is no DNS label \(letters"
    ):
        smtpsink.dkim_key("-bad.example")
    with pytest.raises(ValueError, match=r"'shop example' is no DNS label"):
        smtpsink.dkim_key("shop example.test")
    with pytest.raises(ValueError, match="selector must be a DNS label"):
        smtpsink.dkim_key("shop.example", selector="a b")
    # The From address for the domain, and the record's name for the
    # selector: both were taken, and published where no signature looks.
    with pytest.raises(
        ValueError,
        match=r"got the address 'news@shop\.example': give its domain, 'shop\.example'",
    ):
        smtpsink.dkim_key("news@shop.example")
    with pytest.raises(
        ValueError,
        match=r"selector must be the selector alone, .* got 'mail\._domainkey'",
    ):
        smtpsink.dkim_key("shop.example", selector="mail._domainkey")
    with pytest.raises(
        ValueError,
        match=r"domain must be the signing domain alone, .* got "
        r"'mail\._domainkey\.shop\.example': .*; "
        r"dkim_key\('shop\.example', selector='mail'\)\Z",
    ):
        smtpsink.dkim_key("mail._domainkey.shop.example")
    with pytest.raises(TypeError, match="domain must be a str"):
        smtpsink.dkim_key(b"shop.example")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="selector must be a str"):
        smtpsink.dkim_key("shop.example", selector=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bits must be an int such as 2048, got '2048'"):
        smtpsink.dkim_key("shop.example", bits="2048")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bits must be an int"):
        smtpsink.dkim_key("shop.example", bits=True)
    with pytest.raises(ValueError, match=r"bits must be from 1024 to 4096 .* got 512"):
        smtpsink.dkim_key("shop.example", bits=512)
    with pytest.raises(
        TypeError, match=r"private_key must be a PEM private key .* int"
    ):
        smtpsink.dkim_key("shop.example", private_key=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="private_key could not be read as an"):
        smtpsink.dkim_key("shop.example", private_key="not a key")
    # The public half by mistake: OpenSSL said "invalid padding". In PKCS #1
    # too ("BEGIN RSA PUBLIC KEY", as openssl -RSAPublicKey_out writes it).
    private = serialization.load_pem_private_key(
        smtpsink.dkim_key("pair.example").encode(), password=None
    )
    for layout, label in [
        (serialization.PublicFormat.SubjectPublicKeyInfo, "BEGIN PUBLIC KEY"),
        (serialization.PublicFormat.PKCS1, "BEGIN RSA PUBLIC KEY"),
    ]:
        public = private.public_key().public_bytes(serialization.Encoding.PEM, layout)
        with pytest.raises(
            ValueError, match=rf"^private_key holds a public key \({label}\): give"
        ):
            smtpsink.dkim_key("shop.example", private_key=public)
    # An encrypted private key with its public half after it is called
    # encrypted, not a public key.
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(
        ValueError,
        match=r"^private_key could not be read as an unencrypted PEM private "
        r"key: Password was not given but private key is encrypted",
    ):
        smtpsink.dkim_key("shop.example", private_key=encrypted + public)


def test_a_private_key_of_another_kind_is_named(smtpsink: Mailbox) -> None:
    # It said "must be an RSA private key" alone, to a sender signing with
    # ed25519 as RFC 8463 allows.
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    keys: list[tuple[ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, str]]
    keys = [
        (
            ed25519.Ed25519PrivateKey.generate(),
            "got an Ed25519 key: ed25519-sha256 signatures (RFC 8463) are not "
            "verified here; sign with an RSA key too",
        ),
        (
            ec.generate_private_key(ec.SECP256R1()),
            "got an EC key: DKIM signs with RSA or Ed25519 keys",
        ),
    ]
    for key, said in keys:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        expected = f"private_key must be an RSA private key (PEM), {said}"
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
            smtpsink.dkim_key("shop.example", private_key=pem)


def test_a_signature_naming_no_publishable_domain_suggests_no_call(
    smtpsink: Mailbox,
) -> None:
    # Its reason suggested dkim_key('\ufffd\ufffd\ufffd.example', ...), a call
    # that raises.
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=\xed\xa0\x80.example; s=s1; "
        b"h=from; bh=AAAA; b=AAAA\r\nFrom: news@shop.example\r\n\r\nx\r\n"
    )
    [result] = smtpsink.deliver(raw, to="ann@example.com").dkim
    assert result.reason is not None
    assert result.reason.endswith(
        ", and none can be: its d= or s= is no domain name or selector"
    )
    assert "dkim_key(" not in result.reason


@pytest.mark.parametrize("bits", [1024, 4096, 512])
def test_bits_with_a_key_of_ones_own_is_an_error_not_ignored(
    smtpsink: Mailbox, bits: int
) -> None:
    own = smtpsink.dkim_key("own.example", "k", bits=1024)
    expected = (
        f"bits={bits} and private_key were both given: bits is the size of a "
        "key for dkim_key to make, and private_key is published as it is "
        "(this one has 1024 bits); pass one or the other"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        smtpsink.dkim_key("both.example", "mail", bits=bits, private_key=own)
    # Nothing was published for the name.
    send_signed(smtpsink, own, domain="both.example", selector="mail")
    [result] = smtpsink.assert_sent().dkim
    assert result.reason is not None
    assert result.reason.startswith("no key published for mail._domainkey.both")


def test_verification_never_asks_real_dns() -> None:
    # dnspython's resolver is never created: a signature for an unpublished
    # domain fails from the local table alone.
    code = (
        "import sys, dkim.dnsplug\n"
        "from pytest_smtpsink._dkim import verify\n"
        "def refuse(*a, **k): raise SystemExit('real DNS was asked')\n"
        "dkim.dnsplug.get_txt = refuse\n"
        "import dns.resolver; dns.resolver.resolve = refuse\n"
        "r = verify(b'DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s;"
        " h=from; bh=AAAA; b=AAAA\\r\\nFrom: a@x.example\\r\\n\\r\\nx\\r\\n')\n"
        "print(r[0].reason)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("no key published for s._domainkey.x.example")


def test_an_ed25519_signature_says_it_is_not_verified_here(smtpsink: Mailbox) -> None:
    # RFC 8463: senders sign with ed25519-sha256 and rsa-sha256. dkim_key()
    # makes and takes RSA keys only: "publish one with dkim_key()" sent the
    # user to publish an RSA key, which then failed it as "a header changed".
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    rsa = dkim.sign(raw, b"s1", b"shop.example", key.encode())
    # As an ed25519 signature's header reads (dkimpy signs it only with
    # PyNaCl); its selector has no key, and then an RSA one.
    ed25519 = rsa.replace(b"a=rsa-sha256", b"a=ed25519-sha256").replace(
        b"s=s1", b"s=ed"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail(
            "noreply@shop.example", ["ann@example.com"], ed25519 + rsa + raw
        )
    received = smtpsink.assert_sent()
    reason = (
        "a=ed25519-sha256 (RFC 8463) is not verified here: dkim_key() publishes "
        "RSA keys only (a sender signing with both, as RFC 8463 has it, is "
        "verified by its rsa-sha256 signature)"
    )
    for _ in range(2):
        first, second = received.dkim
        assert (first.selector, first.algorithm, first.verified, first.reason) == (
            "ed",
            "ed25519-sha256",
            False,
            reason,
        )
        assert (second.algorithm, second.verified) == ("rsa-sha256", True)
        smtpsink.dkim_key("shop.example", selector="ed")  # what the advice said


@pytest.mark.parametrize(
    ("domain", "selector", "said"),
    [
        (b"shop.example.", b"s1", "d=shop.example."),
        (b"shop.example", b"s1.", "s=s1."),
        (b"shop..example", b"s1", "d=shop..example"),
    ],
)
def test_a_name_with_an_empty_label_is_not_verified(
    smtpsink: Mailbox, domain: bytes, selector: bytes, said: str
) -> None:
    # The stub's lookup forgave a trailing dot (a zone file's spelling), so
    # it verified and aligned here; receivers look up a name no resolver
    # takes ("s1._domainkey.shop.example..") and find no key.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(raw, selector, domain, key.encode())
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@shop.example", ["ann@example.com"], signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert result.verified is False
    assert result.reason is not None
    assert result.reason.startswith(f"{said} is no DNS name (an empty label"), result


def test_a_from_more_than_h_names_is_said_so(smtpsink: Mailbox) -> None:
    # A From added above a signed message (or a message signed with two):
    # "a signed header changed after signing" sent the reader looking for
    # a change, where dkimpy fails a From that h= leaves unsigned.
    raw, signature = signed_news(smtpsink, [b"from", b"to", b"subject"])
    send_news(smtpsink, b"From: PayPal <service@paypal.example>\r\n" + signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert result.verified is False
    assert result.reason == (
        "the message has 2 From headers and h= signs 1 of them: dkimpy, as "
        "verifiers that guard against a From added above the signed one (RFC "
        "6376 8.15), fails a signature that leaves a From unsigned; a message "
        "has one From (RFC 5322 3.6)"
    )


def test_an_rsa_sha1_signature_is_not_verified(smtpsink: Mailbox) -> None:
    # RFC 8301 3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
    # It was "verified", and passed the bulk-sender rules.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(
        raw, b"s1", b"shop.example", key.encode(), signature_algorithm=b"rsa-sha1"
    )
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@shop.example", ["ann@example.com"], signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert (result.algorithm, result.verified) == ("rsa-sha1", False)
    assert result.reason == (
        "a=rsa-sha1: the signature matches the key, but RFC 8301 has verifiers "
        "treat SHA-1 signatures as invalid, so receivers take the message as "
        "unsigned; sign with rsa-sha256"
    )


def signed_by_hand(
    raw: bytes, key: str, headers: Sequence[bytes], *tags: tuple[bytes, bytes]
) -> bytes:
    """``raw`` with a DKIM-Signature (d=shop.example, s=s1) over
    ``headers`` with the extra ``tags``, made with dkimpy's own parts: what
    its sign() refuses to make (no From in h=) or cannot (an x= tag)."""
    import hashlib

    from dkim.canonicalization import CanonicalizationPolicy
    from dkim.crypto import parse_pem_private_key

    signer = dkim.DKIM(raw)
    signer.hasher = hashlib.sha256
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body_hash = base64.b64encode(
        hashlib.sha256(policy.canonicalize_body(signer.body)).digest()
    )
    fields = [
        *((b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed")),
        *((b"d", b"shop.example"), (b"s", b"s1"), *tags),
        *((b"h", b" : ".join(headers)), (b"bh", body_hash), (b"b", b"")),
    ]
    header: bytes = signer.gen_header(
        fields,
        tuple(headers),
        policy,
        b"DKIM-Signature",
        parse_pem_private_key(key.encode()),
    )
    return b"DKIM-Signature: " + header + raw


def test_a_signature_that_does_not_sign_from_is_not_verified(
    smtpsink: Mailbox,
) -> None:
    # RFC 6376 6.1.1: verifiers MUST ignore such a signature (PERMFAIL).
    # dkimpy refuses to make one but verifies it: it was "verified", and
    # the message passed the bulk-sender rules with any From put in.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signed = signed_by_hand(raw, key, [b"to", b"subject"])
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@shop.example", ["ann@example.com"], signed)
    received = smtpsink.assert_sent()
    [result] = received.dkim
    assert (result.signed_headers, result.verified) == (("to", "subject"), False)
    assert result.reason == (
        "h= does not include From: the signature matches the key, but RFC 6376 "
        "(5.4, 6.1.1) has verifiers ignore a signature that does not sign "
        "From, so receivers take the message as unsigned; add from to h="
    )
    assert "dkim-failed" in [p.code for p in received.bulk_sender_problems()]


def test_an_l_past_the_body_says_what_appended_text_does(smtpsink: Mailbox) -> None:
    # "text appended later would still verify" was false: appended text is
    # hashed up to l=, and breaks the signature first.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signed = signed_by_hand(raw, key, [b"from", b"to", b"subject"], (b"l", b"4096"))
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("noreply@shop.example", ["ann@example.com"], signed)
    [result] = smtpsink.assert_sent().dkim
    assert result.verified
    body = len(raw.partition(b"\r\n\r\n")[2])
    assert result.warnings == (
        f"l=4096 is more than the body's {body} bytes (RFC 6376 3.5 has l= count "
        "the bytes that were signed): text appended later breaks the signature "
        "until the body is 4096 bytes long, and what comes after that verifies "
        "(RFC 6376 8.2); sign without l=",
    )


def test_a_signature_past_its_x_when_it_came_has_a_warning(
    smtpsink: Mailbox,
) -> None:
    # dkimpy forgives 10 hours of clock difference: an x= an hour past
    # verified with no word, though receivers may treat it as invalid.
    key = smtpsink.dkim_key("shop.example")
    message = make_message(sender="noreply@shop.example")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    now = int(time.time())
    for sent, (expires, warned) in enumerate(
        ((now - 3600, True), (now + 3600, False)), 1
    ):
        signed = signed_by_hand(
            raw,
            key,
            [b"from", b"to", b"subject"],
            (b"t", b"%d" % (now - 7200)),
            (b"x", b"%d" % expires),
        )
        with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
            client.sendmail("noreply@shop.example", ["ann@example.com"], signed)
        smtpsink.wait_until(lambda: len(smtpsink.messages) == sent)  # noqa: B023
        [result] = smtpsink.messages[-1].dkim
        assert result.verified, result
        said = [w for w in result.warnings if w.startswith("x= passed ")]
        assert bool(said) is warned, result.warnings
        if warned:
            assert re.fullmatch(
                r"x= passed 36\d\d s before the message arrived; dkimpy allows "
                r"10 hours for clocks that differ, receivers may allow much less "
                r"and treat the signature as invalid \(RFC 6376 3\.5\)",
                said[0],
            ), said


@pytest.mark.parametrize("as_dns_has_it", [True, False])
def test_international_names_are_the_dns_stubs_names(
    smtpsink: Mailbox, as_dns_has_it: bool
) -> None:
    # Python's codec (IDNA 2003) made "straße" "strasse", where the stub
    # (dnspython's default codec, IDNA 2008 from its 2.9 on) has
    # "xn--strae-oqa": a d= in the stub's A-labels found no key.
    mx_host = smtpsink.dns.mx("straße.example", [(10, smtpsink)])[0]
    key = smtpsink.dkim_key("straße.example")
    signing = mx_host.removeprefix("mx1.") if as_dns_has_it else "straße.example"
    raw = b"From: news@shop.example\r\nTo: ann@example.com\r\nSubject: Hi\r\n\r\nHi\r\n"
    signature = dkim.sign(raw, b"s1", signing.encode(), key.encode())
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("news@shop.example", ["ann@example.com"], signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert (result.verified, result.reason) == (True, None)


@pytest.mark.parametrize("signing", ["xn--bcher-kva.example", "bücher.example"])
def test_a_key_for_an_international_domain_verifies(
    smtpsink: Mailbox, signing: str
) -> None:
    # DNS has the name in A-labels; a d= may be written either way (U-labels:
    # RFC 8616). The key was kept under the U-label name, which no
    # signature's lookup could find.
    key = smtpsink.dkim_key("Bücher.example")
    raw = (
        "From: Shop <news@bücher.example>\r\nTo: ann@example.com\r\n"
        "Subject: Hi\r\n\r\nHello\r\n"
    ).encode()
    signature = dkim.sign(raw, b"s1", signing.encode(), key.encode())
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("news@shop.example", ["ann@example.com"], signature + raw)
    [result] = smtpsink.assert_sent().dkim
    assert (result.domain, result.verified, result.reason) == (signing, True, None)
