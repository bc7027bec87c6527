"""What fault rules decide, without sockets: `_faults.steps` and `advertised`.

The socket tests (test_faults.py) prove the protocol carries the steps out;
these pin the decisions themselves, table by table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pytest_smtpsink import Mailbox, SMTPSink
from pytest_smtpsink._fault_api import FaultControls
from pytest_smtpsink._faults import (
    Delay,
    Discard,
    Disconnect,
    Event,
    Fault,
    FaultError,
    Faults,
    Hang,
    Reply,
    Step,
    Trigger,
    advertised,
    steps,
)


class Rules(FaultControls):
    """The public fault API over a bare `Faults`: no server, no loop."""

    def __init__(self) -> None:
        self.registry = Faults()

    def _fault_registry(self) -> Faults:
        return self.registry

    def decide(self, stage: str, *subjects: str, **event: Any) -> list[Step]:
        return steps(self.registry, Event(stage, subjects, **event))


@pytest.fixture
def rules() -> Rules:
    return Rules()


def kinds(decided: list[Step]) -> list[str]:
    """``[Reply(550, ...)]`` -> ``["550"]``; other steps by class name."""
    return [
        str(step.code) if isinstance(step, Reply) else type(step).__name__
        for step in decided
    ]


@pytest.mark.parametrize(
    ("add", "shown"),
    [
        (lambda r: r.fail("mail", 451, times=2), "MAIL reply 451 times=2 fired=1/1"),
        (lambda r: r.delay("DATA", 1.5, every=3), "DATA delay 1.5s every=3 fired=0/1"),
        (
            lambda r: r.limit(max_recipients=3)[0],
            "RCPT limit max_recipients=3 fired=0/0",
        ),
        # "hide" once: it said "EHLO hide hide STARTTLS,AUTH".
        (lambda r: r.hide("starttls", "AUTH"), "EHLO hide STARTTLS,AUTH fired=0/0"),
    ],
    ids=["fail", "delay", "limit", "hide"],
)
def test_a_rule_shows_as_what_it_does(
    rules: Rules, add: Callable[[Rules], Fault], shown: str
) -> None:
    fault = add(rules)
    rules.decide(fault.stage, "ann@example.com")  # once, to count
    assert repr(fault) == f"<Fault {shown}>"


def test_no_rules_decide_nothing(rules: Rules) -> None:
    assert rules.decide("RCPT", "ann@example.com") == []


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({}, "xxxxxx"),
        ({"times": 2}, "xx...."),
        ({"every": 3}, "..x..x"),
        ({"times": 1, "every": 2}, ".x...."),
        ({"match": "ann@example.com"}, "x.x.x."),
        ({"match": "ann@EXAMPLE.com"}, "x.x.x."),  # the domain's case is ignored
        ({"match": "ANN@example.com"}, "......"),  # the local part's is not
        ({"match": re.compile(r"^bob@")}, ".x.x.x"),
    ],
)
def test_trigger_counts(rules: Rules, trigger: Trigger, expected: str) -> None:
    fault = rules.fail("RCPT", 550, **trigger)
    fired = "".join(
        "x" if rules.decide("RCPT", rcpt) else "."
        for rcpt in ["ann@example.com", "bob@example.com"] * 3
    )
    assert fired == expected
    assert fault.fired == expected.count("x")
    matching = 6 if "match" not in trigger else 3 * ("ANN@" not in str(trigger))
    assert fault.seen == matching


def test_probability_replays_with_its_seed(rules: Rules) -> None:
    first = rules.fail("MAIL", 451, probability=0.5, seed=42)
    pattern = [bool(rules.decide("MAIL", "a@example.com")) for _ in range(40)]
    again = Rules()
    again.fail("MAIL", 451, probability=0.5, seed=first.seed)
    assert [bool(again.decide("MAIL", "a@example.com")) for _ in range(40)] == pattern
    assert 0 < sum(pattern) < 40
    assert first.seen == 40
    assert first.fired == sum(pattern)


def test_probability_bounds(rules: Rules) -> None:
    never = rules.fail("MAIL", 451, probability=0, seed=1)
    always = rules.fail("RCPT", 450, probability=1, seed=1)
    assert not any(rules.decide("MAIL") for _ in range(50))
    assert all(rules.decide("RCPT") for _ in range(50))
    assert (never.fired, always.fired) == (0, 50)


def test_delays_come_before_the_deciding_step(rules: Rules) -> None:
    delay = rules.delay("DATA", 0.5)
    rules.delay("DATA", 0.25, times=1)
    rules.fail("DATA", 554)
    rules.disconnect("DATA")  # never reached: the 554 answers first
    assert rules.decide("DATA", "a@example.com") == [
        Delay(0.5, delay),
        Delay(0.25, rules.registry.rules[1]),
        Reply(554, None, rules.registry.rules[2]),
    ]
    assert kinds(rules.decide("DATA")) == ["Delay", "554"]
    assert rules.registry.rules[3].seen == 0


@pytest.mark.parametrize(
    ("declare", "expected"),
    [
        (lambda r: r.hang("MAIL"), Hang),
        (lambda r: r.disconnect("MAIL"), Disconnect),
    ],
)
def test_hang_and_disconnect_end_the_decision(
    rules: Rules, declare: Any, expected: type[Step]
) -> None:
    first = declare(rules)
    later = rules.fail("MAIL", 451)
    decided = rules.decide("MAIL", "a@example.com")
    assert decided == [expected(first)]  # type: ignore[call-arg]
    assert later.seen == 0


def test_drop_discards_the_message(rules: Rules) -> None:
    fault = rules.drop(match="spam@example.com")
    assert rules.decide("EOD", "app@example.com", "ann@example.com") == []
    assert rules.decide("EOD", "app@example.com", "spam@example.com") == [
        Discard(fault)
    ]


def test_rules_of_other_stages_are_not_counted(rules: Rules) -> None:
    fault = rules.fail("RCPT", 550)
    assert rules.decide("MAIL", "a@example.com") == []
    assert (fault.seen, fault.fired) == (0, 0)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("RCPT", rcpt_count=1), []),
        (Event("RCPT", rcpt_count=2), ["452"]),
        (Event("CONNECT", connections=3), []),
        (Event("CONNECT", connections=4), ["421"]),
        (Event("MAIL", size=100), []),
        (Event("MAIL", size=101), ["552"]),
        (Event("EOD", size=101), ["552"]),
        (Event("DATA", size=101), []),
    ],
)
def test_limits(rules: Rules, event: Event, expected: list[str]) -> None:
    rules.limit(max_recipients=2, max_connections=3, max_size=100)
    assert kinds(steps(rules.registry, event)) == expected


def test_a_limit_answers_before_later_rules(rules: Rules) -> None:
    (limit,) = rules.limit(max_recipients=1)
    later = rules.fail("RCPT", 550)
    decided = rules.decide("RCPT", "b@example.com", rcpt_count=1)
    assert decided == [Reply(452, "4.5.3 Too many recipients (at most 1)", limit)]
    assert (limit.seen, limit.fired, later.seen) == (1, 1, 0)


def test_a_rule_before_a_limit_answers_first(rules: Rules) -> None:
    rules.fail("RCPT", 550)
    rules.limit(max_recipients=1)
    assert kinds(rules.decide("RCPT", "b@example.com", rcpt_count=1)) == ["550"]


@pytest.mark.parametrize(
    ("hidden", "event", "expected"),
    [
        ("STARTTLS", Event("STARTTLS", extension="STARTTLS"), ["502"]),
        ("AUTH", Event("AUTH", ("PLAIN",), extension="AUTH"), ["502"]),
        ("AUTH", Event("STARTTLS", extension="STARTTLS"), []),
        ("SIZE", Event("MAIL", params=("SIZE=10",)), ["555"]),
        ("SMTPUTF8", Event("MAIL", params=("SMTPUTF8",)), ["555"]),
        ("8BITMIME", Event("MAIL", params=("BODY=8BITMIME",)), ["555"]),
        ("8BITMIME", Event("MAIL", params=("BODY=7BIT",)), []),
        ("SIZE", Event("MAIL", params=("BODY=8BITMIME",)), []),
    ],
)
def test_hidden_extensions(
    rules: Rules, hidden: str, event: Event, expected: list[str]
) -> None:
    rules.hide(hidden)
    assert kinds(steps(rules.registry, event)) == expected


EHLO = ["smtpsink.test", "SIZE 67108864", "8BITMIME", "STARTTLS", "HELP"]


@pytest.mark.parametrize(
    ("declare", "expected"),
    [
        (lambda r: r.fail("MAIL", 451), None),
        (
            lambda r: r.hide("starttls", "8BITMIME"),
            ["smtpsink.test", "SIZE 67108864", None, None, "HELP"],
        ),
        (
            lambda r: (r.limit(max_size=500), r.limit(max_size=200)),
            ["smtpsink.test", "SIZE 200", "8BITMIME", "STARTTLS", "HELP"],
        ),
    ],
)
def test_advertised(
    rules: Rules, declare: Any, expected: list[str | None] | None
) -> None:
    declare(rules)
    assert advertised(rules.registry, EHLO) == expected


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("STARTLS", "'STARTLS' is not an extension a sink offers (PIPELINING, "),
        ("STARTLS", "did you mean 'STARTTLS'?"),
        ("SMTPSINK.TEST", "'SMTPSINK.TEST' is not an extension"),  # the greeting
    ],
)
def test_hiding_an_extension_no_sink_offers_is_an_error(
    rules: Rules, name: str, text: str
) -> None:
    # A typo would hide nothing, and the test would pass for the wrong reason.
    with pytest.raises(FaultError, match=re.escape(text)):
        rules.hide(name)
    assert rules.faults == ()


def test_an_auth_rule_for_a_mechanism_no_sink_offers_is_an_error(
    rules: Rules,
) -> None:
    # It would never fire, and the test would pass for the wrong reason.
    with pytest.raises(
        FaultError,
        match=re.escape(
            "AUTH: match='XOAUTH2' is no mechanism a sink offers (PLAIN, LOGIN, "
            "CRAM-MD5): the rule would never fire"
        ),
    ):
        rules.fail("AUTH", 535, match="XOAUTH2")
    assert rules.faults == ()
    rules.fail("AUTH", 535, match="cram-md5")  # mechanisms have no case
    rules.fail("AUTH", 535, match=re.compile("XOAUTH2|PLAIN"))  # a regex: as it is


@pytest.mark.parametrize(
    ("match", "regex"), [("bob@", "'bob@'"), ("@shop.example", "'@shop\\\\.example'")]
)
def test_part_of_an_address_as_a_string_match_is_an_error(
    rules: Rules, match: str, regex: str
) -> None:
    # A string matches a whole address: "bob@" never did, the rule never
    # fired, and the test failed with "DID NOT RAISE" and no word of it.
    with pytest.raises(
        FaultError,
        match=re.escape(
            f"RCPT: match={match!r} is no whole address, and a string matches an "
            "address exactly: give the whole address, or a regex to search with "
            f"(re.compile({regex}))"
        ),
    ):
        rules.fail("RCPT", 550, match=match)
    assert rules.faults == ()
    rules.fail("RCPT", 550, match="postmaster")  # a local name: RFC 5321 takes it
    rules.fail("MAIL", 550, match="<>")  # the null sender
    rules.fail("RCPT", 550, match=re.compile(re.escape(match)))  # as advised


@pytest.mark.parametrize("stage", ["CONNECT", "POP3:CONNECT", "IMAP:CONNECT"])
def test_a_connect_match_that_is_no_ip_address_is_an_error(
    rules: Rules, stage: str
) -> None:
    # A connection is matched by its client's address: "localhost" never
    # fired, and the greeting came as usual.
    with pytest.raises(
        FaultError,
        match=re.escape(
            f"{stage}: match='localhost' is no IP address, and a connection is "
            "matched by its client's (e.g. '127.0.0.1'): give the address, or a "
            "compiled regex"
        ),
    ):
        rules.fail(stage, 421, match="localhost")
    assert rules.faults == ()
    rules.fail(stage, 421, match="::1")
    rules.fail(stage, 421, match=" 127.0.0.1 ")
    # Compared as written: "0::1" never equalled the client's "::1".
    with pytest.raises(
        FaultError,
        match=re.escape(
            f"{stage}: match='0::1' never equals a client's address as written: "
            "write it '::1'"
        ),
    ):
        rules.fail(stage, 421, match="0::1")
    # A zone is compared without case, as the rest is.
    rules.fail(stage, 421, match="fe80::1%Eth0")
    rules.fail(stage, 421, match=re.compile("localhost"))  # a regex: as it is


def test_removing_rules_tells_the_server_which(rules: Rules) -> None:
    removed: list[tuple[Fault, ...]] = []

    class Server:
        def release(self, rules: tuple[Fault, ...]) -> None:
            removed.append(rules)

    server = Server()  # held here: the registry keeps only a weak reference
    rules.registry.release_with(server.release)
    keep = rules.fail("MAIL", 451)
    gone = rules.hang("RCPT")
    gone.remove()
    gone.remove()  # already gone: nothing more to release
    assert removed == [(gone,)]
    assert rules.faults == (keep,)
    rules.clear_faults()
    assert removed == [(gone,), (keep,)]
    assert rules.registry.rules == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.fail("RCPT", 550, mach="x@example.com"),
        lambda r: r.disconnect("RCPT", time=1),
        lambda r: r.delay("RCPT", 1, probabilty=0.5),
        lambda r: r.hang("RCPT", seeds=1),
        lambda r: r.drop(matches="x"),
    ],
)
def test_a_misspelt_trigger_keyword_is_named(rules: Rules, call: Any) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument") as caught:
        call(rules)
    assert "match, times, every, probability, seed" in str(caught.value)
    assert rules.registry.rules == ()


def test_trigger_keywords_show_in_the_signatures() -> None:
    import inspect

    for name in ("fail", "disconnect", "delay", "hang", "drop"):
        signature = str(inspect.signature(getattr(Mailbox, name)))
        assert "**trigger: 'Unpack[Trigger]'" in signature, (name, signature)
    assert set(Trigger.__annotations__) == {
        "match",
        "times",
        "every",
        "probability",
        "seed",
    }


def test_the_marker_names_a_misspelt_keyword(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.smtpsink_fault("fail", "RCPT", 550, tims=2)
        def test_it(smtpsink):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.no_fnmatch_line("*During handling*")
    result.stdout.fnmatch_lines(
        [
            "*smtpsink_fault('fail', ...): fail() got an unexpected keyword "
            "argument 'tims'; its trigger keywords are match, times, every, "
            "probability, seed*"
        ]
    )


def test_the_sink_releases_a_held_connection_on_removal() -> None:
    """The server side of `on_removed`: a hung client is closed."""
    import smtplib

    with SMTPSink() as sink:
        fault = sink.hang("MAIL")
        client = smtplib.SMTP(sink.host, sink.port, timeout=30)
        try:
            client.ehlo()
            client.putcmd("MAIL", "FROM:<a@example.com>")
            # Fired: the connection is held from the same loop step on, so
            # the release (queued on the loop) finds it. Waiting only for
            # the MAIL line would race the hang under load.
            sink.wait_until(lambda: fault.fired == 1)
            sink.clear_faults()
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.getreply()
        finally:
            client.close()
        assert sink.sessions[0].end == "server-closed"


def test_a_rule_removed_after_firing_but_before_holding_still_closes() -> None:
    """The race seen under load: the test's thread removes a hang rule in
    the moment after it fired and before the connection was held. Made
    deterministic by removing it from a change listener, which runs on the
    server thread in exactly that moment."""
    import smtplib

    with SMTPSink() as sink:
        fault = sink.hang("MAIL")

        def remove_once_fired() -> None:
            if fault.fired and fault in sink.faults:
                fault.remove()

        stop_listening = sink.on_change(remove_once_fired)
        client = smtplib.SMTP(sink.host, sink.port, timeout=30)
        try:
            client.ehlo()
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.mail("a@example.com")
        finally:
            stop_listening()
            client.close()
        assert sink.faults == ()
        assert sink.sessions[0].end == "server-closed"


# -- DNS stages: the MX stub asks at "DNS:<type>" with the name asked for -----------


@pytest.mark.parametrize(
    ("stage", "event", "applies"),
    [
        ("DNS:MX", "DNS:MX", True),
        ("dns:mx", "DNS:MX", True),  # stage names ignore case
        ("DNS:MX", "DNS:A", False),
        ("DNS:QUERY", "DNS:MX", True),  # every question...
        ("DNS:QUERY", "DNS:HTTPS", True),  # ... of any type, even unlisted
        ("DNS:QUERY", "MAIL", False),  # ... but never an SMTP command
        ("MAIL", "DNS:MX", False),
    ],
)
def test_dns_stages(rules: Rules, stage: str, event: str, applies: bool) -> None:
    fault = rules.fail(stage, 451)
    assert kinds(rules.decide(event, "partner.example")) == (["451"] if applies else [])
    assert fault.seen == int(applies)


@pytest.mark.parametrize(
    ("match", "name", "applies"),
    [
        ("partner.example", "partner.example", True),
        ("Partner.EXAMPLE", "partner.example", True),  # case is ignored
        ("partner.example.", "partner.example", True),  # so is a final dot
        ("partner.example", "PARTNER.example.", True),
        ("partner.example", "mx1.partner.example", False),  # exact, not a suffix
        (re.compile(r"(^|\.)partner\.example$"), "mx1.partner.example", True),
        (re.compile(r"^partner"), "other.example", False),
    ],
)
def test_dns_match_compares_the_name_asked_for(
    rules: Rules, match: str | re.Pattern[str], name: str, applies: bool
) -> None:
    rules.hang("DNS:QUERY", match=match)
    assert kinds(rules.decide("DNS:A", name)) == (["Hang"] if applies else [])


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({"times": 2}, "xx...."),
        ({"every": 2}, ".x.x.x"),
        ({"match": "a.example", "every": 2}, "..x..."),
    ],
)
def test_dns_trigger_counts(rules: Rules, trigger: Trigger, expected: str) -> None:
    rules.fail("DNS:MX", 451, **trigger)
    fired = "".join(
        "x" if rules.decide("DNS:MX", name) else "."
        for name in ["a.example", "b.example"] * 3
    )
    assert fired == expected


def test_dns_delays_come_before_the_answer(rules: Rules) -> None:
    delay = rules.delay("DNS:QUERY", 0.5)
    refused = rules.fail("DNS:MX", 550)
    assert rules.decide("DNS:MX", "a.example") == [
        Delay(0.5, delay),
        Reply(550, None, refused),
    ]
    assert rules.decide("DNS:A", "a.example") == [Delay(0.5, delay)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.fail("DNS:MX", 451, "busy"), "a DNS reply has no text"),
        (lambda r: r.fail("DNS:BOGUS", 451), "unknown DNS stage.*DNS:QUERY, DNS:A"),
        (lambda r: r.hang("MX"), "such as 'POP3:RETR', 'IMAP:FETCH' or 'DNS:MX'"),
    ],
)
def test_bad_dns_rules_are_refused_clearly(
    rules: Rules, call: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(rules)
    assert rules.registry.rules == ()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [("5", "got the str '5'"), (-1, "got -1"), (None, "got None")],
)
def test_a_bad_delay_says_what_it_got(rules: Rules, seconds: Any, shown: str) -> None:
    # "got '5'" read as a number: a string says its type.
    with pytest.raises(FaultError, match=f"seconds must be a number >= 0, {shown}$"):
        rules.delay("RCPT", seconds)
    assert rules.faults == ()
