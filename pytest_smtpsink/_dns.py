"""The MX stub: a small authoritative DNS server for test domains.

Applications that deliver by MX (forwarders, list managers, bounce handlers)
look up the recipient domain's MX records, then the MX hosts' addresses. The
stub answers those questions from zones a test declares
(``smtpsink.dns.mx("partner.example", [(10, sink_a), (20, sink_b)])``), and
fails them on request: NXDOMAIN from the zone, and everything else through
the sink's fault rules at the ``DNS:`` stages (``_faults.steps`` decides,
`DNSServer` carries it out: SERVFAIL, REFUSED, a late answer, no answer).

Threads: the server (`DNSServer`) runs on its sink's loop thread, over UDP
and TCP on the same loopback port; it is started on first use of
``Mailbox.dns`` and closed with the sink. Tests declare records through
`DNSZone` (one per mailbox, so per test) in their own thread; the records
are published to the server as an immutable tuple, swapped under a lock,
and the loop only reads that tuple. Queries are recorded in a list the loop
appends to and tests read as snapshots.

Messages are parsed and built with dnspython (an optional dependency, the
``dns`` extra): this module is imported only when a test uses the stub.
A query dnspython cannot parse gets FORMERR when it has a whole header, and
is otherwise ignored; both are recorded and neither can stop the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import ipaddress
import itertools
import math
import re
import socket
import struct
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

from ._faults import Delay, Disconnect, Event, Fault, Faults, Hang, Reply, steps
from ._listening import start_on_loop
from ._text import join_shortened, shown_number

try:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.rdtypes.ANY.MX
    import dns.rdtypes.ANY.TSIG
    import dns.rdtypes.ANY.TXT
    import dns.resolver
    import dns.rrset
except ImportError as error:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "smtpsink.dns needs dnspython: pip install 'pytest-smtpsink[dns]'"
    ) from error

import dns.version

if (dns.version.MAJOR, dns.version.MINOR) < (2, 7):
    # dkimpy, a dependency, brings an older one (it asks for 2.0): then a
    # TSIG-signed query got FORMERR with "'bool' object has no attribute
    # 'name'" as its reason, the stub's reading of it relying on 2.7.
    raise ImportError(
        f"smtpsink.dns needs dnspython 2.7 or later, and {dns.version.version} is "
        "installed: pip install 'pytest-smtpsink[dns]'"
    )

if TYPE_CHECKING:
    import dns.asyncresolver

    from ._mailbox import Mailbox
    from ._server import SMTPSink
    from ._store import Store

Transport = Literal["udp", "tcp"]
#: What an MX record may point at: a sink (its address is published too) or
#: a host name (publish its address with `DNSZone.a`).
MXTarget = Union["Mailbox", "SMTPSink", str]

_TTL = 0  # nothing a resolver or an application may cache between tests
# For the same reason, a negative answer (NXDOMAIN, no data) carries no SOA
# record: RFC 2308 5 says one without it is not to be cached.
_TCP_IDLE = 10.0  # seconds a TCP client may sit between queries
#: Bytes of delayed answers a TCP connection may hold unread (16 of the
#: largest): past them, its client reads none, and it is cut off.
_LATE_WAITING_MAX = 16 * 65_537
_TCP_SEND_BUFFER = 128 * 1024
_KEEP_QUERIES = 10_000
_HINT_LISTED = 5  # lookups a failure report lists; it is a hint, not a log
# The most a UDP datagram carries over IPv4 (65535 less the IP and UDP
# headers): an EDNS client may offer up to 65535, and a bigger answer would
# be dropped by the kernel, unseen, rather than truncated.
_UDP_MAX = 65_507


@dataclasses.dataclass(frozen=True)
class DNSQuery:
    """One query the stub received, and what it did about it."""

    number: int
    time: float
    transport: Transport
    peer: tuple[str, int]
    name: str | None
    """The name asked for (``"partner.example."``), None if unparsable."""
    type: str | None
    """The record type asked for (``"MX"``), None if unparsable."""
    outcome: str
    """The reply's rcode (``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``,
    ``FORMERR``, ``NOTIMP``, ``REFUSED``, ``BADVERS``: an EDNS version
    other than 0, ``NOTAUTH``: a query signed with TSIG), or ``no answer`` (a ``hang`` or
    ``disconnect`` fault rule, or an answer a ``delay`` held back that was
    never sent: the note says which and why) or ``ignored`` (not a query, shorter than a
    DNS header, cut short: its TCP connection closed before its end, or a
    TCP connection that sent nothing and was closed)."""
    answers: tuple[str, ...] = ()
    """The answer records as text."""
    note: str = ""
    """Why a query was malformed or ignored, or what a fault rule did
    (``fault: 451``, ``fault: hang``, ``answered after 0.5s``)."""

    def __str__(self) -> str:
        asked = f"{self.name} {self.type}" if self.name else "<malformed>"
        shown = f" -> {', '.join(self.answers)}" if self.answers else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.transport} {asked}: {self.outcome}{shown}{note}"


class _Owner:
    """Whose records a rule is: a zone's token. The rules live on the sink's
    loop (the server holds them), so they must not hold the zone: it holds
    its view and so the sink, which could then never be collected, warned
    about and stopped when dropped (see _server._Runtime)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True)
class _Rule:
    owner: _Owner
    name: dns.name.Name
    kind: Literal["record", "nxdomain"]
    rdata: dns.rdata.Rdata | None = None


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What to send for one query: ``reply`` (None: nothing) after
    ``delay`` seconds; ``close``: end the TCP connection (a disconnect)."""

    reply: bytes | None
    delay: float = 0.0
    close: bool = False
    number: int = 0
    """The recorded query's number (for a delayed reply: see `unsent`)."""


_NOTHING = _Plan(None)


#: Every stub of the process, so that a name asked of one and published on
#: another can be named as such (each sink has a stub of its own).
_STUBS: weakref.WeakSet[DNSServer] = weakref.WeakSet()
_STUBS_LOCK = threading.Lock()


def _published_elsewhere(asked: DNSServer, name: dns.name.Name) -> list[str]:
    """The addresses of the stubs other than ``asked`` that publish
    ``name``."""
    with _STUBS_LOCK:
        stubs = list(_STUBS)
    return sorted(
        f"{stub.host}:{stub.port}"
        for stub in stubs
        # A stopped sink's stub may not be collected yet.
        if stub is not asked and not stub._closed and stub.port
        # Published records only: a stub that denies the name (nxdomain())
        # answers as this one does.
        if any(r.name == name and r.kind == "record" for r in stub.rules)
    )


#: dnspython's default resolvers as `DNSZone.as_default` found them first,
#: then those of each block still open, innermost last (sync, async).
_DEFAULTS: list[tuple[Any, Any]] = []
_DEFAULTS_LOCK = threading.Lock()


def _set_defaults(pair: tuple[Any, Any]) -> None:
    import dns.asyncresolver
    import dns.resolver

    dns.resolver.default_resolver, dns.asyncresolver.default_resolver = pair


class DNSServer:
    """The stub of one sink: UDP and TCP on one loopback port."""

    def __init__(self, host: str, store: Store, faults: Faults) -> None:
        # The store, not the sink: the sink's loop holds this server, and
        # nothing there may keep a dropped sink alive (see _server._Runtime).
        self._store = store
        self._faults = faults
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        #: Held by `DNSZone.mx` while it names and publishes a domain's MX
        #: hosts, and by `remove`: both read and change `mx_sinks`.
        self.mx_lock = threading.Lock()
        self.rules: tuple[_Rule, ...] = ()
        self._queries: list[DNSQuery] = []
        self._numbers = itertools.count(1)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._udp_protocol: _UDPProtocol | None = None
        self._closed = False
        # The sinks that each domain's MX records name, by address: the MX
        # host and the zone that published it. On the stub, not the zone:
        # two mailboxes of one sink are two zones on one stub.
        self.mx_sinks: dict[
            dns.name.Name, dict[tuple[str, int], tuple[_Owner, str]]
        ] = {}
        with _STUBS_LOCK:
            _STUBS.add(self)

    # -- lifecycle (start: from a test thread; close: on the loop) -------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        # A free port for UDP, then the same number for TCP; another
        # program may hold that TCP port, so try a few.
        for _ in range(20):
            udp, protocol = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                tcp = await asyncio.start_server(self._tcp_client, self.host, port)
            except OSError:
                udp.close()
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            self._udp_protocol = protocol
            return
        raise OSError("no port free for both UDP and TCP")  # pragma: no cover

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        start_on_loop(loop, self._start())

    def close(self) -> None:
        """Stop serving (loop thread, from the sink's shutdown)."""
        self._closed = True
        if self._udp_protocol is not None:
            self._udp_protocol.drop_late_answers()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._tcp_writers):
            _close(writer)

    # -- rules (test threads) ------------------------------------------------------

    def add(self, rules: Sequence[_Rule]) -> None:
        with self._lock:
            self.rules = (*self.rules, *rules)

    def remove(self, owner: _Owner) -> None:
        # mx_lock first, as `DNSZone.mx` takes it (then this lock, to add).
        with self.mx_lock, self._lock:
            self.rules = tuple(r for r in self.rules if r.owner is not owner)
            for sinks in self.mx_sinks.values():
                for key in [k for k, (by, _) in sinks.items() if by is owner]:
                    del sinks[key]

    def queries_since(self, number: int) -> tuple[DNSQuery, ...]:
        with self._lock:
            return tuple(q for q in self._queries if q.number > number)

    def last_number(self) -> int:
        with self._lock:
            return self._queries[-1].number if self._queries else 0

    # -- answering (loop thread) -----------------------------------------------------

    def _record(self, query: DNSQuery) -> None:
        with self._lock:
            self._queries.append(query)
            if len(self._queries) > _KEEP_QUERIES:
                del self._queries[: _KEEP_QUERIES // 2]
        self._store.touch()  # wakes wait_until on dns.queries

    def handle(self, data: bytes, transport: Transport, peer: Any) -> _Plan:
        """What to send in reply to one message."""
        peer = _peer(peer)
        try:
            return self._answer(data, transport, peer)
        except Exception as error:  # never let one query take the loop down
            self._note(transport, peer, "ignored", f"internal error: {error!r}")
            return _NOTHING

    def cut_short(self, peer: Any, note: str) -> None:
        """A TCP message that its client never finished: recorded, as the
        malformed ones are (loop thread)."""
        self._note("tcp", _peer(peer), "ignored", note)

    def _note(
        self,
        transport: Transport,
        peer: tuple[str, int],
        outcome: str,
        note: str,
        *,
        name: str | None = None,
        rdtype: str | None = None,
        answers: tuple[str, ...] = (),
    ) -> int:
        number = next(self._numbers)
        self._record(
            DNSQuery(
                number,
                time.time(),
                transport,
                peer,
                name,
                rdtype,
                outcome,
                answers,
                note,
            )
        )
        return number

    def unsent(self, plan: _Plan, why: str) -> None:
        """Record that the answer of ``plan``, held back by a delay fault,
        was never sent: its record said what it would be (loop thread, or
        the stopping thread once the loop has stopped)."""
        with self._lock:
            for index in range(len(self._queries) - 1, -1, -1):
                query = self._queries[index]
                if query.number == plan.number:
                    others = [
                        note
                        for note in query.note.split("; ")
                        if note and not note.startswith("answered after ")
                    ]
                    due = (
                        f"{query.outcome} due after {plan.delay:g}s, never sent: {why}"
                    )
                    self._queries[index] = dataclasses.replace(
                        query,
                        outcome="no answer",
                        answers=(),
                        note="; ".join([due, *others]),
                    )
                    break
                if query.number < plan.number:
                    return  # no longer kept
        self._store.touch()

    def _answer(
        self, data: bytes, transport: Transport, peer: tuple[str, int]
    ) -> _Plan:
        if len(data) < 12:
            self._note(
                transport, peer, "ignored", f"{len(data)} bytes: shorter than a header"
            )
            return _NOTHING
        flags = int.from_bytes(data[2:4], "big")
        if flags & dns.flags.QR:
            # Answering a response could start a loop between two servers.
            self._note(transport, peer, "ignored", "a response, not a query")
            return _NOTHING
        try:
            # keyring=False: a TSIG record is read, not checked (the stub
            # has no keys); one out of place is still a FormError.
            query = dns.message.from_wire(data, keyring=False)
        except Exception as error:
            # Not only DNSException: whatever the parser raises on a query
            # it cannot read, the client gets an answer and the stub goes on.
            # One line: dnspython's text may hold a line break.
            reason = " ".join(str(error).split()) or type(error).__name__
            self._note(transport, peer, "FORMERR", f"malformed: {reason}")
            return _Plan(_bare_reply(data, dns.rcode.FORMERR))
        if query.had_tsig:
            return self._unknown_key(query, transport, peer)
        if query.opcode() != dns.opcode.QUERY:
            asked: dict[str, Any] = {}
            if len(query.question) == 1:  # parsed: it is no "<malformed>"
                asked["name"] = query.question[0].name.to_text()
                asked["rdtype"] = dns.rdatatype.to_text(query.question[0].rdtype)
            opcode = dns.opcode.to_text(query.opcode())  # NOTIFY, UPDATE, 3...
            self._note(transport, peer, "NOTIMP", f"opcode {opcode}", **asked)
            return _Plan(_refusal(query, data, dns.rcode.NOTIMP))
        if len(query.question) != 1:
            self._note(transport, peer, "FORMERR", f"{len(query.question)} questions")
            return _Plan(_refusal(query, data, dns.rcode.FORMERR))
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        name_text, type_text = name.to_text(), dns.rdatatype.to_text(rdtype)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        _copy_do(query, response)
        if query.edns > 0:
            # RFC 6891 6.1.3: a version the stub does not speak; the reply
            # says so in the one it speaks (make_response gave it EDNS 0).
            response.set_rcode(dns.rcode.BADVERS)
            self._note(
                transport,
                peer,
                "BADVERS",
                f"EDNS version {query.edns}",
                name=name_text,
                rdtype=type_text,
            )
            return _Plan(response.to_wire())
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            self._note(
                transport,
                peer,
                "REFUSED",
                "not class IN",
                name=name_text,
                rdtype=type_text,
            )
            return _Plan(response.to_wire())
        if dns.rdatatype.is_metatype(rdtype) and rdtype != dns.rdatatype.ANY:
            # Zone transfers are not served; OPT, TSIG and the like are no
            # question at all (RFC 6891 6.1.1; RFC 8945 5.1).
            transfer = rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
            rcode = dns.rcode.REFUSED if transfer else dns.rcode.FORMERR
            response.set_rcode(rcode)
            self._note(
                transport,
                peer,
                dns.rcode.to_text(rcode),
                "zone transfers are not served"
                if transfer
                else f"{type_text} is not a type to ask for",
                name=name_text,
                rdtype=type_text,
            )
            return _Plan(response.to_wire())
        # The fault rules first: they fail a name whatever its zone says.
        delay, notes = 0.0, []
        # In lower case: DNS names are (RFC 4343), and a resolver may vary the
        # case of what it asks; a compiled regex then sees one spelling.
        event = Event(f"DNS:{type_text}", (name_text[:-1].lower() or ".",))
        for step in steps(self._faults, event) if self._faults.rules else ():
            if isinstance(step, Delay):
                delay += step.seconds
                notes.append(f"answered after {delay:g}s")
                continue
            if isinstance(step, (Hang, Disconnect)):
                what = "hang" if isinstance(step, Hang) else "disconnect"
                self._note(
                    transport,
                    peer,
                    "no answer",
                    f"fault: {what}",
                    name=name_text,
                    rdtype=type_text,
                )
                return _Plan(None, close=isinstance(step, Disconnect))
            assert isinstance(step, Reply)  # drop and limit are SMTP's
            # 4xx is "try again" (SERVFAIL); 5xx "not from me" (REFUSED).
            rcode = dns.rcode.SERVFAIL if step.code < 500 else dns.rcode.REFUSED
            response.set_rcode(rcode)
            notes.append(f"fault: {step.code}")
            number = self._note(
                transport,
                peer,
                dns.rcode.to_text(rcode),
                "; ".join(notes),
                name=name_text,
                rdtype=type_text,
            )
            return _Plan(response.to_wire(), delay, number=number)
        published = self.rules  # one snapshot: a test may publish meanwhile
        rules = [r for r in published if r.name == name]
        # RFC 8020: nothing exists at or below a name that does not exist
        # (a "vanished" domain took its hosts along).
        if any(r.kind == "nxdomain" and name.is_subdomain(r.name) for r in published):
            response.set_rcode(dns.rcode.NXDOMAIN)
            number = self._note(
                transport,
                peer,
                "NXDOMAIN",
                "; ".join(notes),
                name=name_text,
                rdtype=type_text,
            )
            return _Plan(response.to_wire(), delay, number=number)
        records = [r for r in rules if r.kind == "record"]
        if not records and not _has_names_below(published, name):
            # A name with none of its own records exists all the same when
            # a name below it has some (an "empty non-terminal", RFC 8020
            # 2): NXDOMAIN would deny both, so it gets NOERROR, no data.
            response.set_rcode(dns.rcode.NXDOMAIN)
            elsewhere = _published_elsewhere(self, name)
            if elsewhere:
                # Records published through another sink's `dns`: the
                # test resolves through the wrong stub.
                notes.append(
                    f"published on another sink's stub ({', '.join(elsewhere)}): "
                    "publish and resolve through the same sink's dns"
                )
        matching = [
            r.rdata
            for r in records
            if r.rdata and rdtype in (r.rdata.rdtype, dns.rdatatype.ANY)
        ]
        # ANY: every record of the name, one set per type (RFC 8482 lets a
        # server answer less; a test wants to see what it published).
        for rdatas in _by_type(matching).values():
            response.answer.append(dns.rrset.from_rdata_list(name, _TTL, rdatas))
        answers = tuple(rdata.to_text() for rdata in matching)
        limit = 65535
        if transport == "udp":
            limit = min(max(512, query.payload), _UDP_MAX) if query.edns >= 0 else 512
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # Too big for UDP: say so (TC), and the resolver asks over TCP.
            # Over TCP, too big for any DNS message: the test published more
            # than one answer can hold.
            response.answer.clear()
            if transport == "udp":
                response.flags |= dns.flags.TC
            else:
                # TC means nothing over TCP: a resolver took the empty
                # answer for "no such records". SERVFAIL fails the lookup.
                response.set_rcode(dns.rcode.SERVFAIL)
            wire = response.to_wire()
            answers = ()
            notes.append(
                "truncated: too big for UDP"
                if transport == "udp"
                else f"truncated: too big for a DNS message ({limit} bytes)"
            )
        number = self._note(
            transport,
            peer,
            dns.rcode.to_text(response.rcode()),
            "; ".join(notes),
            name=name_text,
            rdtype=type_text,
            answers=answers,
        )
        return _Plan(wire, delay, number=number)

    def _unknown_key(
        self, query: dns.message.Message, transport: Transport, peer: tuple[str, int]
    ) -> _Plan:
        """RFC 8945 5.2.2: a server that does not know the key a query is
        signed with answers NOTAUTH, with TSIG error BADKEY in an unsigned
        TSIG record (5.3.2), so that the client can tell why."""
        assert query.tsig is not None  # had_tsig
        signed, key_name = query.tsig[0], query.tsig.name
        # Made here, not by make_response: that signs the response to a
        # signed query with the query's keyring, and there is none (dnspython
        # 2.7 raises on it; later releases leave it unsigned).
        response = dns.message.Message(id=query.id)
        response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
        response.set_opcode(query.opcode())
        response.question = list(query.question)
        if query.edns >= 0:  # RFC 6891 6.1.1: an OPT answers an OPT
            response.use_edns(0, query.ednsflags & dns.flags.DO, query.payload)
        response.set_rcode(dns.rcode.NOTAUTH)
        # The request's record with an empty MAC and the error, as dnspython
        # has no way to add a TSIG record it does not sign.
        unsigned = signed.replace(mac=b"", error=dns.rcode.BADKEY, other=b"")
        rdata = unsigned.to_wire()
        owner = key_name.to_wire() or b""  # bytes when given no file
        record = owner + struct.pack(
            "!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)
        )
        wire = bytearray(response.to_wire())
        additional = int.from_bytes(wire[10:12], "big") + 1
        wire[10:12] = additional.to_bytes(2, "big")
        name = rdtype = None
        if len(query.question) == 1:
            name = query.question[0].name.to_text()
            rdtype = dns.rdatatype.to_text(query.question[0].rdtype)
        self._note(
            transport,
            peer,
            "NOTAUTH",
            f"TSIG key {key_name} unknown (BADKEY): the stub has no keys",
            name=name,
            rdtype=rdtype,
        )
        return _Plan(bytes(wire) + record + rdata)

    async def _tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._tcp_writers.add(writer)
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(AttributeError, OSError):
            # Room for an answer or two (one is at most 64 KiB): a client
            # that stops reading is found out (the drain below times out)
            # before the kernel has buffered megabytes for it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _TCP_SEND_BUFFER)
        size: int | None = None  # of the message being read
        begun = False  # the first byte of its length came, not the second
        draining = False  # waiting for the client to read answers
        asked = False  # whether it sent anything yet
        # Answers a delay fault holds back: the connection reads (and
        # answers) the client's other queries meanwhile, as over UDP.
        late: set[asyncio.Task[None]] = set()
        try:
            while True:
                size = None
                # A byte at a time: a timeout must tell a client that sent
                # nothing from one that sent half a length.
                head = await self._next_byte(reader, late)
                asked = begun = True
                head += await asyncio.wait_for(reader.readexactly(1), _TCP_IDLE)
                begun = False
                size = int.from_bytes(head, "big")
                data = await asyncio.wait_for(reader.readexactly(size), _TCP_IDLE)
                plan = self.handle(data, "tcp", peer)
                if plan.close:
                    break
                if plan.reply is not None and plan.delay:
                    framed = len(plan.reply).to_bytes(2, "big") + plan.reply
                    task = asyncio.ensure_future(self._late(writer, framed, plan))
                    late.add(task)
                    task.add_done_callback(late.discard)
                elif plan.reply is not None:
                    writer.write(len(plan.reply).to_bytes(2, "big") + plan.reply)
                    # Bounded too: a client that asks and never reads would
                    # hold its connection until the sink stops.
                    draining = True
                    await asyncio.wait_for(writer.drain(), _TCP_IDLE)
                    draining = False
        except asyncio.IncompleteReadError as error:
            # The client closed: between messages (it is done, but for the
            # answers it is owed: a client may close its side and read on),
            # or inside one, which is recorded as ignored.
            got = len(error.partial)
            if size is None and not begun and late:
                with contextlib.suppress(Exception):
                    await asyncio.gather(*late)
            if size is None and not begun:
                # Done sending, maybe still reading (a half-close): what is
                # buffered goes out before the close, which would cut it.
                await _flushed(writer)
            if size is not None:
                self.cut_short(peer, f"connection closed after {got} of {size} bytes")
            elif begun:
                self.cut_short(
                    peer, "connection closed after 1 byte of a 2-byte length"
                )
        except asyncio.TimeoutError:
            # Idle too long: before it sent anything (recorded: it held a
            # connection for nothing), between messages (nothing to record:
            # it is done), inside one, or not reading its answers.
            if draining:
                self.cut_short(
                    peer, f"closed: the client read no answer for {_TCP_IDLE:g} s"
                )
            elif size is not None:
                self.cut_short(
                    peer,
                    f"closed: no end of its {size}-byte message for {_TCP_IDLE:g} s",
                )
            elif begun:
                self.cut_short(
                    peer, f"closed: no end of its 2-byte length for {_TCP_IDLE:g} s"
                )
            elif not asked:
                self.cut_short(peer, f"closed: nothing sent for {_TCP_IDLE:g} s")
        except ConnectionError:
            # The client is gone: reset, mid-message or not. asyncio keeps
            # the reset's error in the connection's closed-future too, marked
            # read only when the connection is freed; in a reference cycle
            # (3.12, debug mode) the future may be freed first and log
            # "Future exception was never retrieved". Read it here (the
            # connection is lost already: this does not wait), then record.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), _TCP_IDLE)
            # (While its answer was on its way, the query is recorded.)
            if size is not None and not draining:
                self.cut_short(peer, f"connection reset inside its {size}-byte message")
            elif begun:
                # What was read of it: a reset may discard what came unread.
                self.cut_short(
                    peer, "connection reset before its 2-byte length was read"
                )
        finally:
            for task in late:
                task.cancel()
            self._tcp_writers.discard(writer)
            _close(writer)
            self._store.touch()  # wakes a wait for the connection's end

    async def _late(
        self, writer: asyncio.StreamWriter, framed: bytes, plan: _Plan
    ) -> None:
        """A TCP answer that a delay fault holds back, sent when it is due."""
        try:
            await asyncio.sleep(plan.delay)
        except asyncio.CancelledError:
            self.unsent(plan, self._why_unsent("its TCP connection closed first"))
            raise
        if writer.is_closing():
            self.unsent(plan, self._why_unsent("its TCP connection closed first"))
            return
        writer.write(framed)
        waiting = writer.transport.get_write_buffer_size()
        if waiting > _LATE_WAITING_MAX:
            # Written when due, without waiting for the client to read: one
            # that pipelines queries and reads none had every answer held
            # here (2000 of 60 KB: 90 MB), its connection never cut.
            self.cut_short(
                writer.get_extra_info("peername"),
                f"closed: the client read no answer while {waiting} bytes of "
                "delayed answers waited",
            )
            writer.transport.abort()

    def _why_unsent(self, otherwise: str) -> str:
        return "the sink stopped first" if self._closed else otherwise

    @staticmethod
    async def _next_byte(
        reader: asyncio.StreamReader, late: set[asyncio.Task[None]]
    ) -> bytes:
        """The first byte of the client's next message, within the idle
        limit; a client waiting for a late answer is not idle."""
        while True:
            try:
                return await asyncio.wait_for(reader.readexactly(1), _TCP_IDLE)
            except asyncio.TimeoutError:
                if not late:
                    raise


def _has_names_below(rules: Sequence[_Rule], name: dns.name.Name) -> bool:
    """Whether a record is published for a name below ``name``."""
    return any(
        rule.kind == "record" and rule.name != name and rule.name.is_subdomain(name)
        for rule in rules
    )


def _by_type(rdatas: list[dns.rdata.Rdata]) -> dict[int, list[dns.rdata.Rdata]]:
    """``rdatas`` grouped by record type, in the order they come."""
    grouped: dict[int, list[dns.rdata.Rdata]] = {}
    for rdata in rdatas:
        grouped.setdefault(rdata.rdtype, []).append(rdata)
    return grouped


def _peer(peer: Any) -> tuple[str, int]:
    """A client's address as `DNSQuery.peer` gives it."""
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("?", 0)


def _copy_do(query: dns.message.Message, response: dns.message.Message) -> None:
    """RFC 3225 3: the DO bit of a query is copied into every response to
    it (make_response leaves it off); the stub signs nothing all the same,
    which a DNSSEC-aware client then sees for itself."""
    if query.edns >= 0 and query.ednsflags & dns.flags.DO:
        response.ednsflags |= dns.flags.DO


def _refusal(query: dns.message.Message, data: bytes, rcode: dns.rcode.Rcode) -> bytes:
    """A reply with only a header, to a query that could be parsed: with
    an OPT record when the query had one (RFC 6891 6.1.1). A NOTIMP or
    FORMERR without it reads as a server that does not speak EDNS (dig
    says "retry with '+noedns'")."""
    try:
        response = dns.message.make_response(
            query, copy_mode=dns.message.CopyMode.NOTHING
        )
        response.set_rcode(rcode)
        _copy_do(query, response)
        return response.to_wire()
    except Exception:  # an opcode dnspython cannot reply to: the bare header
        return _bare_reply(data, rcode)


def _bare_reply(data: bytes, rcode: dns.rcode.Rcode) -> bytes:
    """A reply with only a header: for queries that cannot be parsed."""
    query_flags = int.from_bytes(data[2:4], "big")
    reply = dns.message.Message(id=int.from_bytes(data[:2], "big"))
    reply.flags = dns.flags.QR | (query_flags & dns.flags.RD)
    reply.set_opcode(dns.opcode.Opcode.make((query_flags >> 11) & 0xF))
    reply.set_rcode(rcode)
    return reply.to_wire()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        # Answers a delay fault holds back, until they are sent.
        self._late: dict[int, tuple[asyncio.TimerHandle, _Plan]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        plan = self.server.handle(data, "udp", addr)
        if plan.reply is None:
            return  # a hang or a disconnect, over UDP: no answer
        if plan.delay:
            handle = asyncio.get_running_loop().call_later(
                plan.delay, self._send_late, plan, addr
            )
            self._late[plan.number] = handle, plan
        else:
            self._send(plan.reply, addr)

    def _send_late(self, plan: _Plan, addr: tuple[str | Any, int]) -> None:
        self._late.pop(plan.number, None)
        assert plan.reply is not None
        self._send(plan.reply, addr)

    def drop_late_answers(self) -> None:
        """The sink stops: what is held back is never sent (and says so)."""
        late, self._late = self._late, {}
        for handle, plan in late.values():
            handle.cancel()
            self.server.unsent(plan, "the sink stopped first")

    def _send(self, reply: bytes, addr: tuple[str | Any, int]) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for a client that left: nothing to do


def server_for(view: Mailbox) -> DNSServer:
    """The stub of the view's sink, started on its loop on first use (test
    thread). It follows the sink's fault rules at the ``DNS:`` stages."""
    sink = view.sink
    host, faults = sink.host, view._fault_registry()

    def start(loop: asyncio.AbstractEventLoop, store: Store) -> DNSServer:
        server = DNSServer(host, store, faults)
        server.start(loop)
        return server

    return sink.attach("dns", start)


# -- the test's view --------------------------------------------------------------------


def question_name(text: str) -> str:
    """``text`` as the stub sees it in a question: A-labels, no final dot
    (a fault rule's ``match`` at a ``DNS:`` stage)."""
    __tracebackhide__ = True
    return _owner_name(text, "the name").to_text(omit_final_dot=True)


def _owner_name(text: str, what: str = "name") -> dns.name.Name:
    """A name to publish records for: `_name`, but not a wildcard, which a
    server expands to the names under it (RFC 4592); the stub publishes
    names as they are, and "*.example" answered no name it should cover."""
    __tracebackhide__ = True
    if isinstance(text, str) and "@" in text:
        # A recipient's address for its domain: published under a name no
        # lookup of the domain finds, which then answers "no records".
        domain = text.rpartition("@")[2]
        raise ValueError(
            f"{what} {text!r} is an address: give its domain ({domain!r})"
            if domain.strip(". ")
            else f"{what} {text!r} is not a domain name: a domain has no '@'"
        )
    owner = _name(text, what)
    if owner.is_wild():
        raise ValueError(
            f"{what} {text!r} is a wildcard, which the stub does not expand: "
            "give each name the application asks for"
        )
    return owner


def _name(text: str, what: str = "name") -> dns.name.Name:
    __tracebackhide__ = True
    if not isinstance(text, str) or not text.strip(". "):
        raise ValueError(f"{what} must be a domain name, got {text!r}")
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as error:
        raise ValueError(f"{what} {text!r} is not a domain name: {error}") from None


# A label of a host name (RFC 1123 2.1): letters, digits and hyphens, not
# at either end. MX records must name hosts; IDNA labels (xn--) fit.
_HOST_LABEL = re.compile(rb"[a-z0-9]([a-z0-9-]*[a-z0-9])?", re.IGNORECASE)


def _host_problem(name: dns.name.Name) -> str | None:
    """Why ``name`` (absolute) cannot be a host's name, or None."""
    for label in name.labels[:-1]:  # the last is the root's, empty
        if not _HOST_LABEL.fullmatch(label):
            shown = label.decode("ascii", "backslashreplace")
            if label.startswith(b"-") or label.endswith(b"-"):
                return f"its label {shown!r} starts or ends with a hyphen"
            return (
                f"its label {shown!r} has characters other than letters, "
                "digits and hyphens"
            )
    return None


def _mx_host(text: str) -> dns.name.Name:
    """An MX target given as a host name, refused in the test's terms."""
    __tracebackhide__ = True
    name = _name(text, "MX host")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass  # not an address: good
    else:
        raise ValueError(
            f"MX host {text!r} is an address, and an MX record names a host: "
            "publish the address under a host name with a() or aaaa(), or "
            "give the sink itself as the target"
        )
    problem = _host_problem(name)
    if problem:
        raise ValueError(f"MX host {text!r} is not a host name: {problem}")
    return name


def _lifetime(seconds: float) -> float:
    # dnspython times out every lookup at once with a lifetime of 0 or less,
    # and never with NaN or infinity: refuse them here, by name.
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 < seconds < math.inf
    ):
        finite = "finite " if seconds == math.inf else ""
        raise ValueError(
            f"lifetime must be a {finite}number of seconds > 0, got "
            f"{shown_number(seconds)}"
        )
    return float(seconds)


def _per_try(seconds: float | None, lifetime: float) -> float:
    """How long each try of a lookup waits: ``seconds`` (a number > 0, at
    most ``lifetime``), or the whole lifetime."""
    if seconds is None:
        return lifetime
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 < seconds <= lifetime
    ):
        raise ValueError(
            "timeout (each try) must be a number of seconds > 0 and at most "
            f"the lifetime ({lifetime:g}), got {shown_number(seconds)}"
        )
    return float(seconds)


def _host_key(name: dns.name.Name) -> str:
    """How `DNSZone.smtp_ports` keys and `DNSZone.mx` returns a host name:
    lowercase, ASCII (IDNA), no final dot; as an application gets it from
    ``exchange.to_text(omit_final_dot=True)``, up to case."""
    return name.canonicalize().to_text(omit_final_dot=True)


class _HostPorts(dict[str, int]):
    """`DNSZone.smtp_ports`: a dict (a snapshot) that finds a host however
    it is spelt. An answer's names take the case of the question (dnspython
    compresses them against it), so an application may ask for
    ``mx1.PARTNER.example``; and a test may write the Unicode form of an
    international name that the resolver answers in IDNA. Still a dict, as
    it always was: ``json.dumps`` and ``|`` work on it."""

    def __missing__(self, host: str | dns.name.Name) -> int:
        key = _spelt_key(host)
        if key is None or key == host or not super().__contains__(key):
            raise KeyError(host)
        return super().__getitem__(key)

    def __contains__(self, host: object) -> bool:
        if super().__contains__(host):
            return True
        key = _spelt_key(host)
        return key is not None and super().__contains__(key)

    def get(self, host: str, default: Any = None) -> Any:
        # dict.get never calls __missing__: look up as [] does.
        return self[host] if host in self else default  # noqa: SIM401


def _spelt_key(host: object) -> str | None:
    """``host`` as `_HostPorts` keys it, or None if it is no domain name.
    A `dns.name.Name` too: what an MX answer's ``exchange`` is."""
    if isinstance(host, dns.name.Name):
        return _host_key(host)
    if not isinstance(host, str):
        return None
    try:
        return _host_key(_name(host))
    except ValueError:
        return None


class DNSZone:
    """A test's DNS records, served by its sink's stub (``smtpsink.dns``).

    Records are the test's own: they go when the test ends, like its mail.
    Names the test did not declare get NXDOMAIN (but for a name with
    declared names below it, which exists: NOERROR with no answer).
    """

    def __init__(self, view: Mailbox) -> None:
        # The view adds this zone's failures as its fault rules, so they go
        # with its other rules when the test ends.
        self._view = view
        self._server = server_for(view)
        self._owner = _Owner()  # marks this zone's rules on the server
        self._start = self._server.last_number()
        self._smtp_ports: dict[str, int] = {}

    @property
    def host(self) -> str:
        """The stub's address (the sink's, e.g. ``127.0.0.1``)."""
        return self._server.host

    @property
    def port(self) -> int:
        """The stub's port, the same for UDP and TCP."""
        return self._server.port

    # -- records ------------------------------------------------------------------

    def _add(self, name: str, kind: str, *texts: str) -> None:
        __tracebackhide__ = True
        owner = _owner_name(name)
        self._publish([self._rule(owner, kind, text) for text in texts])

    def _publish(self, rules: list[_Rule]) -> None:
        __tracebackhide__ = True
        self._view._check_open("a DNS record")
        self._server.add(rules)

    def _rule(self, owner: dns.name.Name, kind: str, text: str) -> _Rule:
        __tracebackhide__ = True
        rdtype = dns.rdatatype.from_text(kind)
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        except (dns.exception.DNSException, ValueError) as error:
            raise ValueError(f"{text!r} is not a {kind} record: {error}") from None
        return _Rule(self._owner, owner, "record", rdata)

    def mx(self, domain: str, hosts: Sequence[tuple[int, MXTarget]]) -> list[str]:
        """Publish MX records for ``domain``: ``[(preference, target), ...]``.

        A target that is a sink (or a mailbox) gets the host name
        ``mxN.<domain>``, N its position among the domain's MX records
        (from 1, in the order given, counting on after those of earlier
        calls: a second call for a domain adds records, as `a` and `txt`
        do), with an A (or AAAA) record for the sink's address; its SMTP
        port is in `smtp_ports`. A target given as a host name (not an
        address) is published under that name: add its address with `a` or
        `aaaa`. Returns the MX host
        names, in order, as `smtp_ports` keys them: lowercase, ASCII (IDNA
        for an international name), without the final dot.

        Nothing is published when an entry is refused, and a sink's host
        name is never one already in use on the stub (by this zone or another
        mailbox's of the same sink): it would merge the
        sink with another host.
        """
        __tracebackhide__ = True  # a test's mistake points at its line
        if not isinstance(hosts, (list, tuple)) or not hosts:
            raise ValueError(
                "hosts must be a non-empty list of (preference, sink or host name)"
            )
        owner = _owner_name(domain, "domain")
        # The names given (mxN) and the sinks already published are read and
        # then added to: one call at a time on the stub, which every mailbox
        # of the sink shares, and not while a closing one's records go.
        with self._server.mx_lock:
            return self._mx(domain, owner, hosts)

    def _mx(
        self,
        domain: str,
        owner: dns.name.Name,
        hosts: Sequence[tuple[int, MXTarget]],
    ) -> list[str]:
        """`mx`, under the stub's ``mx_lock``."""
        __tracebackhide__ = True
        if self._has_null_mx(owner):
            raise ValueError(
                f"{_host_key(owner)} has a null MX (null_mx()): it is a domain's "
                "only MX record (RFC 7505 3), so a client would find both; "
                "publish one or the other"
            )
        position = self._mx_count(owner)
        in_use = self._names_in_use()
        rules: list[_Rule] = []
        names: list[str] = []
        ports: dict[str, int] = {}
        # The domain's sinks so far, by address: smtpsink_factory() with
        # the same settings returns the same sink, and a "backup" MX that is
        # the first one would fail (or pass) a fallback test for nothing.
        sinks = {
            address: host
            for address, (_, host) in self._server.mx_sinks.get(owner, {}).items()
        }
        added: dict[tuple[str, int], str] = {}
        for entry in hosts:
            position += 1
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise ValueError(
                    f"each MX entry is (preference, sink or host name), got {entry!r}"
                )
            preference, target = entry
            if (
                not isinstance(preference, int)
                or isinstance(preference, bool)
                or not 0 <= preference <= 65535
            ):
                raise ValueError(
                    f"an MX preference is a whole number 0-65535, got {preference!r}"
                )
            # A sink or a mailbox, recognized by its address (an import of
            # their modules here would close an import circle).
            if isinstance(getattr(target, "host", None), str) and isinstance(
                getattr(target, "port", None), int
            ):
                assert not isinstance(target, str)
                try:
                    host = dns.name.Name((f"mx{position}".encode(), *owner.labels))
                except dns.name.NameTooLong:
                    raise ValueError(
                        f"domain {domain!r} is too long for the sink's MX host "
                        f"name mx{position}.<domain> (255 bytes at most)"
                    ) from None
                problem = _host_problem(host)
                if problem:
                    raise ValueError(
                        f"domain {domain!r} cannot name the sink's MX host "
                        f"(mx{position}.{domain.rstrip('.')}): {problem}"
                    )
                if host in in_use:
                    raise ValueError(
                        f"{_host_key(host)}, the name mx() gives the sink at "
                        f"position {position} of {_host_key(owner)}'s MX records, "
                        "is already in use on this DNS stub (this or another mailbox of the "
                        "sink); give the other host "
                        "another name"
                    )
                address = ipaddress.ip_address(target.host)
                same = sinks.get((str(address), target.port))
                if same is not None:
                    raise ValueError(
                        f"MX entry {position - self._mx_count(owner)} is the "
                        f"same server as {same} ({target.host} port "
                        f"{target.port}): smtpsink_factory() with the same "
                        "settings returns the same sink; give the other one a "
                        "setting of its own (hostname='backup.test')"
                    )
                sinks[(str(address), target.port)] = _host_key(host)
                added[(str(address), target.port)] = _host_key(host)
                kind = "A" if address.version == 4 else "AAAA"
                rules.append(self._rule(host, kind, str(address)))
                ports[_host_key(host)] = target.port
            elif isinstance(target, str):
                host = _mx_host(target)
            else:
                raise ValueError(
                    f"an MX target is a sink, a mailbox or a host name, got {target!r}"
                )
            in_use.add(host)
            # Built, not parsed from text: the names are checked already.
            # (dnspython leaves this constructor unannotated.)
            mx = dns.rdtypes.ANY.MX.MX(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.MX, preference, host.canonicalize()
            )
            rules.append(_Rule(self._owner, owner, "record", mx))
            names.append(_host_key(host))
        self._publish(rules)
        self._smtp_ports.update(ports)
        published = self._server.mx_sinks.setdefault(owner, {})
        published.update((key, (self._owner, host)) for key, host in added.items())
        return names

    def _mx_count(self, owner: dns.name.Name) -> int:
        """How many MX records (not a null MX) the stub has for ``owner``:
        a sink's host is named by its position among them (mx1, mx2...)."""
        return sum(
            1
            for rule in self._server.rules
            if rule.name == owner
            and isinstance(rule.rdata, dns.rdtypes.ANY.MX.MX)
            and rule.rdata.exchange != dns.name.root
        )

    def _names_in_use(self) -> set[dns.name.Name]:
        """The names the stub has records for or points MX records at (every
        zone on it: two mailboxes of one sink share it)."""
        names = set()
        for rule in self._server.rules:
            names.add(rule.name)
            if isinstance(rule.rdata, dns.rdtypes.ANY.MX.MX):
                names.add(rule.rdata.exchange)
        return names

    def null_mx(self, domain: str) -> None:
        """Publish a null MX (RFC 7505: ``0 .``): the domain takes no mail.
        It stands alone: not for a domain with MX records (`mx`)."""
        __tracebackhide__ = True
        owner = _owner_name(domain, "domain")
        if self._mx_count(owner):
            raise ValueError(
                f"{_host_key(owner)} has MX records (mx()): a null MX is a "
                "domain's only MX record (RFC 7505 3), so a client would find "
                "both; publish one or the other"
            )
        self._publish([self._rule(owner, "MX", "0 .")])

    def _has_null_mx(self, owner: dns.name.Name) -> bool:
        return any(
            rule.name == owner
            and isinstance(rule.rdata, dns.rdtypes.ANY.MX.MX)
            and rule.rdata.exchange == dns.name.root
            for rule in self._server.rules
        )

    def a(self, name: str, *addresses: str) -> None:
        """Publish IPv4 addresses for ``name``."""
        __tracebackhide__ = True
        self._addresses(name, addresses, 4)

    def aaaa(self, name: str, *addresses: str) -> None:
        """Publish IPv6 addresses for ``name``."""
        __tracebackhide__ = True
        self._addresses(name, addresses, 6)

    def _addresses(self, name: str, addresses: Sequence[str], version: int) -> None:
        __tracebackhide__ = True
        kind = "A" if version == 4 else "AAAA"
        if not addresses:
            raise ValueError(f"{kind} needs at least one address")
        for address in addresses:
            if not isinstance(
                address, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)
            ):
                # ip_address() reads 5 as 0.0.0.5, and bytes as packed.
                raise ValueError(f"{address!r} is not an IPv{version} address")
            try:
                ok = ipaddress.ip_address(address).version == version
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{address!r} is not an IPv{version} address")
        self._add(name, kind, *(str(ipaddress.ip_address(a)) for a in addresses))

    def txt(self, name: str, *strings: str | bytes) -> None:
        """Publish one TXT record for ``name`` (SPF, DKIM keys, DMARC...).

        Each string (str, as UTF-8, or bytes) is one of the record's
        character-strings: ``txt(name, "a", "b")`` is one record of two. A
        string longer than 255 bytes (a DKIM key) is split into pieces of
        at most 255 bytes, as DNS requires (a str between two characters,
        so that each piece decodes alone), and a reader joins them back.
        """
        __tracebackhide__ = True
        owner = _owner_name(name)
        if not strings:
            raise ValueError("txt needs at least one string")
        pieces: list[bytes] = []
        for text in strings:
            if isinstance(text, str):
                data = text.encode()
            elif isinstance(text, (bytes, bytearray)):
                data = bytes(text)
            else:
                # bytes(5) is five NUL bytes, and bytes(["a"]) a puzzling
                # TypeError: refuse anything else by name.
                raise TypeError(
                    f"txt() takes strings as str or bytes, got {text!r}"
                    + (
                        ": pass a record's strings as arguments of their own, "
                        "txt(name, *strings)"
                        if isinstance(text, (list, tuple))
                        else ""
                    )
                )
            pieces.extend(_pieces(data, whole_characters=isinstance(text, str)))
        # The answer must fit in one DNS message (65,535 bytes over TCP):
        # the header, the question and the record's own fields besides. A
        # larger one was taken, and every query for it went unanswered.
        size = sum(len(piece) + 1 for piece in pieces)
        room = 65_535 - 12 - (len(owner.to_wire() or b"") + 4) - 12 - 11  # - EDNS
        if size > room:
            raise ValueError(
                f"a TXT record of {size} bytes does not fit in a DNS message "
                f"(at most {room} for {name!r})"
            )
        # So must all of the name's TXT records together, as one answer
        # carries them: each record's fields besides take 12 bytes more.
        published = [
            r.rdata
            for r in self._server.rules
            if r.name == owner and r.rdata is not None
            if r.rdata.rdtype == dns.rdatatype.TXT
        ]
        if published:
            total = size + sum(len(r.to_digestable()) + 12 for r in published)
            if total > room:
                raise ValueError(
                    f"the TXT records of {name!r} would take {total} bytes "
                    f"with this one: more than a DNS message holds ({room})"
                )
        rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, pieces)
        self._publish([_Rule(self._owner, owner, "record", rdata)])
        if b"_domainkey" in (label.lower() for label in owner.labels):
            from ._dkim import note_stub_record

            note_stub_record(owner.to_text(omit_final_dot=True), b"".join(pieces))

    # -- failures ------------------------------------------------------------------

    def nxdomain(self, name: str) -> None:
        """Answer NXDOMAIN for ``name``, whatever else is published for it."""
        __tracebackhide__ = True
        self._publish([_Rule(self._owner, _owner_name(name), "nxdomain")])

    def servfail(self, name: str, *, times: int | None = None) -> Fault:
        """Answer SERVFAIL for ``name`` (every time, or the first ``times``).

        The same as ``smtpsink.fail("DNS:QUERY", 451, match=name,
        times=times)``: a fault rule of the test, returned.
        """
        __tracebackhide__ = True
        return self._view.fail("DNS:QUERY", 451, match=self._match(name), times=times)

    def timeout(self, name: str, *, times: int | None = None) -> Fault:
        """Never answer queries for ``name`` (every time, or the first
        ``times``): the resolver gives up after its own timeout.

        The same as ``smtpsink.hang("DNS:QUERY", match=name, times=times)``.
        """
        __tracebackhide__ = True
        return self._view.hang("DNS:QUERY", match=self._match(name), times=times)

    @staticmethod
    def _match(name: str) -> str:
        __tracebackhide__ = True
        return _owner_name(name).to_text()  # validated, as records are

    def clear(self) -> None:
        """Remove this test's records (done at its end; its failures are
        fault rules, removed with the others)."""
        self._server.remove(self._owner)
        self._smtp_ports.clear()

    # -- what happened, and how to ask -------------------------------------------------

    @property
    def queries(self) -> tuple[DNSQuery, ...]:
        """The queries the stub received since this zone was made."""
        __tracebackhide__ = True
        # Kept past its test, it listed the next tests' lookups as its own
        # (and its resolver asked their records): refused, as its mailbox.
        self._view._check_ended()
        return self._server.queries_since(self._start)

    @property
    def smtp_ports(self) -> dict[str, int]:
        """``{"mx1.partner.example": 40123, ...}``: the SMTP port behind
        each MX host name that `mx` made for a sink. MX records cannot say
        a port; an application delivering by MX needs it in its test
        configuration (see :doc:`relay`).

        A dict (a snapshot), keyed as `mx` returns the names (lowercase,
        ASCII, no final dot); a lookup (``[]``, ``in``, ``get``) finds a
        host in any case, with or without the final dot, in Unicode or IDNA
        form, so a name taken from a resolver's answer works as it is."""
        __tracebackhide__ = True
        self._view._check_ended()
        return _HostPorts(self._smtp_ports)

    def resolver(
        self, lifetime: float = 5.0, timeout: float | None = None
    ) -> dns.resolver.Resolver:
        """A new dnspython ``Resolver`` that asks only this stub, giving up
        on a lookup after ``lifetime`` seconds (a number > 0). ``timeout``
        is how long each try waits (default: the whole lifetime, so a slow
        answer is never taken for a lost one); give less to have a question
        left unanswered (``timeout(name, times=1)``) asked again."""
        __tracebackhide__ = True
        self._view._check_ended()
        lifetime, timeout = _lifetime(lifetime), _per_try(timeout, lifetime)
        resolver = dns.resolver.Resolver(configure=False)
        self._point(resolver, lifetime, timeout)
        return resolver

    def _point(self, resolver: Any, lifetime: float, timeout: float) -> None:
        resolver.port = self.port  # before nameservers: strings take this port
        resolver.nameservers = [self.host]
        resolver.lifetime = lifetime
        resolver.timeout = timeout

    @contextlib.contextmanager
    def as_default(
        self, lifetime: float = 5.0, timeout: float | None = None
    ) -> Iterator[dns.resolver.Resolver]:
        """Make dnspython's default resolvers (``dns.resolver.resolve`` and
        ``dns.asyncresolver.resolve``) ask this stub inside the block, and
        put the previous ones back after it. ``lifetime`` and ``timeout``
        as for `resolver`."""
        import dns.asyncresolver

        lifetime, timeout = _lifetime(lifetime), _per_try(timeout, lifetime)
        resolver = self.resolver(lifetime, timeout)
        async_resolver = dns.asyncresolver.Resolver(configure=False)
        self._point(async_resolver, lifetime, timeout)
        entry = (resolver, async_resolver)
        with _DEFAULTS_LOCK:
            if not _DEFAULTS:
                _DEFAULTS.append(
                    (dns.resolver.default_resolver, dns.asyncresolver.default_resolver)
                )
            _DEFAULTS.append(entry)
            _set_defaults(entry)
        try:
            yield resolver
        finally:
            # Blocks of two sinks may end in any order: each leaves the
            # innermost one still open in force, the last the first saved
            # (restoring what each found left a stub in force for good).
            with _DEFAULTS_LOCK:
                _DEFAULTS.remove(entry)
                _set_defaults(_DEFAULTS[-1])
                if len(_DEFAULTS) == 1:
                    _DEFAULTS.clear()

    def _all_answered(self, since: float) -> bool:
        """Whether every lookup since ``since`` got records (NOERROR with an
        answer): then DNS is not why no client connected."""
        return all(
            query.outcome == "NOERROR" and bool(query.answers)
            for query in self.queries
            if query.time >= since and query.outcome != "ignored"
        )

    def _lookups_hint(self, since: float) -> list[str]:
        """For a failure report where no client connected: the lookups the
        stub answered since ``since`` (a time.time()), one line per distinct
        question and outcome. An application that delivers by MX and looked
        up a mistyped name got NXDOMAIN and connected nowhere; "no client
        connected" alone sends the reader to the host and port. Empty when
        the stub was not asked (ignored datagrams are no lookup)."""
        counts: dict[tuple[str, str, str, tuple[str, ...], str], int] = {}
        for query in self.queries:
            if query.time < since or query.outcome == "ignored":
                continue
            key = (
                query.name or "<malformed>",
                query.type or "",
                query.outcome,
                query.answers,
                query.note,
            )
            counts[key] = counts.get(key, 0) + 1
        # This test's names (not other zones' on the same stub): what a
        # mistyped lookup most likely meant.
        published: dict[str, str] = {}
        for rule in self._server.rules:
            if rule.owner is self._owner and rule.kind == "record":
                text = rule.name.to_text()
                published.setdefault(text.lower(), text)
        lines = []
        for (name, rdtype, outcome, answers, note), count in counts.items():
            asked = f"{name} {rdtype}" if rdtype else name
            shown = f": {', '.join(answers)}" if answers else ""
            extra = [note] if note else []
            if count > 1:
                extra.append(f"asked {count} times")
            if outcome == "NXDOMAIN":
                others = [p for p in published if p != name.lower()]
                close = difflib.get_close_matches(name.lower(), others, n=1)
                if close:
                    extra.append(f"published: {published[close[0]]}")
            more = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"  {asked} -> {outcome}{shown}{more}")
        if len(lines) > _HINT_LISTED:
            left = len(lines) - _HINT_LISTED
            lines = [*lines[:_HINT_LISTED], f"  ... and {left} more"]
        return lines

    def _unasked_hint(self, since: float) -> list[str]:
        """For a failure report where no client connected: records this zone
        published that nothing looked up since ``since``. The commonest
        mistake with the stub is an application that resolves through the
        system's resolver, which never asks it."""
        if any(
            query.time >= since and query.outcome != "ignored" for query in self.queries
        ):
            return []
        names = sorted(
            {
                rule.name.to_text()
                for rule in self._server.rules
                if rule.owner is self._owner and rule.kind == "record"
            }
        )
        if not names:
            return []
        shown = join_shortened(names, _HINT_LISTED)
        return [
            f"  (the DNS stub holds records for {shown}, but nothing asked it: "
            "does the application resolve through it, with smtpsink.dns.resolver() "
            "or smtpsink.dns.as_default()?)"
        ]

    def __repr__(self) -> str:
        mine = [r for r in self._server.rules if r.owner is self._owner]
        return f"<DNSZone {self.host}:{self.port} rules={len(mine)}>"


def _close(writer: asyncio.StreamWriter) -> None:
    """Close a TCP client's connection; cut it off if answers are still
    unsent: a client that does not read never takes them, and a graceful
    close would wait for ever (on uvloop, in the loop's close at the end)."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()


def _pieces(data: bytes, whole_characters: bool) -> list[bytes]:
    """``data`` in character-strings of at most 255 bytes (one empty one
    for no data); with ``whole_characters``, none ends inside a UTF-8
    character."""
    pieces: list[bytes] = []
    start = 0
    while start < len(data) or not pieces:
        end = min(start + 255, len(data))
        if whole_characters and end < len(data):
            while end > start + 1 and data[end] & 0xC0 == 0x80:  # a continuation
                end -= 1
        pieces.append(data[start:end])
        start = end
    return pieces


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait, up to the idle limit, until ``writer`` has sent everything it
    holds (drain() alone waits only until it holds less than 64 KiB)."""
    if writer.transport.get_write_buffer_size():
        writer.transport.set_write_buffer_limits(high=0)
        with contextlib.suppress(Exception):  # gone, or too slow: cut then
            await asyncio.wait_for(writer.drain(), _TCP_IDLE)
