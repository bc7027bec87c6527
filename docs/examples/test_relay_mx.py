"""The examples of the "Relay and MX" page, run as tests."""

from __future__ import annotations

import smtplib
import socket

import dns.resolver
import pytest
from mx_app import (
    MaybeDelivered,
    MXDelivery,
    NoPortForHost,
    PartialDelivery,
    PermanentFailure,
    TemporaryFailure,
)

from pytest_smtpsink import RelayError, SinkError

RAW = b"From: list@forwarder.example\r\nSubject: News\r\n\r\nHello.\r\n"


# -- release ------------------------------------------------------------------


def test_release(smtpsink, smtpsink_factory):
    upstream = smtpsink_factory(hostname="upstream.test")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], RAW)
    message = smtpsink.wait_for(rcpt_to="ann@example.com")

    delivery = smtpsink.release(message, upstream.host, upstream.port)

    assert delivery.code == 250
    print(delivery.format_transcript())  # the conversation with the upstream
    relayed = upstream.wait_for()
    assert relayed.raw.endswith(message.raw)  # after one Received: header
    assert relayed.envelope.rcpt_to == ("ann@example.com",)


def test_release_over_tls_with_login(smtpsink, smtpsink_factory):
    upstream = smtpsink_factory(tls="starttls", auth={"relay": "relay-password"})
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], RAW)
    message = smtpsink.wait_for()

    smtpsink.release(
        message,
        upstream.host,
        upstream.port,
        tls="starttls",
        ca_file=upstream.ca_path,  # trust the upstream's certificate
        auth=("relay", "relay-password"),
        rcpt_to=["archive@example.com"],  # another envelope
    )

    assert upstream.wait_for().session.authenticated_as == "relay"


def test_release_refused(smtpsink, smtpsink_factory):
    upstream = smtpsink_factory(hostname="upstream.test")
    upstream.fail("RCPT", 550, "5.1.1 no such user")
    with smtplib.SMTP(smtpsink.host, smtpsink.port) as client:
        client.sendmail("app@example.com", ["ann@example.com"], RAW)

    with pytest.raises(RelayError) as refused:
        smtpsink.release(smtpsink.wait_for(), upstream.host, upstream.port)

    assert refused.value.code == 550
    assert refused.value.stage == "RCPT"


# -- automatic relay ------------------------------------------------------------


def test_automatic_relay(smtpsink_factory):
    upstream = smtpsink_factory(hostname="upstream.test")
    sink = smtpsink_factory(
        relay=f"smtp://127.0.0.1:{upstream.port}",
        relay_to=r".*@partner\.example",  # only these recipients leave
    )
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("app@example.com", ["bob@partner.example"], RAW)
        client.sendmail("app@example.com", ["ann@example.com"], RAW)
    relayed, kept = sink.wait_for(2)
    sink.wait_until(lambda: relayed.relay.done)  # the relay runs in the background

    assert relayed.relay.status == "relayed"
    assert relayed.relay.code == 250
    assert kept.relay.status == "not-matched"
    upstream.assert_sent(1, rcpt_to="bob@partner.example")


# -- the MX stub ------------------------------------------------------------------


def test_mx_lookup(smtpsink):
    smtpsink.dns.mx("partner.example", [(10, smtpsink)])

    answer = smtpsink.dns.resolver().resolve("partner.example", "MX")

    assert [mx.to_text() for mx in answer] == ["10 mx1.partner.example."]
    assert smtpsink.dns.smtp_ports == {"mx1.partner.example": smtpsink.port}


@pytest.fixture
def stub_dns(smtpsink):
    """dnspython's default resolver asks the stub during the test."""
    with smtpsink.dns.as_default():
        yield smtpsink.dns


def test_default_resolver(stub_dns, smtpsink):
    stub_dns.txt("partner.example", "v=spf1 ip4:127.0.0.1 -all")

    (record,) = dns.resolver.resolve("partner.example", "TXT")

    assert record.strings == (b"v=spf1 ip4:127.0.0.1 -all",)


# -- scenarios: an application that delivers by MX -----------------------------


def mx_delivery(zone, ports=None):
    """The application, configured for tests: the stub as its resolver and
    each MX host's SMTP port from the stub (MX records cannot carry one)."""
    ports = ports or zone.smtp_ports
    return MXDelivery(resolver=zone.resolver(), port_for=ports.__getitem__)


@pytest.mark.parametrize("code", [421, 554])
def test_falls_back_to_the_second_mx_when_the_first_refuses(
    smtpsink, smtpsink_factory, code
):
    backup = smtpsink_factory(hostname="backup.test")
    smtpsink.dns.mx("partner.example", [(10, smtpsink), (20, backup)])
    smtpsink.fail("CONNECT", code)  # the first MX turns everyone away

    used = mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example", ["bob@partner.example"], RAW
    )

    assert used == {"partner.example": "mx2.partner.example"}
    backup.assert_sent(1, rcpt_to="bob@partner.example")
    smtpsink.assert_nothing_sent()


def test_falls_back_to_the_second_mx_when_the_first_is_down(smtpsink, smtpsink_factory):
    # A port held by a socket that never listens: connecting is refused, and
    # no other server can take the port while the socket holds it.
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        zone = smtpsink.dns
        zone.mx("partner.example", [(10, "dead.partner.example"), (20, smtpsink)])
        zone.a("dead.partner.example", "127.0.0.1")
        ports = {**zone.smtp_ports, "dead.partner.example": dead.getsockname()[1]}

        used = mx_delivery(zone, ports).deliver(
            "list@forwarder.example", ["bob@partner.example"], RAW
        )

    assert used == {"partner.example": "mx2.partner.example"}
    smtpsink.assert_sent(1, rcpt_to="bob@partner.example")


def test_a_reply_lost_after_the_message_is_not_sent_elsewhere(
    smtpsink, smtpsink_factory
):
    backup = smtpsink_factory(hostname="backup.test")
    smtpsink.dns.mx("partner.example", [(10, smtpsink), (20, backup)])
    # The first MX keeps the message and drops the connection before its
    # reply: sent to the second, the recipient would have it twice.
    smtpsink.disconnect("EOD", store=True)

    with pytest.raises(MaybeDelivered, match="it may have been delivered"):
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example", ["bob@partner.example"], RAW
        )

    smtpsink.assert_sent(1, rcpt_to="bob@partner.example")
    backup.assert_nothing_sent()


def test_null_mx_is_a_permanent_failure(smtpsink):
    smtpsink.dns.null_mx("nomail.example")

    with pytest.raises(PermanentFailure, match="null MX"):
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example", ["ann@nomail.example"], RAW
        )
    smtpsink.assert_nothing_sent()


def test_servfail_is_a_temporary_failure(smtpsink):
    smtpsink.dns.mx("partner.example", [(10, smtpsink)])
    smtpsink.dns.servfail("partner.example")

    with pytest.raises(TemporaryFailure, match="DNS lookup failed"):
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example", ["bob@partner.example"], RAW
        )
    assert [q.outcome for q in smtpsink.dns.queries] == ["SERVFAIL"]


def test_dns_failures_are_fault_rules(smtpsink):
    smtpsink.dns.mx("partner.example", [(10, smtpsink)])
    # The MX lookup fails once (SERVFAIL), then works: a retry delivers.
    smtpsink.fail("DNS:MX", 451, match="partner.example", times=1)
    # The MX host's address lookup never answers.
    smtpsink.hang("DNS:A", match="mx1.partner.example")
    app = mx_delivery(smtpsink.dns)
    # The app's DNS timeout, short for the test (the MX answers before the
    # hung lookup must come within it too).
    app.resolver.lifetime = 2

    with pytest.raises(TemporaryFailure, match="DNS lookup failed"):
        app.deliver("list@forwarder.example", ["bob@partner.example"], RAW)
    with pytest.raises(TemporaryFailure, match="no address"):
        app.deliver("list@forwarder.example", ["bob@partner.example"], RAW)
    assert [(q.type, q.outcome) for q in smtpsink.dns.queries][:3] == [
        ("MX", "SERVFAIL"),
        ("MX", "NOERROR"),
        ("A", "no answer"),
    ]


def test_two_domains_split_across_two_sinks(smtpsink_factory, smtpsink):
    partner = smtpsink_factory(hostname="partner.test")
    other = smtpsink_factory(hostname="other.test")
    smtpsink.dns.mx("partner.example", [(10, partner)])
    smtpsink.dns.mx("other.example", [(10, other)])

    mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example",
        ["bob@partner.example", "ann@other.example", "cat@partner.example"],
        RAW,
    )

    message = partner.assert_sent(1)
    assert message.envelope.rcpt_to == ("bob@partner.example", "cat@partner.example")
    other.assert_sent(1, rcpt_to="ann@other.example")


def test_recipients_refused_while_others_got_it_are_reported(
    smtpsink_factory, smtpsink
):
    partner = smtpsink_factory(hostname="partner.test")
    smtpsink.dns.mx("partner.example", [(10, partner)])
    smtpsink.dns.null_mx("nomail.example")
    partner.fail("RCPT", 550, "5.1.1 no such user", match="cat@partner.example")

    with pytest.raises(PartialDelivery) as partial:
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example",
            ["bob@partner.example", "cat@partner.example", "ann@nomail.example"],
            RAW,
        )

    # Bob has it; bounce Cat (refused) and Ann (her domain takes no mail).
    assert partial.value.delivered == {"partner.example": "mx1.partner.example"}
    assert {rcpt: type(error) for rcpt, error in partial.value.failed.items()} == {
        "cat@partner.example": PermanentFailure,
        "ann@nomail.example": PermanentFailure,
    }
    partner.assert_sent(1, rcpt_to="bob@partner.example")


def test_a_recipient_refused_for_good_is_not_tried_at_the_next_mx(
    smtpsink_factory, smtpsink
):
    # Bob does not exist (550); Ann's mailbox is busy (451): only Ann goes
    # to the backup MX, which would have taken Bob too.
    backup = smtpsink_factory(hostname="backup.test")
    smtpsink.dns.mx("partner.example", [(10, smtpsink), (20, backup)])
    smtpsink.fail("RCPT", 550, "5.1.1 no such user", match="bob@partner.example")
    smtpsink.fail("RCPT", 451, "4.2.1 try later", match="ann@partner.example")

    with pytest.raises(PartialDelivery) as partial:
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example",
            ["bob@partner.example", "ann@partner.example"],
            RAW,
        )

    assert partial.value.delivered == {"partner.example": "mx2.partner.example"}
    assert list(partial.value.failed) == ["bob@partner.example"]
    bounce = partial.value.failed["bob@partner.example"]
    assert isinstance(bounce, PermanentFailure)
    assert str(bounce).startswith("mx1.partner.example: 550")  # who said so
    backup.assert_sent(1, rcpt_to="ann@partner.example")
    backup.assert_not_sent(rcpt_to="bob@partner.example")


def test_a_recipient_refused_for_good_stays_bounced_when_no_mx_takes_the_rest(
    smtpsink_factory, smtpsink
):
    # Nothing delivered, but the failures differ: bounce Bob, retry Ann
    # (one error for the whole message would bounce Ann, or retry Bob).
    backup = smtpsink_factory(hostname="backup.test")
    smtpsink.dns.mx("partner.example", [(10, smtpsink), (20, backup)])
    smtpsink.fail("RCPT", 550, "5.1.1 no such user", match="bob@partner.example")
    smtpsink.fail("RCPT", 451, "4.2.1 try later", match="ann@partner.example")
    backup.fail("RCPT", 451, "4.2.1 try later", match="ann@partner.example")

    with pytest.raises(PartialDelivery) as partial:
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example",
            ["bob@partner.example", "ann@partner.example"],
            RAW,
        )

    assert partial.value.delivered == {}
    assert {rcpt: type(error) for rcpt, error in partial.value.failed.items()} == {
        "bob@partner.example": PermanentFailure,
        "ann@partner.example": TemporaryFailure,
    }


def test_an_internationalized_address_goes_with_smtputf8(smtpsink_factory, smtpsink):
    # smtplib encodes commands as ASCII: the domain goes in A-labels, and a
    # local part with non-ASCII letters needs a host offering SMTPUTF8.
    partner = smtpsink_factory(hostname="partner.test")
    smtpsink.dns.mx("b\u00fccher.example", [(10, partner)])

    mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example", ["j\u00f6rg@b\u00fccher.example"], RAW
    )

    message = partner.assert_sent(1)
    assert message.envelope.rcpt_to == ("j\u00f6rg@xn--bcher-kva.example",)
    assert message.envelope.smtputf8
    partner.hide("SMTPUTF8")
    with pytest.raises(PermanentFailure, match="offers no SMTPUTF8"):
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example", ["j\u00f6rg@b\u00fccher.example"], RAW
        )
    # An ASCII local part needs none: its domain in A-labels is enough, and
    # it goes while the other is bounced.
    with pytest.raises(PartialDelivery) as partial:
        mx_delivery(smtpsink.dns).deliver(
            "list@forwarder.example",
            ["bob@b\u00fccher.example", "j\u00f6rg@b\u00fccher.example"],
            RAW,
        )
    assert list(partial.value.failed) == ["j\u00f6rg@b\u00fccher.example"]
    assert "offers no SMTPUTF8" in str(partial.value)
    partner.assert_sent(1, rcpt_to="bob@xn--bcher-kva.example")


def test_mx_host_names_are_found_whatever_their_case(smtpsink):
    # The resolver answers mx1.partner.example (or in the question's case);
    # smtp_ports finds it however the test or the application spells it.
    smtpsink.dns.mx("Partner.Example", [(10, smtpsink)])

    used = mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example", ["bob@PARTNER.example"], RAW
    )

    assert used == {"partner.example": "mx1.partner.example"}
    smtpsink.assert_sent(1, rcpt_to="bob@PARTNER.example")


def test_an_mx_host_with_only_an_ipv6_address(smtpsink_factory, smtpsink):
    try:
        ipv6 = smtpsink_factory(host="::1")  # mx() publishes an AAAA record
    except SinkError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    smtpsink.dns.mx("partner.example", [(10, ipv6)])

    used = mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example", ["bob@partner.example"], RAW
    )

    assert used == {"partner.example": "mx1.partner.example"}
    ipv6.assert_sent(1, rcpt_to="bob@partner.example")


def test_every_address_of_an_mx_host_is_tried(smtpsink_factory, smtpsink):
    # A port held on 127.0.0.1 by a socket that never listens: connecting
    # there is refused (a free port could be another sink's on IPv4).
    with socket.socket() as shut:
        shut.bind(("127.0.0.1", 0))
        port = shut.getsockname()[1]
        try:
            ipv6 = smtpsink_factory(host="::1", port=port)  # same port, on ::1
        except SinkError as error:
            pytest.skip(f"no IPv6 loopback here: {error}")
        zone = smtpsink.dns
        zone.mx("partner.example", [(10, "mail.partner.example")])
        zone.a("mail.partner.example", "127.0.0.1")  # the port is shut there
        zone.aaaa("mail.partner.example", "::1")  # and open here
        ports = {**zone.smtp_ports, "mail.partner.example": port}

        used = mx_delivery(zone, ports).deliver(
            "list@forwarder.example", ["bob@partner.example"], RAW
        )

    assert used == {"partner.example": "mail.partner.example"}
    ipv6.assert_sent(1, rcpt_to="bob@partner.example")


def test_an_mx_host_without_a_port_is_named_before_anything_is_sent(
    smtpsink_factory, smtpsink
):
    partner = smtpsink_factory(hostname="partner.test")
    zone = smtpsink.dns
    zone.mx("partner.example", [(10, partner)])
    zone.mx("other.example", [(10, "mail.other.example")])  # not a sink:
    zone.a("mail.other.example", "127.0.0.1")  # its port is the test's to add

    with pytest.raises(NoPortForHost) as missing:
        mx_delivery(zone).deliver(
            "list@forwarder.example",
            ["bob@partner.example", "ann@other.example"],
            RAW,
        )

    assert str(missing.value) == (
        "no SMTP port for MX host mail.other.example (of other.example): "
        "port_for has none for it"
    )
    partner.assert_nothing_sent()  # a mistake in the set-up, not a delivery


def test_relay_chain_records_the_first_hop(smtpsink_factory, smtpsink):
    final = smtpsink_factory(hostname="final.test")
    first = smtpsink_factory(
        hostname="first-hop.test",
        relay=f"smtp://127.0.0.1:{final.port}",
        relay_to=r".*@partner\.example",
    )
    smtpsink.dns.mx("partner.example", [(10, first)])

    mx_delivery(smtpsink.dns).deliver(
        "list@forwarder.example", ["bob@partner.example"], RAW
    )

    arrived = final.wait_for(rcpt_to="bob@partner.example")
    received = arrived.headers.get_all("Received")
    assert len(received) == 1
    assert received[0].startswith("from forwarder.example ([127.0.0.1])")
    assert "by first-hop.test (pytest-smtpsink) with ESMTP" in " ".join(
        received[0].split()
    )
