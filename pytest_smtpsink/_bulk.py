"""The Gmail and Yahoo bulk-sender rules (February 2024) that one captured
message can show: a single From address, a valid Message-ID, a verified DKIM
signature aligned with the From domain and made with a key of 1024 bits or
more, RFC 8058 one-click unsubscribe covered by that signature, and TLS on
the way in. A signature with an ``l=`` body length meets them but is
reported as a warning.

Rules that need the sender's DNS or traffic (SPF, a DMARC record, spam
complaint rates, PTR records) are out of reach of a test and not checked.

Runs in the test's thread; a pure function of the message, its DKIM
results (`_dkim.verify`) and its session. Never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from ._dkim import body_length_warnings
from ._lint import (
    ENCODED_BY_PYTHON,
    Problem,
    addresses_without_comma,
    comma_in_display_name,
    hides_its_value,
    quoted_without_domain,
    unquoted_at_in_name,
    valid_message_id,
)
from ._mime import getaddresses
from ._text import join_shortened, plural, shorten, unescape_8bit

if TYPE_CHECKING:
    from ._dkim import DkimResult
    from ._message import Message

Alignment = Literal["relaxed", "strict"]
ALIGNMENTS: tuple[Alignment, ...] = ("relaxed", "strict")

_ONE_CLICK = "List-Unsubscribe=One-Click"
# Second-level labels under which a two-letter country code registers names
# (example.co.uk): the common cases of the Public Suffix List, which this
# check does not ship.
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"})
#: The UK's own besides, under .uk only: without them alice.me.uk and
#: mallory.me.uk aligned, a false pass.
_UK_SECOND_LEVEL = frozenset({"me", "ltd", "plc", "sch", "nhs", "police"})


def organizational_domain(domain: str) -> str:
    """The registrable part of ``domain`` (``news.shop.example`` ->
    ``shop.example``, ``mail.shop.co.uk`` -> ``shop.co.uk``): an
    approximation of DMARC's Organizational Domain without the Public
    Suffix List."""
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) < 3:
        return ".".join(labels)
    second_level = len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL
    if second_level or (labels[-1] == "uk" and labels[-2] in _UK_SECOND_LEVEL):
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def aligned(signing: str, author: str, alignment: Alignment) -> bool:
    """DMARC identifier alignment of a DKIM ``d=`` with the From domain,
    compared as A-labels (RFC 8616): ``bücher.example`` is
    ``xn--bcher-kva.example``."""
    signing, author = _a_labels(signing), _a_labels(author)
    if alignment == "strict":
        return signing == author
    return organizational_domain(signing) == organizational_domain(author)


def _a_labels(domain: str) -> str:
    """``domain`` as DNS has it (`_dkim.a_labels`)."""
    from ._dkim import a_labels

    return a_labels(domain)


#: Every code `bulk_sender_problems` gives (the deliverability page lists
#: the same, a test checks), for checking ignore lists.
BULK_CODES = frozenset(
    {
        "dkim-body-length",
        "dkim-failed",
        "dkim-key-too-small",
        "dkim-missing",
        "dkim-not-aligned",
        "from-not-single",
        "list-unsubscribe-duplicate",
        "list-unsubscribe-missing",
        "list-unsubscribe-no-https",
        "list-unsubscribe-several-https",
        "message-id-invalid",
        "no-tls",
        "one-click-missing",
        "unsubscribe-not-signed",
    }
)


def check_alignment(alignment: object) -> Alignment:
    __tracebackhide__ = True
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be 'relaxed' or 'strict', got {alignment!r}")
    return alignment


def bulk_sender_problems(
    message: Message, alignment: Alignment = "relaxed"
) -> list[Problem]:
    """What keeps ``message`` from meeting the bulk-sender rules."""
    problems: list[Problem] = []
    head = message._head
    # Raw UTF-8 (RFC 6532) as text, not the parser's surrogate escapes: a
    # From domain "straße.example" must align with its A-label d=.
    from_values = [
        unescape_8bit(str(v)) for n, v in head.raw_items() if n.lower() == "from"
    ]
    unreadable = ""
    try:
        addresses = [a for _, a in getaddresses(from_values) if a]
    except RecursionError:  # hundreds of nested comments: no reader copes
        addresses, unreadable = [], " (comments nested too deeply to parse)"
    run_on = [v for v in from_values if addresses_without_comma(v) is not None]
    as_name = [n for n in map(unquoted_at_in_name, from_values) if n is not None]
    quoted_alone = [q for q in map(quoted_without_domain, from_values) if q]
    if quoted_alone and len(from_values) == 1:
        # getaddresses takes the quotes off: news@shop.example, aligned.
        addresses = []
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"From has a quoted string with no @domain after it: "
                f"{quoted_alone[0]!r}, a local part alone, so readers and DMARC "
                "verifiers find no From domain (write the address unquoted, or "
                '"name" <address>); DMARC needs exactly one From address',
                header="From",
            )
        )
    elif as_name and len(from_values) == 1:
        # getaddresses reads the name as a second address: "2 addresses"
        # would not say what is wrong.
        addresses = []
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"From has an address as a display name, not quoted: "
                f"{as_name[0]!r}; readers and DMARC verifiers take it for a "
                'second From address (write "name" <address>, or the address '
                "alone); DMARC needs exactly one From address",
                header="From",
            )
        )
    elif len(from_values) == 1 and (
        comma_name := comma_in_display_name(from_values[0])
    ):
        # "Shop, Inc. <news@shop.example>": readers take "Shop" for a second
        # address; "2 addresses: 'Shop', ..." did not say why.
        addresses = []
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"From has a display name with an unquoted ',', {comma_name!r}, "
                "which readers split into an address of its own and another "
                f'(quote the name: "{comma_name}" <address>); DMARC needs '
                "exactly one From address",
                header="From",
            )
        )
    elif len(from_values) == 1 and len(addresses) == 1 and "@" not in addresses[0]:
        # A local part alone ("From: news"): its "From domain news" was
        # said to align with no signature.
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"From has {addresses[0]!r}, a local part with no @domain, so "
                "readers and DMARC verifiers find no From domain; DMARC needs "
                "exactly one From address",
                header="From",
            )
        )
        addresses = []
    elif run_on:
        # getaddresses makes one garbled address of them ("@y.example"),
        # which would count as the single From and give a wrong domain.
        addresses = []
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"From has addresses not separated by a comma: "
                f"{addresses_without_comma(run_on[0])!r}; DMARC needs exactly "
                "one From address",
                header="From",
            )
        )
    elif len(from_values) != 1 or len(addresses) != 1:
        if not from_values:
            found_text = "no From header"
        else:
            count = len(addresses)
            found_text = (
                f"{plural(len(from_values), 'From header')} with {count} "
                f"address{'' if count == 1 else 'es'}"
                + (f": {join_shortened([repr(a) for a in addresses])}" if count else "")
            )
        problems.append(
            Problem(
                "from-not-single",
                "error",
                f"{found_text}{unreadable}; DMARC needs exactly one From address",
                header="From",
            )
        )
    message_id = head.get("Message-ID")
    if message_id is None or not valid_message_id(str(message_id)):
        what = (
            "no Message-ID"
            if message_id is None
            else f"Message-ID {shorten(str(message_id).strip(), 60)!r} is not valid"
        )
        problems.append(
            Problem(
                "message-id-invalid",
                "error",
                f"{what} (<left@right>); Gmail rejects bulk mail without a valid one",
                header="Message-ID",
            )
        )
    author = addresses[0].rpartition("@")[2] if len(addresses) == 1 else ""
    instances = {
        name: sum(1 for n, _ in head.raw_items() if n.lower() == name)
        for name in _UNSUBSCRIBE_HEADERS
    }
    envelope_domain = (message.envelope.mail_from or "").rpartition("@")[2]
    signature = _dkim_problems(
        message.dkim,
        author,
        alignment,
        problems,
        instances,
        envelope_domain=envelope_domain,
    )
    # Any verified signature that aligns, not only the one chosen: a
    # receiver needs one, so text added after an l= signature's length
    # still passes by it when the other signature fails.
    with_length = [
        (r, warnings)
        for r in message.dkim
        if signature is not None
        and r.verified
        and (not author or aligned(r.domain, author, alignment))
        and (warnings := body_length_warnings(r))
    ]
    if with_length:
        lengthy, warnings = with_length[0]
        # The rules are met to the letter, but an l= signature leaves room
        # for text added after it (RFC 6376 8.2), and the providers' sender
        # guidelines count it against the sender: not a pass.
        problems.append(
            Problem(
                "dkim-body-length",
                "warning",
                f"the DKIM signature of d={lengthy.domain} s={lengthy.selector} "
                f"verifies, but {'; '.join(warnings)}",
                header="DKIM-Signature",
            )
        )
    if signature is not None:
        # RFC 8058 4 asks that a valid signature cover the two headers,
        # not the aligned one: a mailing service's own signature may.
        signature = next(
            (
                other
                for other in (signature, *message.dkim)
                if other.verified
                and all(
                    _covers_top(other, name, instances) for name in _UNSUBSCRIBE_HEADERS
                )
            ),
            signature,
        )
    problems.extend(_unsubscribe_problems(message, signature, instances))
    # Mail put in with deliver() or IMAP APPEND crossed no SMTP hop that
    # could have used TLS: the rule does not apply (as lint judges 8-bit
    # bodies only for mail that came over SMTP).
    if message.session.protocol == "SMTP" and message.session.tls is None:
        # Where the sink offered STARTTLS, the client is what to change.
        offered = any(
            line[4:].strip().upper() == "STARTTLS"
            for exchange in message.session.replies_to("EHLO")
            for line in exchange.replies
        )
        helo_only = not message.session.replies_to("EHLO") and bool(
            message.session.replies_to("HELO")
        )
        problems.append(
            Problem(
                "no-tls",
                "error",
                "the message was sent without TLS; Gmail and Yahoo require TLS "
                "from bulk senders "
                + (
                    "(the sink offered STARTTLS and the client did not use it: "
                    "have it call starttls() before sending)"
                    if offered
                    else "(the client greeted with HELO, which is offered no "
                    "STARTTLS: have it send EHLO and call starttls(), on a sink "
                    "that has tls='starttls')"
                    if helo_only
                    else "(test with a sink that has tls='starttls')"
                ),
            )
        )
    return problems


def _dkim_problems(
    results: Sequence[DkimResult],
    author: str,
    alignment: Alignment,
    problems: list[Problem],
    instances: dict[str, int],
    *,
    envelope_domain: str = "",
) -> DkimResult | None:
    """Append the DKIM problems to ``problems``; return the verified,
    aligned signature the other rules rely on, if there is one.
    ``envelope_domain``: the MAIL FROM's, which SPF checks."""
    where = "DKIM-Signature"
    if not results:
        problems.append(
            Problem(
                "dkim-missing",
                "error",
                "no DKIM signature; bulk senders must sign with DKIM",
                header=where,
            )
        )
        return None
    verified = [r for r in results if r.verified]
    if not verified:
        small = [
            r for r in results if (r.reason or "").startswith("public key too small")
        ]
        if small:
            problems.append(
                Problem(
                    "dkim-key-too-small",
                    "error",
                    f"the DKIM key of d={small[0].domain} s={small[0].selector} "
                    "is shorter than 1024 bits"
                    + (f" ({small[0].key_bits})" if small[0].key_bits else ""),
                    header=where,
                )
            )
        else:
            problems.append(
                Problem(
                    "dkim-failed",
                    "error",
                    "no DKIM signature verifies: "
                    + "; ".join(
                        f"d={r.domain} s={r.selector}: {r.reason}" for r in results
                    ),
                    header=where,
                )
            )
        return None
    if not author:
        # No single From address (reported already): nothing to align with.
        return _covering_first(verified, instances)
    matching = [r for r in verified if aligned(r.domain, author, alignment)]
    if not matching:
        # An aligned signature that failed is the sender's own, broken (a
        # mailing service re-signed what it changed): say why, or the
        # problem reads as if the sender never signed.
        failed = [
            f"; d={r.domain} s={r.selector} is aligned but failed: {r.reason}"
            for r in results
            if not r.verified and aligned(r.domain, author, alignment)
        ]
        problems.append(
            Problem(
                "dkim-not-aligned",
                "error",
                f"no verified DKIM signature is aligned ({alignment}) with the "
                f"From domain {author}: signed by "
                + ", ".join(f"d={r.domain}" for r in verified)
                + "".join(failed)
                # The providers' rule is DMARC's, which SPF alignment passes
                # too: a mailing service that signs as itself and sends
                # from the sender's own bounce domain meets it.
                + "; DMARC passes on an aligned SPF domain too, which a "
                "captured message cannot show"
                + (
                    f": the envelope sender's domain {envelope_domain} aligns, so "
                    "if its SPF record lists the sending servers, Gmail and "
                    "Yahoo accept the message (ignore='dkim-not-aligned' then)"
                    if envelope_domain and aligned(envelope_domain, author, alignment)
                    else ""
                ),
                header=where,
            )
        )
        return None
    return _covering_first(matching, instances)


def _covering_first(
    signatures: list[DkimResult], instances: dict[str, int]
) -> DkimResult:
    """The signature the unsubscribe rule checks: one that covers both
    List-Unsubscribe headers if any does (a message may carry a mailing
    service's signature and the sender's own), else the first; of those,
    one without warnings (no l=) if there is one."""

    def worse(signature: DkimResult) -> tuple[bool, bool]:
        covers = all(
            _covers_top(signature, name, instances) for name in _UNSUBSCRIBE_HEADERS
        )
        return (not covers, bool(body_length_warnings(signature)))

    return min(signatures, key=worse)  # the first of the best


_UNSUBSCRIBE_HEADERS = ("list-unsubscribe", "list-unsubscribe-post")


def _covers_top(signature: DkimResult, name: str, instances: dict[str, int]) -> bool:
    """Whether ``signature`` covers the topmost ``name`` header, the one
    read: each time h= names a header it signs one more instance, from the
    bottom up (RFC 6376 5.4.2), so it must name it once per instance."""
    return signature.signed_headers.count(name) >= max(instances.get(name, 0), 1)


def _unsubscribe_problems(
    message: Message, signature: DkimResult | None, instances: dict[str, int]
) -> list[Problem]:
    found: list[Problem] = []
    head = message._head
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post"):
        count = instances[name.lower()]
        if count > 1:
            # Which one a receiver takes is its choice; the check reads the
            # top one (as the email package does).
            found.append(
                Problem(
                    "list-unsubscribe-duplicate",
                    "error",
                    f"{count} {name} headers; RFC 8058 has one-click "
                    "unsubscribe use exactly one, and receivers may take either",
                    header=name,
                )
            )
    value = head.get("List-Unsubscribe")
    if value is None:
        found.append(
            Problem(
                "list-unsubscribe-missing",
                "error",
                "no List-Unsubscribe header; Gmail and Yahoo require one-click "
                "unsubscribe (RFC 8058) from bulk senders",
                header="List-Unsubscribe",
            )
        )
        return found
    uris = re.findall(r"<([^<>]*)>", _without_comments(str(value)))
    https = [uri for uri in uris if _is_https_uri(uri)]
    if len(https) > 1:
        # RFC 8058 3.1: "MUST contain one HTTPS URI"; which one a receiver
        # POSTs to is its choice, and the second may be another host's.
        listed = ", ".join(shorten("".join(uri.split()), 80) for uri in https)
        found.append(
            Problem(
                "list-unsubscribe-several-https",
                "warning",
                f"List-Unsubscribe has {len(https)} https URIs ({listed}); RFC "
                "8058 asks for one, and a receiver may POST the unsubscribe to "
                "any of them",
                header="List-Unsubscribe",
            )
        )
    if not https:
        written = str(value).strip()
        found.append(
            Problem(
                "list-unsubscribe-no-https",
                "error",
                f"List-Unsubscribe {shorten(' '.join(written.split()), 100)!r} "
                "has no <https://...> URI; one-click unsubscribe (RFC 8058) "
                "needs one"
                + (
                    f" (the header is RFC 2047-encoded: {ENCODED_BY_PYTHON})"
                    if hides_its_value(written)
                    else ""
                ),
                header="List-Unsubscribe",
            )
        )
    post = head.get("List-Unsubscribe-Post")
    if post is None or str(post).strip() != _ONE_CLICK:
        found.append(
            Problem(
                "one-click-missing",
                "error",
                f"List-Unsubscribe-Post must be exactly '{_ONE_CLICK}' (RFC 8058), "
                + ("it is missing" if post is None else f"got {str(post).strip()!r}"),
                header="List-Unsubscribe-Post",
            )
        )
    if signature is not None:
        missing = [
            name
            for name in ("List-Unsubscribe", "List-Unsubscribe-Post")
            if name.lower() not in signature.signed_headers
        ]
        partly = [
            name
            for name in ("List-Unsubscribe", "List-Unsubscribe-Post")
            if name not in missing
            and not _covers_top(signature, name.lower(), instances)
        ]
        for name in partly:
            found.append(
                Problem(
                    "unsubscribe-not-signed",
                    "error",
                    f"the DKIM signature of d={signature.domain} covers "
                    f"{signature.signed_headers.count(name.lower())} of the "
                    f"{instances[name.lower()]} {name} headers, and a signature "
                    "covers them from the bottom up (RFC 6376 5.4.2): the top "
                    "one, which is read, is not signed; RFC 8058 asks that a valid "
                    "signature cover it",
                    header=name,
                )
            )
        if missing:
            found.append(
                Problem(
                    "unsubscribe-not-signed",
                    "error",
                    f"the DKIM signature of d={signature.domain} does not cover "
                    f"{' and '.join(missing)} (add "
                    f"{'them' if len(missing) > 1 else 'it'} to h=); RFC 8058 "
                    f"asks that a valid signature cover {'them' if len(missing) > 1 else 'it'}",
                    header=missing[0],
                )
            )
    return found


def _without_comments(value: str) -> str:
    """``value`` without its comments (RFC 5322 3.2.2, nested ones too):
    RFC 2369's URIs are the bracketed ones outside them, and a receiver
    posts to none that a comment holds. Unlike lint's `uncommented`, a
    bracketed URI is opaque: its ``(`` (``?sort=(a)``) opens no comment."""
    kept: list[str] = []
    depth = 0
    in_uri = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and depth:
            escaped = True
        elif char == "<" and not depth:
            in_uri = True
        elif char == ">" and not depth:
            in_uri = False
        elif char == "(" and not in_uri:
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            continue
        if not depth:
            kept.append(char)
    return "".join(kept)


def _is_https_uri(uri: str) -> bool:
    """Whether ``uri`` (from between angle brackets) is an https URI with a
    host. RFC 2369 has clients ignore white space inside the brackets (a
    folded URI); ``https://`` alone names nothing to post to."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit("".join(uri.split()))
    except ValueError:  # a bad IPv6 literal, for one
        return False
    return parts.scheme.lower() == "https" and bool(parts.hostname)
