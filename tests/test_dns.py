"""The MX stub, asked by dnspython's own resolver and by raw sockets."""

from __future__ import annotations

import contextlib
import gc
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import pytest
from conftest import unread_future_errors
from test_event_loop import LOOPS

from pytest_smtpsink import DNSZone, FaultError, Mailbox, SMTPSink

Factory = Callable[..., Mailbox]


def texts(answer: dns.resolver.Answer) -> list[str]:
    return sorted(rdata.to_text() for rdata in answer)


def test_mx_records_point_at_sinks(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    backup = smtpsink_factory(hostname="backup.test")
    zone = smtpsink.dns

    names = zone.mx("partner.example", [(10, smtpsink), (20, backup)])

    assert names == ["mx1.partner.example", "mx2.partner.example"]
    resolver = zone.resolver()
    assert texts(resolver.resolve("partner.example", "MX")) == [
        "10 mx1.partner.example.",
        "20 mx2.partner.example.",
    ]
    assert texts(resolver.resolve("MX2.Partner.Example", "A")) == ["127.0.0.1"]
    assert zone.smtp_ports == {
        "mx1.partner.example": smtpsink.port,
        "mx2.partner.example": backup.port,
    }
    assert [str(q) for q in zone.queries] == [
        "udp partner.example. MX: NOERROR -> 10 mx1.partner.example., "
        "20 mx2.partner.example.",
        "udp MX2.Partner.Example. A: NOERROR -> 127.0.0.1",
    ]


def test_smtp_ports_are_keyed_as_a_resolver_answers(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns

    names = zone.mx("Partner.Example", [(10, smtpsink)])
    names += zone.mx("exämple.com.", [(10, smtpsink)])

    assert names == ["mx1.partner.example", "mx1.xn--exmple-cua.com"]
    assert zone.smtp_ports == dict.fromkeys(names, smtpsink.port)
    resolver = zone.resolver()
    # dnspython compresses an answer's names against the question, so the
    # MX host comes back in the question's case: any case must be found.
    for question in ("partner.example", "PARTNER.EXAMPLE", "exämple.com"):
        (mx,) = resolver.resolve(question, "MX")
        assert zone.smtp_ports[mx.exchange.to_text()] == smtpsink.port
        # The answer's Name itself, as an application has it: a KeyError.
        assert zone.smtp_ports[mx.exchange] == smtpsink.port
        assert mx.exchange in zone.smtp_ports
    for spelling in ("MX1.Partner.Example", "mx1.partner.example.", "mx1.exämple.com"):
        assert zone.smtp_ports[spelling] == smtpsink.port
        assert spelling in zone.smtp_ports
    assert zone.smtp_ports.get("mx2.partner.example") is None
    assert zone.smtp_ports.get("not a name..") is None
    with pytest.raises(KeyError):
        zone.smtp_ports[None]  # type: ignore[index]
    # Still a dict, as it was: it serializes and merges as one.
    assert json.loads(json.dumps(zone.smtp_ports)) == dict.fromkeys(
        names, smtpsink.port
    )
    assert (zone.smtp_ports | {"dead.example": 9})["dead.example"] == 9


def test_a_second_mx_call_for_a_domain_adds_hosts_with_new_names(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    backup = smtpsink_factory(hostname="backup.test")
    zone = smtpsink.dns

    first = zone.mx("p.example", [(10, smtpsink)])
    second = zone.mx("P.Example.", [(20, "mail.p.example"), (30, backup)])

    # Numbered on from the first call: both sinks keep a name of their own.
    assert (first, second) == (["mx1.p.example"], ["mail.p.example", "mx3.p.example"])
    resolver = zone.resolver()
    assert texts(resolver.resolve("p.example", "MX")) == [
        "10 mx1.p.example.",
        "20 mail.p.example.",
        "30 mx3.p.example.",
    ]
    assert texts(resolver.resolve("mx1.p.example", "A")) == ["127.0.0.1"]
    assert texts(resolver.resolve("mx3.p.example", "A")) == ["127.0.0.1"]
    assert zone.smtp_ports == {
        "mx1.p.example": smtpsink.port,
        "mx3.p.example": backup.port,
    }


def test_mx_never_gives_a_sink_a_name_already_in_use(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.a("mx1.q.example", "127.0.0.9")

    with pytest.raises(ValueError, match=r"^mx1\.q\.example, .* already in use"):
        zone.mx("q.example", [(10, smtpsink)])
    with pytest.raises(ValueError, match=r"^mx2\.p\.example, .* already in use"):
        zone.mx("p.example", [(10, "mx2.p.example"), (20, smtpsink)])

    # A refused call publishes none of its records.
    assert zone.smtp_ports == {}
    resolver = zone.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("p.example", "MX")
    with pytest.raises(dns.resolver.NoAnswer):  # a host below it, no MX
        resolver.resolve("q.example", "MX")
    assert texts(resolver.resolve("mx1.q.example", "A")) == ["127.0.0.9"]


def test_host_name_targets_and_addresses(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("partner.example", [(5, "mail.partner.example")])
    zone.a("mail.partner.example", "127.0.0.1", "127.0.0.2")
    zone.aaaa("mail.partner.example", "::1")
    resolver = zone.resolver()

    assert texts(resolver.resolve("partner.example", "MX")) == [
        "5 mail.partner.example."
    ]
    assert texts(resolver.resolve("mail.partner.example", "A")) == [
        "127.0.0.1",
        "127.0.0.2",
    ]
    assert texts(resolver.resolve("mail.partner.example", "AAAA")) == ["::1"]
    # A name with records, but not of the type asked: NOERROR, no answer.
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("mail.partner.example", "TXT")


def test_txt_records_longer_than_255_bytes_are_split(smtpsink: Mailbox) -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 400
    zone = smtpsink.dns
    zone.txt("sel._domainkey.partner.example", key)
    zone.txt("partner.example", "v=spf1 -all")
    resolver = zone.resolver()

    (record,) = resolver.resolve("sel._domainkey.partner.example", "TXT")
    assert [len(s) for s in record.strings] == [255, len(key) - 255]
    assert b"".join(record.strings).decode() == key
    assert texts(resolver.resolve("partner.example", "TXT")) == ['"v=spf1 -all"']


def test_a_long_text_is_split_between_two_characters(smtpsink: Mailbox) -> None:
    # Cut at 255 bytes, a "\u2713" fell across two strings: joined, the text
    # was right, but a reader decoding each string failed.
    text = "x" + "h\u00e9llo w\u00f6rld \u2713" * 30  # a cut at 255: in a "\u2713"
    zone = smtpsink.dns
    zone.txt("note.partner.example", text)
    (record,) = zone.resolver().resolve("note.partner.example", "TXT")
    assert "".join(s.decode() for s in record.strings) == text
    assert all(len(s) <= 255 for s in record.strings)
    # Bytes are bytes: split where 255 falls.
    zone.txt("raw.partner.example", text.encode())
    (record,) = zone.resolver().resolve("raw.partner.example", "TXT")
    assert [len(s) for s in record.strings] == [255, 255, 1]


def test_a_txt_record_too_big_for_a_dns_message_is_refused(smtpsink: Mailbox) -> None:
    # Taken, it left every query for it unanswered, recorded as a malformed
    # query with an internal error.
    zone = smtpsink.dns
    with pytest.raises(
        ValueError,
        match=r"^a TXT record of 65792 bytes does not fit in a DNS message "
        r"\(at most \d+ for 'big\.example'\)$",
    ):
        zone.txt("big.example", *(["x" * 255] * 257))
    zone.txt("big.example", *(["x" * 255] * 250))  # 64,000 bytes: it fits
    (record,) = zone.resolver().resolve("big.example", "TXT", tcp=True)
    assert len(record.strings) == 250


def test_txt_strings_are_str_or_bytes(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.txt("forms.example", "v=spf1 -all")
    zone.txt("forms.example", b"\x00binary", "two", "")  # one record, 3 strings
    zone.txt("forms.example", "grüße")  # UTF-8

    answer = zone.resolver().resolve("forms.example", "TXT")

    assert sorted(record.strings for record in answer) == [
        (b"\x00binary", b"two", b""),
        ("grüße".encode(),),
        (b"v=spf1 -all",),
    ]


@pytest.mark.parametrize(
    ("strings", "message"),
    [
        ((5,), r"^txt\(\) takes strings as str or bytes, got 5$"),
        ((None,), r"got None$"),
        (("ok", 2.5), r"got 2\.5$"),
        (
            (["a", "b"],),
            r"got \['a', 'b'\]: pass a record's strings as arguments of their "
            r"own, txt\(name, \*strings\)$",
        ),
    ],
)
def test_txt_refuses_what_is_not_a_string(
    smtpsink: Mailbox, strings: tuple[object, ...], message: str
) -> None:
    zone = smtpsink.dns

    with pytest.raises(TypeError, match=message):
        zone.txt("x.example", *strings)  # type: ignore[arg-type]

    with pytest.raises(dns.resolver.NXDOMAIN):  # nothing was published
        zone.resolver().resolve("x.example", "TXT")


def test_an_answer_too_big_for_udp_comes_over_tcp(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    for n in range(20):
        zone.txt("big.example", f"record {n} " + "x" * 60)

    answer = zone.resolver().resolve("big.example", "TXT")

    assert len(answer) == 20
    outcomes = [(q.transport, q.note) for q in zone.queries]
    assert outcomes == [("udp", "truncated: too big for UDP"), ("tcp", "")]


def test_an_answer_too_big_for_one_datagram_is_truncated_not_lost(
    smtpsink: Mailbox,
) -> None:
    # A client may offer an EDNS size up to 65535, but a UDP datagram holds
    # at most 65507 bytes: an answer in between was "sent" (the kernel
    # refused it, unseen), recorded as answered, and the client waited for
    # nothing until its timeout. It gets TC, and asks again over TCP.
    zone = smtpsink.dns
    zone.txt("big.example", *["x" * 255] * 230)  # one answer of 58,921 bytes
    zone.txt("big.example", "y" * 6561)  # and a second record: 65,520 in all
    size = len(ask(zone, "big.example", "TXT", "tcp").to_wire())
    assert size == 65520
    query = dns.message.make_query("big.example", "TXT", use_edns=0, payload=65535)

    response = dns.query.udp(query, zone.host, timeout=10, port=zone.port)

    assert response.flags & dns.flags.TC
    assert not response.answer
    assert [(q.transport, q.note, len(q.answers)) for q in zone.queries] == [
        ("tcp", "", 2),
        ("udp", "truncated: too big for UDP", 0),
    ]


def test_an_answer_too_big_even_for_tcp_says_so(smtpsink: Mailbox) -> None:
    # Over 65535 bytes: no DNS message can carry it. The record said "too
    # big for UDP" of a TCP query, and the test author had no clue why the
    # resolver found no answer.
    # Over TCP it was an empty NOERROR with TC set, which a resolver reads
    # as "no such records": it is SERVFAIL, so the lookup fails.
    zone = smtpsink.dns
    for n in range(240):
        zone.txt("huge.example", f"{n:03} " + "x" * 251)
    zone.mx("huge.example", [(n, f"mx{n}.huge.example") for n in range(60)])

    response = ask(zone, "huge.example", "ANY", "tcp")

    assert response.rcode() == dns.rcode.SERVFAIL
    assert not response.answer
    assert [(q.transport, q.note) for q in zone.queries] == [
        ("tcp", "truncated: too big for a DNS message (65535 bytes)")
    ]


def test_txt_records_too_big_together_are_refused(smtpsink: Mailbox) -> None:
    # Each fitted, so each was taken; together no answer could carry them,
    # and the lookup found "no records".
    zone = smtpsink.dns
    for n in range(3):
        zone.txt("big.example", f"{n}" + "x" * 20_000)
    with pytest.raises(
        ValueError,
        match=r"^the TXT records of 'big\.example' would take \d+ bytes with "
        r"this one: more than a DNS message holds \(\d+\)$",
    ):
        zone.txt("big.example", "3" + "x" * 20_000)
    assert len(zone.resolver().resolve("big.example", "TXT", tcp=True)) == 3


def test_null_mx(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.null_mx("nomail.example")

    assert texts(zone.resolver().resolve("nomail.example", "MX")) == ["0 ."]


def test_a_null_mx_stands_alone(smtpsink: Mailbox) -> None:
    # RFC 7505 3: a null MX is the domain's only MX record (found by a
    # new-user trial: both were published, and the application delivered).
    zone = smtpsink.dns
    zone.mx("p.example", [(10, smtpsink)])
    with pytest.raises(
        ValueError,
        match=r"^p\.example has MX records \(mx\(\)\): a null MX is a domain's only MX",
    ):
        zone.null_mx("P.example.")
    zone.null_mx("nomail.example")
    with pytest.raises(
        ValueError, match=r"^nomail\.example has a null MX \(null_mx\(\)\): it is"
    ):
        zone.mx("nomail.example", [(10, smtpsink)])
    resolver = zone.resolver()
    assert texts(resolver.resolve("p.example", "MX")) == ["10 mx1.p.example."]
    assert texts(resolver.resolve("nomail.example", "MX")) == ["0 ."]


def test_undeclared_names_and_nxdomain(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("gone.example", [(10, smtpsink)])
    zone.nxdomain("gone.example")
    zone.a("notgone.example", "127.0.0.1")  # a name that only ends the same
    resolver = zone.resolver()

    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("never-declared.example", "MX")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("gone.example", "MX")
    # RFC 8020: the names below it are gone too; mx() published this one.
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("mx1.gone.example", "A")
    assert texts(resolver.resolve("notgone.example", "A")) == ["127.0.0.1"]
    assert [q.outcome for q in zone.queries] == ["NXDOMAIN"] * 3 + ["NOERROR"]


def test_a_name_with_records_only_below_it_exists(smtpsink: Mailbox) -> None:
    # RFC 8020: NXDOMAIN says nothing exists at or below a name. A domain
    # whose only records are its hosts' has no MX (NOERROR, no data: its
    # own address is its MX, RFC 5321 5.1), but it is no unknown domain.
    zone = smtpsink.dns
    zone.a("mail.partner.example", "127.0.0.1")
    zone.txt("_dmarc.other.example", "v=DMARC1; p=reject")
    resolver = zone.resolver()

    for name in ("partner.example", "Other.Example.", "example"):
        with pytest.raises(dns.resolver.NoAnswer):
            resolver.resolve(name, "MX")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("www.partner.example", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("ample", "MX")  # a suffix of the text, not a parent
    assert [q.outcome for q in zone.queries] == ["NOERROR"] * 3 + ["NXDOMAIN"] * 2


def test_negative_answers_carry_no_soa_so_no_resolver_caches_them(
    smtpsink: Mailbox,
) -> None:
    # RFC 2308 5: a denial without an SOA is not cached; zones change from
    # one test to the next, and a caching resolver in between kept the old
    # "no such name" for the SOA's minimum TTL.
    zone = smtpsink.dns
    zone.a("mail.partner.example", "127.0.0.1")
    for name, rcode in (
        ("nowhere.example.", dns.rcode.NXDOMAIN),
        ("partner.example.", dns.rcode.NOERROR),  # no data
    ):
        query = dns.message.make_query(name, "MX")
        answer = dns.query.udp(query, zone.host, port=zone.port, timeout=10)
        assert answer.rcode() == rcode
        assert answer.answer == []
        assert answer.authority == []


def test_servfail_a_number_of_times(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("flaky.example", [(10, smtpsink)])
    zone.servfail("flaky.example", times=1)
    resolver = zone.resolver()

    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        resolver.resolve("flaky.example", "MX")
    assert texts(resolver.resolve("flaky.example", "MX")) == ["10 mx1.flaky.example."]
    assert [q.outcome for q in zone.queries] == ["SERVFAIL", "NOERROR"]


def test_timeout_never_answers(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("slow.example", [(10, smtpsink)])
    zone.timeout("slow.example")

    with pytest.raises(dns.exception.Timeout):
        zone.resolver(lifetime=0.3).resolve("slow.example", "MX")
    # The stub records a question as it handles it: maybe after the timeout.
    smtpsink.wait_until(lambda: zone.queries)
    assert {q.outcome for q in zone.queries} == {"no answer"}


# -- failures through the fault API, over UDP and TCP -------------------------------------


def ask(zone: DNSZone, name: str, rdtype: str, transport: str) -> dns.message.Message:
    """One query with dnspython's own client (no resolver retries)."""
    query = dns.message.make_query(name, rdtype)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    return send(query, zone.host, timeout=10, port=zone.port)


def rcode(response: dns.message.Message) -> str:
    return dns.rcode.to_text(response.rcode())


def test_a_compiled_pattern_sees_the_name_in_lower_case(smtpsink: Mailbox) -> None:
    # A resolver may vary the case of the names it asks (0x20 encoding): a
    # rule must not catch only some spellings (found by a fuzz run).
    zone = smtpsink.dns
    zone.mx("rx.example", [(10, smtpsink)])
    smtpsink.fail("DNS:MX", 550, match=re.compile(r"^rx\.example$"))
    for spelling in ("rx.example", "RX.example", "rX.ExAmPlE."):
        assert rcode(ask(zone, spelling, "MX", "udp")) == "REFUSED", spelling
    # The record keeps the name as it was asked.
    assert [q.name for q in zone.queries] == [
        "rx.example.",
        "RX.example.",
        "rX.ExAmPlE.",
    ]


def test_a_match_is_the_name_as_the_zone_writes_it(smtpsink: Mailbox) -> None:
    # A Unicode match was compared with the question's A-labels: the rule
    # never fired, and a "resolver handles SERVFAIL" test tested nothing.
    zone = smtpsink.dns
    zone.mx("exämple.com", [(10, smtpsink)])
    rule = smtpsink.fail("DNS:MX", 451, match="exämple.com")
    assert rcode(ask(zone, "xn--exmple-cua.com", "MX", "udp")) == "SERVFAIL"
    assert rule.seen == 1
    # An address could never match a question.
    with pytest.raises(
        FaultError,
        match=r"^match at DNS:A is the domain name asked about, got the address "
        r"'ann@example\.com'$",
    ):
        smtpsink.fail("DNS:A", 451, match="ann@example.com")
    with pytest.raises(FaultError, match=r"^match at DNS:A: the name 'a\.\.b' is no"):
        smtpsink.fail("DNS:A", 451, match="a..b")
    with pytest.raises(FaultError, match=r"is a wildcard, which the stub does not"):
        smtpsink.fail("DNS:A", 451, match="*.example")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_fail_answers_servfail_for_4xx_and_refused_for_5xx(
    smtpsink: Mailbox, transport: str
) -> None:
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    smtpsink.fail("DNS:MX", 451, match="partner.example")
    smtpsink.fail("DNS:A", 550, match="MX1.Partner.Example.")
    resolver = zone.resolver()

    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        resolver.resolve("partner.example", "MX", tcp=transport == "tcp")
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        resolver.resolve("mx1.partner.example", "A", tcp=transport == "tcp")
    # Other types and names are answered from the zone.
    assert rcode(ask(zone, "partner.example", "TXT", transport)) == "NOERROR"
    assert rcode(ask(zone, "other.example", "MX", transport)) == "NXDOMAIN"
    assert [(q.transport, q.outcome, q.note) for q in zone.queries][:2] == [
        (transport, "SERVFAIL", "fault: 451"),
        (transport, "REFUSED", "fault: 550"),
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_hang_never_answers(smtpsink: Mailbox, transport: str) -> None:
    zone = smtpsink.dns
    zone.mx("slow.example", [(10, smtpsink)])
    fault = smtpsink.hang("DNS:QUERY", match="slow.example")

    with pytest.raises(dns.exception.Timeout):
        zone.resolver(lifetime=0.3).resolve(
            "slow.example", "MX", tcp=transport == "tcp"
        )
    # The stub records a question as it handles it: maybe after the timeout.
    smtpsink.wait_until(lambda: fault.fired >= 1 and bool(zone.queries))
    assert {(q.outcome, q.note) for q in zone.queries} == {("no answer", "fault: hang")}
    # Once the rule is gone, the same question is answered.
    fault.remove()
    assert rcode(ask(zone, "slow.example", "MX", transport)) == "NOERROR"


def test_disconnect_closes_tcp_and_is_silent_over_udp(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.a("h.example", "127.0.0.1")
    smtpsink.disconnect("DNS:A", match="h.example")

    with pytest.raises(EOFError):  # dnspython: the server closed the connection
        ask(zone, "h.example", "A", "tcp")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(
            dns.message.make_query("h.example", "A"), zone.host, 0.3, zone.port
        )
    assert [(q.transport, q.outcome, q.note) for q in zone.queries] == [
        ("tcp", "no answer", "fault: disconnect"),
        ("udp", "no answer", "fault: disconnect"),
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_delay_gives_a_late_answer(smtpsink: Mailbox, transport: str) -> None:
    zone = smtpsink.dns
    zone.a("late.example", "127.0.0.1")
    smtpsink.delay("DNS:A", 0.2, match="late.example")

    start = time.monotonic()
    answer = zone.resolver(lifetime=30).resolve(
        "late.example", "A", tcp=transport == "tcp"
    )
    # Late by the delay, as the sink's loop counts it: uvloop (the speed
    # extra) keeps time in whole milliseconds, read from the coarse clock on
    # kernels ticking at 1000 Hz, so its timer may come due up to about 2 ms
    # before time.monotonic() says the delay is over.
    assert time.monotonic() - start >= 0.19
    assert texts(answer) == ["127.0.0.1"]
    (query,) = zone.queries
    assert (query.outcome, query.note) == ("NOERROR", "answered after 0.2s")


def _tcp_answers(client: socket.socket, count: int) -> list[dns.message.Message]:
    """The next ``count`` answers on a TCP connection, in the order they come."""
    stream = client.makefile("rb")
    answers = []
    for _ in range(count):
        size = int.from_bytes(stream.read(2), "big")
        answers.append(dns.message.from_wire(stream.read(size)))
    return answers


def test_a_delayed_answer_over_tcp_holds_up_no_other_query(smtpsink: Mailbox) -> None:
    # Two queries on one TCP connection (as a client asking for A and AAAA
    # at once does): the other is answered at once, ahead of the late one
    # (RFC 7766 6.2.1.1), as over UDP; it waited behind it for the delay.
    zone = smtpsink.dns
    zone.a("late.example", "127.0.0.1")
    zone.a("prompt.example", "127.0.0.2")
    smtpsink.delay("DNS:A", 3600, match="late.example")
    late = dns.message.make_query("late.example", "A", id=1)
    prompt = dns.message.make_query("prompt.example", "A", id=2)
    with socket.create_connection((zone.host, zone.port), timeout=30) as client:
        for query in (late, prompt):
            wire = query.to_wire()
            client.sendall(len(wire).to_bytes(2, "big") + wire)

        (first,) = _tcp_answers(client, 1)

    assert first.id == prompt.id
    assert [rdata.to_text() for rdata in first.answer[0]] == ["127.0.0.2"]
    assert [q.note for q in zone.queries] == ["answered after 3600s", ""]


def test_a_tcp_client_that_closes_its_side_still_gets_its_late_answer(
    smtpsink: Mailbox,
) -> None:
    zone = smtpsink.dns
    zone.a("late.example", "127.0.0.1")
    smtpsink.delay("DNS:A", 0.2, match="late.example")
    query = dns.message.make_query("late.example", "A", id=7).to_wire()
    with socket.create_connection((zone.host, zone.port), timeout=30) as client:
        client.sendall(len(query).to_bytes(2, "big") + query)
        client.shutdown(socket.SHUT_WR)  # asked all it will ask

        (answer,) = _tcp_answers(client, 1)
        assert client.recv(1) == b""  # then the stub closes

    assert answer.id == 7
    assert [rdata.to_text() for rdata in answer.answer[0]] == ["127.0.0.1"]


def test_a_tcp_client_waiting_for_a_late_answer_is_not_idle(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle limit is for clients that hold a connection for nothing, not
    # for one that waits for the answer its query is delayed by.
    from pytest_smtpsink import _dns

    monkeypatch.setattr(_dns, "_TCP_IDLE", 0.2)
    zone = smtpsink.dns
    zone.a("late.example", "127.0.0.1")
    smtpsink.delay("DNS:A", 1, match="late.example")

    answer = zone.resolver(lifetime=30).resolve("late.example", "A", tcp=True)

    assert texts(answer) == ["127.0.0.1"]
    assert [(q.outcome, q.note) for q in zone.queries] == [
        ("NOERROR", "answered after 1s")
    ]


def test_a_delay_longer_than_the_resolver_waits_is_a_timeout(
    smtpsink: Mailbox,
) -> None:
    zone = smtpsink.dns
    zone.a("late.example", "127.0.0.1")
    smtpsink.delay("DNS:A", 30, match="late.example")

    with pytest.raises(dns.exception.Timeout):
        zone.resolver(lifetime=0.3).resolve("late.example", "A")


def _ask_late(zone: DNSZone, transport: str) -> socket.socket:
    """A query for late.example sent over a raw socket, left open."""
    query = dns.message.make_query("late.example", "A").to_wire()
    if transport == "udp":
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.sendto(query, (zone.host, zone.port))
    else:
        client = socket.create_connection((zone.host, zone.port), timeout=30)
        client.sendall(len(query).to_bytes(2, "big") + query)
    client.settimeout(30)
    return client


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_sink_stops_at_once_with_a_delayed_answer_pending(transport: str) -> None:
    # An hour's delay: a stop that waited for it would fail (SinkError after
    # the stop timeout) rather than pass slowly; -W error and dev mode catch
    # a task destroyed while pending or a socket left open.
    sink = SMTPSink().start()
    zone = sink.dns
    zone.a("late.example", "127.0.0.1")
    sink.delay("DNS:A", 3600, match="late.example")
    with _ask_late(zone, transport) as client:
        sink.wait_until(lambda: len(zone.queries) == 1, timeout=30)
        sink.stop()
        if transport == "tcp":
            assert client.recv(1) == b""  # closed, no answer
    (query,) = zone.queries
    assert (query.outcome, query.note) == (
        "no answer",
        "NOERROR due after 3600s, never sent: the sink stopped first",
    )


@contextlib.contextmanager
def _asking_for_big_answers(zone: DNSZone, count: int) -> Iterator[socket.socket]:
    """A TCP client with a small receive buffer that sent ``count`` queries
    for a 60 KB TXT record (published here) and has read nothing yet."""
    zone.txt("big.example", "x" * 60_000)
    query = dns.message.make_query("big.example", "TXT").to_wire()
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(30)
        client.connect((zone.host, zone.port))
        client.sendall((len(query).to_bytes(2, "big") + query) * count)
        yield client


def _read_to_the_end(client: socket.socket) -> bytes:
    """What the client is sent until the connection ends (or is reset)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := client.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("loop", LOOPS)
def test_a_sink_stops_at_once_with_answers_a_tcp_client_does_not_read(
    loop: Literal["asyncio", "uvloop"],
) -> None:
    # More unread answers than the sockets' buffers hold: the stub closed
    # the connection gracefully, which waits until they are sent. On uvloop
    # stop() (at the latest the session's end) then hung for ever, in the
    # loop's close; on asyncio the socket was left open (ResourceWarning).
    # Cut off now.
    sink = SMTPSink(event_loop=loop).start()
    zone = sink.dns
    with _asking_for_big_answers(zone, 100) as client:
        # Its answer (60 KB) is written in the step that records the query.
        sink.wait_until(lambda: len(zone.queries) >= 1, timeout=30)
        # In a thread: before, it never returned.
        stopping = threading.Thread(target=sink.stop, daemon=True)
        stopping.start()
        stopping.join(30)
        assert not stopping.is_alive()
        gc.collect()  # an unclosed transport warns as it is freed
        _read_to_the_end(client)  # what was sent, then the end
    assert {q.outcome for q in zone.queries} == {"NOERROR"}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tcp_client_done_asking_gets_every_answer_it_reads(
    loop: Literal["asyncio", "uvloop"],
) -> None:
    # Done sending (a half-close), it reads on: the stub saw the end of its
    # queries while answers were still buffered, and cut them off with the
    # connection (a client that never reads must be cut; this one reads).
    with SMTPSink(event_loop=loop) as sink:
        zone = sink.dns
        with _asking_for_big_answers(zone, 4) as client:
            client.shutdown(socket.SHUT_WR)
            # Every answer written (more than the buffers hold) before the
            # client reads a byte.
            sink.wait_until(lambda: len(zone.queries) == 4, timeout=30)
            received = _read_to_the_end(client)
    size = int.from_bytes(received[:2], "big")
    assert len(received) == 4 * (2 + size)


def test_delayed_answers_a_tcp_client_does_not_read_cut_it_off() -> None:
    # Written when due without waiting for the client to read: 2000 such
    # answers of 60 KB held 90 MB, and the connection was never cut. (A sink
    # of its own, stopped at the end: the cut connection's other delayed
    # answers are noted as never sent after it, not in the next test.)
    with SMTPSink() as sink:
        zone = sink.dns
        sink.delay("DNS:TXT", 0.01)
        with _asking_for_big_answers(zone, 100) as client:

            def cut() -> bool:
                return any(
                    q.note.startswith("closed: the client read no")
                    for q in zone.queries
                )

            sink.wait_until(cut, timeout=30)
            _read_to_the_end(client)
    (note,) = [q.note for q in zone.queries if q.outcome == "ignored"]
    assert re.fullmatch(
        r"closed: the client read no answer while \d+ bytes of delayed answers "
        r"waited",
        note,
    )


def test_a_late_answer_never_sent_says_so_and_keeps_the_other_notes(
    smtpsink: Mailbox,
) -> None:
    zone = smtpsink.dns
    smtpsink.delay("DNS:A", 3600, match="late.example")
    smtpsink.fail("DNS:A", 451, match="late.example")
    client = _ask_late(zone, "tcp")
    smtpsink.wait_until(lambda: len(zone.queries) == 1, timeout=30)
    assert zone.queries[0].note == "answered after 3600s; fault: 451"
    # The client gives up and resets the connection (a close alone may be
    # a half-close: a client may still read the answers it is owed).
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()

    smtpsink.wait_until(lambda: zone.queries[0].outcome == "no answer", timeout=30)
    (query,) = zone.queries
    assert query.note == (
        "SERVFAIL due after 3600s, never sent: its TCP connection closed first; "
        "fault: 451"
    )
    assert str(query).endswith(
        "late.example. A: no answer (SERVFAIL due after 3600s, never sent: its "
        "TCP connection closed first; fault: 451)"
    )


def _drop_a_sink_asked_late(transport: str) -> tuple[socket.socket, Any, int, int]:
    """A sink with DNS records and a delayed answer pending, dropped
    without stop(): the client, the sink's thread, SMTP and DNS ports."""
    sink = SMTPSink().start()
    zone = sink.dns
    zone.mx("partner.example", [(10, sink)])
    sink.delay("DNS:A", 3600, match="late.example")
    client = _ask_late(zone, transport)
    sink.wait_until(lambda: len(zone.queries) == 1, timeout=30)
    return client, sink._thread, sink.port, zone.port


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_dropped_sink_with_dns_records_warns_and_stops(transport: str) -> None:
    # The stub's records must not keep their zone, and so the sink, alive:
    # a sink dropped without stop() is collected, warns, and closes its
    # ports, the stub's included, as one that never used DNS does.
    import gc

    client, thread, port, dns_port = _drop_a_sink_asked_late(transport)
    with client:
        with pytest.warns(
            ResourceWarning, match=rf"unclosed SMTPSink on 127\.0\.0\.1:{port}"
        ):
            gc.collect()
        assert not thread.is_alive()
        if transport == "tcp":
            assert client.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", dns_port), timeout=5)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_times_every_and_probability_over_the_wire(
    smtpsink: Mailbox, transport: str
) -> None:
    zone = smtpsink.dns
    for name in ("times.example", "every.example", "random.example"):
        zone.a(name, "127.0.0.1")
    smtpsink.fail("DNS:A", 451, match="times.example", times=2)
    smtpsink.fail("DNS:A", 451, match="every.example", every=3)
    chance = smtpsink.fail(
        "DNS:A", 451, match="random.example", probability=0.5, seed=7
    )

    def outcomes(name: str) -> str:
        return "".join(
            "x" if rcode(ask(zone, name, "A", transport)) == "SERVFAIL" else "."
            for _ in range(12)
        )

    assert outcomes("times.example") == "xx.........."
    assert outcomes("every.example") == "..x..x..x..x"
    draws = random.Random(7)
    expected = "".join("x" if draws.random() < 0.5 else "." for _ in range(12))
    assert outcomes("random.example") == expected
    assert "x" in expected
    assert "." in expected
    assert (chance.seen, chance.fired) == (12, expected.count("x"))


def test_servfail_and_timeout_are_fault_rules_of_the_test(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    flaky = zone.servfail("flaky.example.", times=1)
    slow = zone.timeout("slow.example")

    assert smtpsink.faults == (flaky, slow)
    assert (flaky.stage, flaky.action, flaky.code, flaky.times) == (
        "DNS:QUERY",
        "reply",
        451,
        1,
    )
    assert (slow.stage, slow.action) == ("DNS:QUERY", "hang")


def test_a_question_left_unanswered_once_is_asked_again_and_answered(
    smtpsink: Mailbox,
) -> None:
    # Each try waits the whole lifetime by default (a slow answer is never
    # taken for a lost one), so timeout(name, times=1) failed the lookup as
    # timeout(name) did; a per-try timeout below the lifetime asks again.
    zone = smtpsink.dns
    zone.a("once.example", "127.0.0.1")
    zone.timeout("once.example", times=1)
    answer = zone.resolver(lifetime=3, timeout=1).resolve("once.example", "A")
    assert [record.to_text() for record in answer] == ["127.0.0.1"]
    first, *then = [q.outcome for q in zone.queries]
    assert first == "no answer"
    # Asked once more; a third time if this busy machine kept the answer
    # from the resolver past its per-try second.
    assert set(then) == {"NOERROR"}, then


def test_an_answer_slower_than_half_the_lifetime_is_still_taken(
    smtpsink: Mailbox,
) -> None:
    # With each try waiting half the lifetime (a change this session made
    # and took back), an answer delayed past it was dropped, asked again,
    # delayed again, and the lookup failed though the stub answered twice.
    zone = smtpsink.dns
    zone.a("slow.example", "127.0.0.1")
    smtpsink.delay("DNS:QUERY", 2.1)
    answer = zone.resolver(lifetime=4).resolve("slow.example", "A")
    assert [record.to_text() for record in answer] == ["127.0.0.1"]
    assert len(zone.queries) == 1


def test_as_default_points_dnspython_at_the_stub_and_restores(
    smtpsink: Mailbox,
) -> None:
    import dns.asyncresolver

    before = (dns.resolver.default_resolver, dns.asyncresolver.default_resolver)
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])

    with zone.as_default() as resolver:
        assert dns.resolver.get_default_resolver() is resolver
        assert texts(dns.resolver.resolve("partner.example", "MX")) == [
            "10 mx1.partner.example."
        ]

    assert (dns.resolver.default_resolver, dns.asyncresolver.default_resolver) == before


def test_as_default_blocks_ended_out_of_order_restore_the_first(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # Each block put back what it found: ended a then b, b put back a's
    # stub, and later tests' lookups got NXDOMAIN from it.
    import dns.asyncresolver

    before = (dns.resolver.default_resolver, dns.asyncresolver.default_resolver)
    other = smtpsink_factory(max_size=1_000_000)
    first, second = smtpsink.dns.as_default(), other.dns.as_default()
    first.__enter__()
    inner = second.__enter__()
    first.__exit__(None, None, None)
    assert dns.resolver.get_default_resolver() is inner  # still in its block
    second.__exit__(None, None, None)
    assert (dns.resolver.default_resolver, dns.asyncresolver.default_resolver) == before


def _udp_exchange(zone_host: str, port: int, payload: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(payload, (zone_host, port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def test_malformed_udp_queries_get_formerr_or_are_ignored(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00", (zone.host, zone.port))  # shorter than a header
        query = dns.message.make_query("partner.example", "MX")
        query.flags |= dns.flags.QR  # a response: never answered
        sock.sendto(query.to_wire(), (zone.host, zone.port))
    smtpsink.wait_until(lambda: len(zone.queries) == 2)

    garbage = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
    reply = _udp_exchange(zone.host, zone.port, garbage)

    assert reply is not None
    parsed = dns.message.from_wire(reply)
    assert parsed.id == 0xBEEF
    assert parsed.rcode() == dns.rcode.FORMERR
    assert parsed.flags & dns.flags.QR
    # The stub still answers proper queries.
    assert texts(zone.resolver().resolve("partner.example", "MX")) == [
        "10 mx1.partner.example."
    ]
    outcomes = [(q.outcome, q.note.split(":")[0]) for q in zone.queries]
    assert outcomes[:3] == [
        ("ignored", "1 bytes"),
        ("ignored", "a response, not a query"),
        ("FORMERR", "malformed"),
    ]


@pytest.mark.parametrize("problem", ["opcode", "questions"])
def test_a_refused_edns_query_gets_an_opt_record(
    smtpsink: Mailbox, problem: str
) -> None:
    # RFC 6891 6.1.1: an OPT in the request, an OPT in the response. A NOTIMP
    # or FORMERR without one says "no EDNS here" (dig: retry with +noedns).
    zone = smtpsink.dns
    query = dns.message.make_query("partner.example", "MX", use_edns=0)
    if problem == "opcode":
        query.set_opcode(dns.opcode.NOTIFY)
    else:
        query.question.append(query.question[0])

    reply = dns.query.udp(query, zone.host, port=zone.port, timeout=5)

    rcode = dns.rcode.NOTIMP if problem == "opcode" else dns.rcode.FORMERR
    assert (reply.rcode(), reply.edns, reply.id) == (rcode, 0, query.id)
    assert reply.opcode() == query.opcode()
    assert [q.outcome for q in zone.queries] == [dns.rcode.to_text(rcode)]
    if problem == "opcode":  # parsed, so not shown as "<malformed>"
        assert str(zone.queries[0]) == (
            "udp partner.example. MX: NOTIMP (opcode NOTIFY)"
        )


def test_garbage_over_tcp_never_stops_the_stub(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.a("host.example", "127.0.0.1")
    garbage = b"\x00\x07\x00\x00\x00"  # 7 bytes promised, 3 sent, then closed
    with socket.create_connection((zone.host, zone.port)) as sock:
        sock.sendall(garbage)
    bad = b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xff\xff\xff"
    with socket.create_connection((zone.host, zone.port)) as sock:
        sock.settimeout(5)
        sock.sendall(struct.pack("!H", len(bad)) + bad)
        size = struct.unpack("!H", sock.recv(2))[0]
        reply = dns.message.from_wire(sock.recv(size))
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.id == 0x1234

    resolver = zone.resolver()
    assert texts(resolver.resolve("host.example", "A", tcp=True)) == ["127.0.0.1"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_an_edns_version_beyond_0_gets_badvers(
    smtpsink: Mailbox, transport: str
) -> None:
    # RFC 6891 6.1.3: a responder MUST answer BADVERS to a version it does
    # not implement; it answered as if the query were EDNS 0.
    zone = smtpsink.dns
    zone.a("host.example", "127.0.0.1")
    query = dns.message.make_query("host.example", "A", use_edns=1)
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    response = send(query, zone.host, timeout=10, port=zone.port)
    assert rcode(response) == "BADVERS"
    assert response.edns == 0  # the version the stub speaks
    assert response.answer == []
    (recorded,) = zone.queries
    assert (recorded.outcome, recorded.note) == ("BADVERS", "EDNS version 1")
    # EDNS 0 is answered.
    query = dns.message.make_query("host.example", "A", use_edns=0)
    response = send(query, zone.host, timeout=10, port=zone.port)
    assert rcode(response) == "NOERROR"
    assert response.answer


def test_the_do_bit_of_a_query_is_copied_into_its_response(smtpsink: Mailbox) -> None:
    # RFC 3225 3 (a MUST): it was left off, which a DNSSEC-aware client may
    # read as a server that does not speak DNSSEC at all.
    zone = smtpsink.dns
    zone.a("host.example", "127.0.0.1")
    asked = dns.message.make_query("host.example", "A", want_dnssec=True)
    response = dns.query.udp(asked, zone.host, timeout=10, port=zone.port)
    assert response.ednsflags & dns.flags.DO
    assert response.answer
    plain = dns.message.make_query("host.example", "A", use_edns=0)
    response = dns.query.udp(plain, zone.host, timeout=10, port=zone.port)
    assert not response.ednsflags & dns.flags.DO
    # In a refusal too: a query of an opcode the stub does not serve.
    notify = dns.message.make_query("host.example", "A", want_dnssec=True)
    notify.set_opcode(dns.opcode.NOTIFY)
    response = dns.query.udp(notify, zone.host, timeout=10, port=zone.port)
    assert rcode(response) == "NOTIMP"
    assert response.ednsflags & dns.flags.DO


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_tsig_signed_query_gets_notauth_badkey(
    smtpsink: Mailbox, transport: str
) -> None:
    # RFC 8945 5.2.2: a key the server does not know is NOTAUTH with TSIG
    # error BADKEY, unsigned. It was FORMERR, which dnspython reported as
    # "response requires a TSIG but does not have one".
    zone = smtpsink.dns
    zone.a("host.example", "127.0.0.1")
    keyring = dns.tsigkeyring.from_text({"app-key.": "c2VjcmV0LWtleS1mb3ItdGVzdHM="})
    query = dns.message.make_query("host.example", "A")
    query.use_tsig(keyring, "app-key.")
    send = dns.query.udp if transport == "udp" else dns.query.tcp
    with pytest.raises(dns.tsig.PeerBadKey):
        send(query, zone.host, timeout=10, port=zone.port)
    (recorded,) = zone.queries
    assert (recorded.name, recorded.type, recorded.outcome, recorded.note) == (
        "host.example.",
        "A",
        "NOTAUTH",
        "TSIG key app-key. unknown (BADKEY): the stub has no keys",
    )
    # The reply itself, read without checking its TSIG: the request's
    # record with the error and no MAC, last in the additional section.
    reply = _udp_exchange(zone.host, zone.port, query.to_wire())
    assert reply is not None
    parsed = dns.message.from_wire(reply, keyring=False)
    assert (parsed.id, rcode(parsed)) == (query.id, "NOTAUTH")
    assert parsed.answer == []
    assert parsed.tsig is not None
    assert parsed.tsig.name == dns.name.from_text("app-key.")
    (record,) = parsed.tsig
    assert (record.error, record.mac, record.original_id) == (
        dns.rcode.BADKEY,
        b"",
        query.id,
    )


def test_a_tsig_record_out_of_place_is_still_formerr(smtpsink: Mailbox) -> None:
    # RFC 8945 5.1: the TSIG record must be the last one.
    zone = smtpsink.dns
    keyring = dns.tsigkeyring.from_text({"app-key.": "c2VjcmV0LWtleS1mb3ItdGVzdHM="})
    query = dns.message.make_query("host.example", "A")
    query.use_tsig(keyring, "app-key.")
    wire = bytearray(query.to_wire())
    wire[10:12] = (int.from_bytes(wire[10:12], "big") + 1).to_bytes(2, "big")
    after = b"\x00" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes([127, 0, 0, 1])
    reply = _udp_exchange(zone.host, zone.port, bytes(wire) + after)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    (recorded,) = zone.queries
    assert recorded.outcome == "FORMERR"


def test_a_tcp_message_cut_short_is_recorded(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    with socket.create_connection((zone.host, zone.port)) as sock:
        sock.sendall(b"\x00")  # half a length
    with socket.create_connection((zone.host, zone.port)) as sock:
        sock.sendall(b"\x00\x07\x00\x00\x00")  # 7 bytes promised, 3 sent
    with socket.create_connection((zone.host, zone.port)) as sock:
        sock.sendall(b"\x00\x0c")  # a length, and nothing after it
    with socket.create_connection((zone.host, zone.port)):
        pass  # no message at all: nothing to record

    smtpsink.wait_until(lambda: len(zone.queries) >= 3)

    assert sorted((q.transport, q.outcome, q.note) for q in zone.queries) == [
        ("tcp", "ignored", "connection closed after 0 of 12 bytes"),
        ("tcp", "ignored", "connection closed after 1 byte of a 2-byte length"),
        ("tcp", "ignored", "connection closed after 3 of 7 bytes"),
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda z: z.mx("a.example", []), "non-empty list"),
        (lambda z: z.mx("a.example", [(70000, "mx.example")]), "0-65535"),
        (lambda z: z.mx("a.example", [(10, 42)]), "a sink, a mailbox or a host"),
        (lambda z: z.mx("a.example", ["mx.example"]), "each MX entry"),
        (lambda z: z.a("h.example", "::1"), "not an IPv4 address"),
        (lambda z: z.aaaa("h.example", "127.0.0.1"), "not an IPv6 address"),
        (lambda z: z.a("h.example"), "at least one address"),
        (lambda z: z.a("", "127.0.0.1"), "must be a domain name"),
        (lambda z: z.a("x" * 70 + ".example", "127.0.0.1"), "is not a domain name"),
        (lambda z: z.servfail("a.example", times=0), "times must be"),
        (lambda z: z.txt("a.example"), "at least one string"),
        # Published as the literal label "*": every name it should cover
        # was NXDOMAIN.
        (lambda z: z.a("*.w.example", "192.0.2.7"), "is a wildcard, which the stub"),
        (lambda z: z.mx("*.m.example", [(10, "mx.example")]), "is a wildcard"),
        (lambda z: z.txt("*.t.example", "x"), "is a wildcard"),
        # Nor a failure of names it would cover: it never fired.
        (lambda z: z.servfail("*.t.example"), "is a wildcard"),
        (lambda z: z.timeout("*.t.example"), "is a wildcard"),
        (lambda z: z.a("h.example", 5), "^5 is not an IPv4 address"),
        (lambda z: z.aaaa("h.example", b"\0" * 16), "is not an IPv6 address"),
        (lambda z: z.null_mx(None), "^domain must be a domain name, got None$"),
        (lambda z: z.nxdomain(5), "^name must be a domain name, got 5$"),
        (lambda z: z.timeout(None), "^name must be a domain name, got None$"),
        (lambda z: z.resolver(lifetime=-1), r"^lifetime must be .* > 0, got -1$"),
        (lambda z: z.resolver(lifetime="5"), r"^lifetime must be .*, got the str '5'$"),
        (lambda z: z.resolver(lifetime=float("nan")), r"^lifetime must be"),
        (lambda z: z.resolver(lifetime=True), r"^lifetime must be"),
        (
            lambda z: z.resolver(lifetime=1, timeout=2),
            r"^timeout \(each try\) must be a number of seconds > 0 and at most "
            r"the lifetime \(1\), got 2$",
        ),
        (lambda z: z.as_default(timeout=0).__enter__(), r"^timeout \(each try\)"),
        (lambda z: z.as_default(lifetime=0).__enter__(), "^lifetime must be"),
    ],
)
def test_bad_records_are_refused_clearly(
    smtpsink: Mailbox, call: Callable[..., object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(smtpsink.dns)


def test_a_name_published_on_another_sinks_stub_is_named_as_such(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # Each sink has a stub of its own: records published through another
    # sink's dns got a bare NXDOMAIN from this one, with nothing said.
    partner = smtpsink_factory(hostname="partner.test")
    partner.dns.mx("partner.example", [(10, partner)])
    with pytest.raises(dns.resolver.NXDOMAIN):
        smtpsink.dns.resolver().resolve("partner.example", "MX")
    with pytest.raises(dns.resolver.NXDOMAIN):
        smtpsink.dns.resolver().resolve("nowhere.example", "MX")
    # A stub that only denies a name (nxdomain()) publishes nothing.
    partner.dns.nxdomain("gone.example")
    with pytest.raises(dns.resolver.NXDOMAIN):
        smtpsink.dns.resolver().resolve("gone.example", "MX")
    asked, nowhere, gone = smtpsink.dns.queries
    assert gone.note == ""
    assert (asked.outcome, nowhere.outcome, nowhere.note) == ("NXDOMAIN",) * 2 + ("",)
    assert asked.note.startswith("published on another sink's stub (")
    assert asked.note.endswith("): publish and resolve through the same sink's dns")
    # The test's other sink is among them (any live sink of the process
    # that publishes the name is listed).
    assert f"{partner.dns.host}:{partner.dns.port}" in asked.note


def test_mx_refuses_the_same_sink_twice_for_a_domain(
    smtpsink: Mailbox, smtpsink_factory: Factory
) -> None:
    # The same settings give the same sink: a "backup" MX that was the
    # first one was published without a word, and fallback tests lied.
    zone = smtpsink.dns
    same = smtpsink_factory()
    assert same.port == smtpsink.port
    message = (
        f"MX entry 2 is the same server as mx1.partner.example (127.0.0.1 port "
        f"{smtpsink.port}): smtpsink_factory() with the same settings returns "
        "the same sink; give the other one a setting of its own "
        "(hostname='backup.test')"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        zone.mx("partner.example", [(10, smtpsink), (20, same)])
    assert zone.mx("partner.example", [(10, smtpsink)]) == ["mx1.partner.example"]
    with pytest.raises(ValueError, match=r"^MX entry 1 is the same server as mx1\."):
        zone.mx("partner.example", [(20, same)])  # in a later call too
    # Through the other mailbox's zone too: one stub, one sink (it took it,
    # and named it mx1 a second time).
    with pytest.raises(ValueError, match=r"^MX entry 1 is the same server as mx1\."):
        same.dns.mx("partner.example", [(20, same)])
    backup = smtpsink_factory(hostname="backup.test")
    assert zone.mx("partner.example", [(20, backup)]) == ["mx2.partner.example"]
    assert zone.mx("other.example", [(10, same)]) == ["mx1.other.example"]
    # Another mailbox's zone counts on from this one's records.
    third = smtpsink_factory(hostname="third.test")
    assert same.dns.mx("partner.example", [(30, third)]) == ["mx3.partner.example"]


def test_a_domain_ending_in_an_at_sign_is_no_address(smtpsink: Mailbox) -> None:
    # It said "is an address: give its domain ('')".
    message = "domain 'p.example@' is not a domain name: a domain has no '@'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        smtpsink.dns.mx("p.example@", [(10, smtpsink)])


@pytest.mark.parametrize("target", ["mx.partner.example", "sink"])
def test_mx_refuses_an_address_for_a_domain(smtpsink: Mailbox, target: str) -> None:
    # With a host name as target, it published MX records under
    # "bob@partner.example", and a lookup of partner.example found none.
    message = (
        "domain 'bob@partner.example' is an address: give its domain "
        "('partner.example')"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        smtpsink.dns.mx(
            "bob@partner.example", [(10, smtpsink if target == "sink" else target)]
        )


@pytest.mark.parametrize("domain", [None, 5, ""])
def test_mx_refuses_a_domain_that_is_not_a_name_for_any_target(
    smtpsink: Mailbox, domain: object
) -> None:
    for target in (smtpsink, "mx.example"):
        with pytest.raises(ValueError, match="domain must be a domain name, got"):
            smtpsink.dns.mx(domain, [(10, target)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "host", "message"),
    [
        (
            "a.example",
            "not a host name!",
            r"^MX host 'not a host name!' is not a host name: its label "
            r"'not a host name!' has characters other than letters, digits "
            r"and hyphens$",
        ),
        ("a.example", "mail_1.a.example", r"label 'mail_1' has characters other"),
        ("a.example", "-mx.a.example", r"label '-mx' starts or ends with a hyphen"),
        ("a.example", "127.0.0.1", r"^MX host '127.0.0.1' is an address, .* a\(\)"),
        (
            "a b.example",
            None,
            r"^domain 'a b.example' cannot name the sink's MX host "
            r"\(mx1.a b.example\): its label 'a b' has characters other",
        ),
        (
            "x" * 63 + "." + "y" * 63 + "." + "z" * 63 + "." + "w" * 61,
            None,
            r"^domain 'xxx.*' is too long for the sink's MX host name "
            r"mx1\.<domain> \(255 bytes at most\)$",
        ),
    ],
)
def test_a_bad_mx_host_name_is_named_with_the_reason(
    smtpsink: Mailbox, domain: str, host: str | None, message: str
) -> None:
    zone = smtpsink.dns

    with pytest.raises(ValueError, match=message) as refused:
        zone.mx(domain, [(10, smtpsink if host is None else host)])

    assert "is not a MX record" not in str(refused.value)  # no internal text


def test_zones_belong_to_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import dns.resolver, pytest

        def test_declares(smtpsink):
            smtpsink.dns.mx("partner.example", [(10, smtpsink)])
            assert smtpsink.dns.resolver().resolve("partner.example", "MX")
            smtpsink.dns.servfail("failing.example")
            smtpsink.dns.timeout("silent.example")
            smtpsink.fail("DNS:TXT", 550)

        def test_sees_nothing(smtpsink):
            assert smtpsink.faults == ()
            resolver = smtpsink.dns.resolver(lifetime=10)
            for name in ("partner.example", "failing.example", "silent.example"):
                with pytest.raises(dns.resolver.NXDOMAIN):
                    resolver.resolve(name, "MX")
            with pytest.raises(dns.resolver.NXDOMAIN):
                resolver.resolve("partner.example", "TXT")
            assert [q.outcome for q in smtpsink.dns.queries] == ["NXDOMAIN"] * 4
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_a_zone_kept_past_its_test_is_refused(pytester: pytest.Pytester) -> None:
    # It listed the next test's lookups as its own, and its resolver asked
    # the next test's records, where a kept mailbox raises.
    pytester.makepyfile(
        """
        import pytest

        KEPT = {}

        def test_keeps(smtpsink):
            KEPT["zone"] = smtpsink.dns
            KEPT["zone"].a("old.example", "127.0.0.1")

        def test_reads_it(smtpsink):
            smtpsink.dns.a("new.example", "127.0.0.1")
            smtpsink.dns.resolver().resolve("new.example", "A")
            for read in (lambda: KEPT["zone"].queries, KEPT["zone"].resolver,
                         lambda: KEPT["zone"].smtp_ports):
                with pytest.raises(RuntimeError, match="test_keeps, which has ended"):
                    read()
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_dnspython_loads_only_when_the_stub_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pytest_smtpsink import SMTPSink\n"
        "with SMTPSink() as sink:\n"
        "    before = 'dns' in sys.modules\n"
        "    sink.dns.a('h.example', '127.0.0.1')\n"
        "    print(before, 'dns' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "True"]


def test_a_dnspython_older_than_the_stub_needs_is_named() -> None:
    """dkimpy brings dnspython 2.0 or later; the stub needs 2.7, and with
    2.6 a TSIG-signed query got FORMERR with an AttributeError's text as
    its reason (helper-233 F2)."""
    import subprocess
    import sys

    code = (
        "import dns.version\n"
        "dns.version.MAJOR, dns.version.MINOR = 2, 6\n"
        "dns.version.version = '2.6.1'\n"
        "from pytest_smtpsink import SMTPSink\n"
        "with SMTPSink() as sink:\n"
        "    sink.dns\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.rstrip().endswith(
        "ImportError: smtpsink.dns needs dnspython 2.7 or later, and 2.6.1 is "
        "installed: pip install 'pytest-smtpsink[dns]'"
    ), out.stderr


def test_dig_reads_the_stubs_answers(smtpsink: Mailbox) -> None:
    # An independent DNS implementation (BIND's dig) as the client: the
    # stub's wire format is not only dnspython talking to itself.
    import re
    import subprocess

    import external

    dig = external.require("dig", "apt-get install bind9-dnsutils")
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    for n in range(30):
        zone.txt("big.example", f"record {n} " + "x" * 60)

    def ask(*args: str) -> str:
        command = [dig, f"@{zone.host}", "-p", str(zone.port), "+tries=1", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False
        )
        return done.stdout

    mx = ask("partner.example", "MX")
    assert "status: NOERROR" in mx
    assert re.search(r"flags: qr aa", mx)
    assert re.search(
        r"partner\.example\.\s+0\s+IN\s+MX\s+10 mx1\.partner\.example\.", mx
    )
    address = ask("+tcp", "mx1.partner.example", "A")
    assert re.search(r"mx1\.partner\.example\.\s+0\s+IN\s+A\s+127\.0\.0\.1", address)
    assert "status: NXDOMAIN" in ask("nowhere.example", "MX")
    big = ask("big.example", "TXT")
    assert "Truncated, retrying in TCP mode" in big
    assert len(re.findall(r"^big\.example\.\s+0\s+IN\s+TXT\s", big, re.M)) == 30
    assert "(TCP)" in big
    assert [q.transport for q in zone.queries][-2:] == ["udp", "tcp"]


def test_a_tcp_client_that_stalls_is_closed_and_recorded(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One that sends nothing, one that never finishes its length or its
    # message, and one that asks and never reads the answers: each held its
    # connection (the last until the sink stopped); all are now closed
    # after the idle limit, and recorded.
    from pytest_smtpsink import _dns

    monkeypatch.setattr(_dns, "_TCP_IDLE", 0.2)
    zone = smtpsink.dns
    # About 58 KB an answer (one TCP answer holds 64 KB): a few fill the
    # sockets' buffers (the stub's send buffer holds about two).
    zone.txt("big.example", *["x" * 250] * 230)
    query = dns.message.make_query("big.example", "TXT").to_wire()
    with socket.create_connection((zone.host, zone.port), timeout=30) as silent:
        assert silent.recv(1) == b""  # closed, nothing sent
    with socket.create_connection((zone.host, zone.port), timeout=30) as halting:
        halting.sendall(b"\x00")  # half the length
        assert halting.recv(1) == b""
    with socket.create_connection((zone.host, zone.port), timeout=30) as stalled:
        stalled.sendall(b"\x00\x0c\x00")
        assert stalled.recv(1) == b""  # closed, nothing sent
    with socket.socket() as deaf:
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        deaf.settimeout(30)
        deaf.connect((zone.host, zone.port))
        # Far more answers than the two sockets' buffers hold.
        with contextlib.suppress(ConnectionError):
            for _ in range(2000):
                deaf.sendall(len(query).to_bytes(2, "big") + query)
        smtpsink.wait_until(
            lambda: len(zone.queries) >= 4 and zone.queries[-1].outcome == "ignored",
            timeout=120,  # a guard against a hang, not a measure of speed
        )
    notes = [q.note for q in zone.queries if q.outcome == "ignored"]
    assert notes == [
        "closed: nothing sent for 0.2 s",
        "closed: no end of its 2-byte length for 0.2 s",
        "closed: no end of its 12-byte message for 0.2 s",
        "closed: the client read no answer for 0.2 s",
    ]


def test_any_lists_every_record_and_meta_types_are_refused(smtpsink: Mailbox) -> None:
    # They all got an empty NOERROR: as if the name had no records at all.
    zone = smtpsink.dns
    zone.mx("shop.example", [(10, "mx.shop.example")])
    zone.txt("shop.example", "v=spf1 -all")

    answer = ask(zone, "shop.example", "ANY", "tcp")
    assert sorted(rrset.to_text() for rrset in answer.answer) == [
        "shop.example. 0 IN MX 10 mx.shop.example.",
        'shop.example. 0 IN TXT "v=spf1 -all"',
    ]
    assert rcode(ask(zone, "shop.example", "AXFR", "tcp")) == "REFUSED"
    assert rcode(ask(zone, "shop.example", "OPT", "udp")) == "FORMERR"
    assert [(q.type, q.outcome, q.note) for q in zone.queries][1:] == [
        ("AXFR", "REFUSED", "zone transfers are not served"),
        ("OPT", "FORMERR", "OPT is not a type to ask for"),
    ]


def test_a_tcp_client_that_resets_is_recorded_and_leaves_no_noise(
    smtpsink: Mailbox,
) -> None:
    zone = smtpsink.dns
    query = dns.message.make_query("host.example", "A").to_wire()
    # Connections an earlier test left open (the stub keeps them while idle).
    earlier = set(zone._server._tcp_writers)
    for data in (b"\x00\x07\x00\x00\x00", b"\x00", b""):
        with socket.create_connection((zone.host, zone.port), timeout=30) as sock:
            # A query answered first: the stub is serving this connection.
            sock.sendall(len(query).to_bytes(2, "big") + query)
            size = int.from_bytes(_receive_exactly(sock, 2), "big")
            _receive_exactly(sock, size)
            sock.sendall(data)
            # Closing with a zero linger time resets the connection.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    # Each connection ended, once the stub has handled its end.
    smtpsink.wait_until(lambda: zone._server._tcp_writers <= earlier)

    queries = [q for q in zone.queries if q.name is None]  # not the answered
    # How much of a message came before the reset is the kernel's timing
    # (a reset may discard what was not read yet): a reset inside a message
    # is recorded as such, one between messages is not recorded.
    assert {(q.transport, q.outcome) for q in queries} <= {("tcp", "ignored")}
    assert {q.note for q in queries} <= {
        "connection reset before its 2-byte length was read",
        "connection reset inside its 7-byte message",
    }
    assert unread_future_errors() == []


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the stub closed after {len(data)} of {size} bytes"
        data += chunk
    return data


# -- failure reports: what the stub was asked ----------------------------------------


def test_a_report_with_no_client_lists_the_lookups_and_the_name_meant(
    smtpsink: Mailbox,
) -> None:
    # Two users' report: the application looked up a mistyped domain, got
    # NXDOMAIN and sent nothing, and the failure spoke only of the host and
    # port and of Django's in-memory backend.
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    with pytest.raises(dns.resolver.NXDOMAIN):
        zone.resolver().resolve("partnr.example", "MX")

    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent(rcpt_to="bob@partner.example")

    assert str(caught.value) == (
        "expected at least 1 message matching rcpt_to='bob@partner.example'; "
        "found 0.\n"
        "No messages arrived in this test.\n"
        f"Hint: no client connected to {smtpsink.url} in this test either; "
        "the DNS stub was asked in this test:\n"
        "  partnr.example. MX -> NXDOMAIN (published: partner.example.)"
    )


def test_the_lookups_in_a_report_are_grouped_and_capped(smtpsink: Mailbox) -> None:
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    zone.servfail("flaky.example")
    resolver = zone.resolver()
    for _ in range(2):
        resolver.resolve("partner.example", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("mx1.partner.example", "AAAA")
    with pytest.raises(dns.resolver.NoNameservers):
        resolver.resolve("flaky.example", "MX")
    for name in ("unrelated.test", "other.test", "third.test"):
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(name, "A")

    with pytest.raises(AssertionError) as caught:
        smtpsink.wait_for(timeout=0.01)

    hint = str(caught.value).split("\n")[2:]
    assert hint == [
        f"Hint: no client connected to {smtpsink.url} in this test either; "
        "the DNS stub was asked in this test:",
        "  partner.example. MX -> NOERROR: 10 mx1.partner.example. (asked 2 times)",
        "  mx1.partner.example. AAAA -> NOERROR",
        "  flaky.example. MX -> SERVFAIL (fault: 451)",
        "  unrelated.test. A -> NXDOMAIN",  # nothing published is close
        "  other.test. A -> NXDOMAIN",
        "  ... and 1 more",
    ]


def test_a_report_whose_lookups_all_succeeded_keeps_the_usual_advice(
    smtpsink: Mailbox,
) -> None:
    # Every lookup answered: the lookups hint took the place of the advice
    # about the host and port, which is then the likelier cause (the
    # application got the MX host and used port 25, say).
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    zone.resolver().resolve("partner.example", "MX")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert str(caught.value).split("\n")[2:] == [
        f"Hint: no client connected to {smtpsink.url} in this test either: is "
        "the code under test given this host and port? A test setting may "
        "also keep mail in memory (Django's test runner and pytest-django, "
        "Flask-Mailman and Flask-Mail with TESTING=True, unless "
        "MAIL_BACKEND='smtp' or MAIL_SUPPRESS_SEND=False is set "
        "before the extension starts): see the Recipes "
        "page of the docs. Or it sends in the background (a thread, a task "
        "queue) and has not connected yet: wait for the mail with wait_for(...).",
        "Hint: the DNS stub answered every lookup in this test:",
        "  partner.example. MX -> NOERROR: 10 mx1.partner.example.",
    ]


def test_a_report_says_that_a_stub_was_not_asked_in_its_scope(
    smtpsink: Mailbox,
) -> None:
    # Records published, but nothing looked up: the usual hint, and that
    # the stub was not asked.
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    usual = (
        f"Hint: no client connected to {smtpsink.url} {{}} either: is the "
        "code under test given this host and port? A test setting may also "
        "keep mail in memory (Django's test runner and pytest-django, "
        "Flask-Mailman and Flask-Mail with TESTING=True, unless "
        "MAIL_BACKEND='smtp' or MAIL_SUPPRESS_SEND=False is set "
        "before the extension starts): see the Recipes "
        "page of the docs. Or it sends in the background (a thread, a task "
        "queue) and has not connected yet: wait for the mail with wait_for(...)."
    )
    unasked = (
        "  (the DNS stub holds records for mx1.partner.example., partner.example., "
        "but nothing asked it: does the application resolve through it, with "
        "smtpsink.dns.resolver() or smtpsink.dns.as_default()?)"
    )
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert str(caught.value).split("\n")[2:] == [usual.format("in this test"), unasked]

    # Lookups before clear() are not in a report about what came since.
    zone.resolver().resolve("partner.example", "MX")
    smtpsink.clear()
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert str(caught.value).split("\n")[2:] == [usual.format("since clear()"), unasked]


def test_a_report_says_when_records_were_published_but_never_asked_for(
    smtpsink: Mailbox,
) -> None:
    # The commonest mistake with the stub: the application resolved through
    # the system's resolver, and the report gave only the host-and-port hint.
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, smtpsink)])
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert str(caught.value).splitlines()[-1] == (
        "  (the DNS stub holds records for mx1.partner.example., partner.example., "
        "but nothing asked it: does the application resolve through it, with "
        "smtpsink.dns.resolver() or smtpsink.dns.as_default()?)"
    )
    # Asked: the lookups are listed instead.
    zone.resolver().resolve("partner.example", "MX")
    with pytest.raises(AssertionError) as caught:
        smtpsink.assert_sent()
    assert "nothing asked it" not in str(caught.value)
