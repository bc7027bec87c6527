"""A small application that delivers mail by MX, for the "Relay and MX" page.

It stands in for a forwarder, a mailing-list manager or a bounce handler:
code that looks up each recipient domain's MX records with dnspython and
hands the message to the best MX host that takes it, with smtplib, trying
each of the host's addresses (A and AAAA records) in turn.

Two things are configurable, as they must be for tests: the resolver (the
stub's, in tests) and the SMTP port of each MX host (port 25 in production;
a sink's port in tests, see ``port_for``). A host that ``port_for`` has no
port for is a mistake in that configuration, not a host that is down: it is
raised as `NoPortForHost`, naming the host, before anything is sent.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterable

import dns.exception
import dns.resolver


class TemporaryFailure(Exception):
    """Try again later (a 4xx, SERVFAIL, a timeout, no MX host reachable).
    ``bounced``: recipients an MX host refused for good on the way (a 550
    for one while another got a 451): bounce those, retry the rest."""

    def __init__(
        self, text: str, bounced: dict[str, PermanentFailure] | None = None
    ) -> None:
        super().__init__(text)
        self.bounced = bounced or {}


class MaybeDelivered(TemporaryFailure):
    """The connection was lost after the message was sent, before the
    reply: the server may have it. Retry later at the same host, not at
    the next MX (the message could arrive twice)."""


class PermanentFailure(Exception):
    """Do not retry: bounce the message (a 5xx, NXDOMAIN, a null MX, an
    address with non-ASCII letters before its @ to a host without
    SMTPUTF8)."""


class NoPortForHost(LookupError):
    """``port_for`` has no SMTP port for an MX host (a test that did not
    add one for a host given to ``mx()`` by name): nothing was sent."""


class PartialDelivery(Exception):
    """Some recipients have the message, others not: retry or bounce only
    those in ``failed`` (``{recipient: TemporaryFailure or
    PermanentFailure}``); ``delivered`` is ``{domain: MX host used}``."""

    def __init__(
        self,
        delivered: dict[str, str],
        failed: dict[str, TemporaryFailure | PermanentFailure],
    ) -> None:
        self.delivered = delivered
        self.failed = failed
        reasons = "; ".join(f"{rcpt}: {error}" for rcpt, error in failed.items())
        super().__init__(f"not delivered to {len(failed)} recipients: {reasons}")


class _Client(smtplib.SMTP):
    """smtplib's client, knowing whether the message's content went out:
    a connection lost after that may have delivered it."""

    content_sent = False

    def send(self, s: bytes | str) -> None:
        super().send(s)
        # What data() sends: the content and its final dot, in one call.
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.content_sent = True


class MXDelivery:
    def __init__(
        self,
        resolver: dns.resolver.Resolver | None = None,
        port_for: Callable[[str], int] = lambda host: 25,
        helo: str = "forwarder.example",
        timeout: float = 10.0,
    ) -> None:
        self.resolver = resolver or dns.resolver.get_default_resolver()
        self.port_for = port_for
        self.helo = helo
        self.timeout = timeout

    def mx_hosts(self, domain: str) -> list[str]:
        """The domain's mail hosts, best first (RFC 5321 section 5.1)."""
        try:
            answer = self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise PermanentFailure(f"{domain}: no such domain") from None
        except dns.resolver.NoAnswer:
            return [domain]  # no MX: the domain's own address is its MX
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
            raise TemporaryFailure(f"{domain}: DNS lookup failed: {error}") from None
        records = sorted(answer, key=lambda mx: mx.preference)
        if len(records) == 1 and records[0].exchange.to_text() == ".":
            raise PermanentFailure(f"{domain}: accepts no mail (null MX, RFC 7505)")
        return [mx.exchange.to_text(omit_final_dot=True) for mx in records]

    def addresses_of(self, host: str) -> list[str]:
        """Every address of an MX host, IPv4 (A) then IPv6 (AAAA): a host
        may have either or both (RFC 5321 section 5.1)."""
        addresses, errors = [], []
        for rdtype in ("A", "AAAA"):
            try:
                addresses += [str(r) for r in self.resolver.resolve(host, rdtype)]
            except dns.resolver.NoAnswer:
                continue  # no address of this kind
            except dns.resolver.NXDOMAIN:
                errors.append("no such host")
                break
            except dns.exception.DNSException as error:
                errors.append(f"{rdtype} lookup failed: {error}")
        if not addresses:
            raise TemporaryFailure(
                f"{host}: no address: {'; '.join(errors) or 'no A or AAAA record'}"
            )
        return addresses

    def port_of(self, host: str, domain: str) -> int:
        try:
            return self.port_for(host)
        except LookupError:
            raise NoPortForHost(
                f"no SMTP port for MX host {host} (of {domain}): "
                "port_for has none for it"
            ) from None

    def deliver(
        self, sender: str, recipients: Iterable[str], raw: bytes
    ) -> dict[str, str]:
        """Deliver to every recipient; returns ``{domain: MX host used}``.

        Raises the failure when no recipient has the message and all failed
        alike, and `PartialDelivery` when some have it (retrying them all
        would send them a second copy) or their failures differ (bounce
        some, retry others). Every domain's MX hosts and their ports are
        looked up before anything is sent, so `NoPortForHost` comes first."""
        by_domain: dict[str, list[str]] = {}
        for recipient in recipients:
            by_domain.setdefault(recipient.rpartition("@")[2].lower(), []).append(
                recipient
            )
        delivered: dict[str, str] = {}
        failed: dict[str, TemporaryFailure | PermanentFailure] = {}
        hosts: dict[str, list[tuple[str, int]]] = {}
        for domain, rcpts in by_domain.items():
            try:
                hosts[domain] = [
                    (host, self.port_of(host, domain)) for host in self.mx_hosts(domain)
                ]
            except (TemporaryFailure, PermanentFailure) as error:
                failed.update(dict.fromkeys(rcpts, error))
        for domain, mx_hosts in hosts.items():
            rcpts = by_domain[domain]
            try:
                delivered[domain], refused, bounced = self._deliver_to_domain(
                    domain, mx_hosts, sender, rcpts, raw
                )
            except (TemporaryFailure, PermanentFailure) as error:
                failed.update(dict.fromkeys(rcpts, error))
                if isinstance(error, TemporaryFailure):
                    failed.update(error.bounced)  # refused for good on the way
                continue
            failed.update(bounced)
            for rcpt, (code, reply) in refused.items():  # the MX took the others
                kind = PermanentFailure if code >= 500 else TemporaryFailure
                text = reply.decode("utf-8", "replace")
                failed[rcpt] = kind(f"{delivered[domain]}: {code} {text}")
        errors = {id(error) for error in failed.values()}
        if failed and not delivered and len(errors) == 1:
            raise next(iter(failed.values()))
        if failed:
            raise PartialDelivery(delivered, failed)
        return delivered

    def _deliver_to_domain(
        self,
        domain: str,
        mx_hosts: list[tuple[str, int]],
        sender: str,
        recipients: list[str],
        raw: bytes,
    ) -> tuple[str, dict[str, tuple[int, bytes]], dict[str, PermanentFailure]]:
        """The MX host that took the message, the recipients it refused
        while taking it for the others, and those an MX host before it
        refused for good (each naming that host)."""
        errors = []
        bounced: dict[str, PermanentFailure] = {}
        for host, port in mx_hosts:
            try:
                refused = self._deliver_to_host(host, port, sender, recipients, raw)
                return host, refused, bounced
            except MaybeDelivered as error:
                error.bounced = bounced  # those are not "maybe"
                raise
            except _SomeRefusedForGood as error:
                # A 550 is this recipient's answer from the domain: the
                # next MX must not take it. Only the others go on.
                for rcpt, (code, reply) in error.refused.items():
                    text = reply.decode("utf-8", "replace")
                    bounced[rcpt] = PermanentFailure(f"{host}: {code} {text}")
                recipients = [r for r in recipients if r not in error.refused]
                errors.append(str(error))
            except TemporaryFailure as error:
                errors.append(str(error))  # next MX
        raise TemporaryFailure(
            f"{domain}: no MX host took it: {'; '.join(errors)}", bounced=bounced
        )

    def _deliver_to_host(
        self, host: str, port: int, sender: str, recipients: list[str], raw: bytes
    ) -> dict[str, tuple[int, bytes]]:
        """The recipients refused; TemporaryFailure: try the next MX host
        (MaybeDelivered: do not)."""
        # Each address as it goes on the wire: an internationalized domain
        # in A-labels (smtplib encodes commands as ASCII), and the original
        # spelling of each for what comes back.
        wire = {_ascii_domain(r): r for r in recipients}
        sender_on_wire = _ascii_domain(sender)
        needs_smtputf8 = not all(a.isascii() for a in (sender_on_wire, *wire))
        unreachable = []
        for address in self.addresses_of(host):
            client: _Client | None = None
            try:
                client = _Client(
                    address, port, local_hostname=self.helo, timeout=self.timeout
                )
                with client:
                    options, sent, wide = [], list(wire), {}
                    if needs_smtputf8:
                        client.ehlo_or_helo_if_needed()
                        if client.has_extn("smtputf8"):
                            options = ["SMTPUTF8"]
                        else:
                            # As Postfix bounces it (5.6.7): no server of the
                            # domain is likely to differ, and no retry helps.
                            # The ASCII addresses still go.
                            sent = [w for w in wire if w.isascii()]
                            wide = {
                                wire[w]: (553, _NO_SMTPUTF8)
                                for w in wire
                                if w not in sent
                            }
                            if not sent or not sender_on_wire.isascii():
                                raise PermanentFailure(
                                    f"{host}: {_NO_SMTPUTF8.decode()}"
                                )
                    refused = client.sendmail(
                        sender_on_wire, sent, raw, mail_options=options
                    )
                    return {**wide, **{wire[r]: reply for r, reply in refused.items()}}
            except smtplib.SMTPConnectError as error:
                # A greeting that turns the client away (421, or 554 "no
                # service here", RFC 5321 3.1) speaks for this server, not
                # for the message: the next address or MX host may take
                # it, as Postfix does (smtp_skip_5xx_greeting).
                text = error.smtp_error.decode("utf-8", "replace")
                unreachable.append(f"{address}: greeted {error.smtp_code} {text}")
            except smtplib.SMTPResponseException as error:
                reply = (
                    f"{error.smtp_code} {error.smtp_error.decode('utf-8', 'replace')}"
                )
                if error.smtp_code >= 500:
                    raise PermanentFailure(f"{host}: {reply}") from None
                raise TemporaryFailure(f"{host}: {reply}") from None
            except smtplib.SMTPRecipientsRefused as error:
                codes = [code for code, _ in error.recipients.values()]
                if all(code >= 500 for code in codes):
                    raise PermanentFailure(f"{host}: {codes}") from None
                for_good = {
                    wire[rcpt]: reply
                    for rcpt, reply in error.recipients.items()
                    if reply[0] >= 500
                }
                if for_good:
                    raise _SomeRefusedForGood(f"{host}: {codes}", for_good) from None
                raise TemporaryFailure(f"{host}: {codes}") from None
            except (OSError, smtplib.SMTPException) as error:
                if client is not None and client.content_sent:
                    # No reply to the content: the server may have the
                    # message (RFC 5321 6.1). Sent elsewhere, it could
                    # arrive twice: retry later, here, as Postfix defers.
                    raise MaybeDelivered(
                        f"{host}: the connection was lost after the message "
                        f"was sent ({error or type(error).__name__}): it may "
                        "have been delivered"
                    ) from None
                unreachable.append(f"{address}: {error}")  # its next address
        raise TemporaryFailure(f"{host}: {'; '.join(unreachable)}")


class _SomeRefusedForGood(TemporaryFailure):
    """Every recipient refused, some for good (5xx), the others for now."""

    def __init__(self, text: str, refused: dict[str, tuple[int, bytes]]) -> None:
        super().__init__(text)
        self.refused = refused


_NO_SMTPUTF8 = (
    b"5.6.7 the host offers no SMTPUTF8, which an address with non-ASCII "
    b"letters before its @ needs"
)


def _ascii_domain(address: str) -> str:
    """``address`` with its domain in A-labels (``jörg@bücher.example`` is
    ``jörg@xn--bcher-kva.example``): its local part stays as written."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address  # not a domain name IDNA takes: sent as it is
