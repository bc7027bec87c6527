"""A small application that delivers mail by MX, for the "Relay and MX" page.

It stands in for a forwarder, a mailing-list manager or a bounce handler:
code that looks up each recipient domain's MX records with dnspython and
hands the message to the best MX host that takes it, with smtplib.

Two things are configurable, as they must be for tests: the resolver (the
stub's, in tests) and the SMTP port of each MX host (port 25 in production;
a sink's port in tests, see ``port_for``).
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterable

import dns.exception
import dns.resolver


class TemporaryFailure(Exception):
    """Try again later (a 4xx, SERVFAIL, a timeout, no MX host reachable)."""


class PermanentFailure(Exception):
    """Do not retry: bounce the message (a 5xx, NXDOMAIN, a null MX)."""


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

    def address_of(self, host: str) -> str:
        try:
            return str(self.resolver.resolve(host, "A")[0])
        except dns.exception.DNSException as error:
            raise TemporaryFailure(f"{host}: no address: {error}") from None

    def deliver(
        self, sender: str, recipients: Iterable[str], raw: bytes
    ) -> dict[str, str]:
        """Deliver to every recipient; returns ``{domain: MX host used}``.

        Raises the failure when no recipient has the message, and
        `PartialDelivery` when some have it: retrying them all would send
        them a second copy."""
        by_domain: dict[str, list[str]] = {}
        for recipient in recipients:
            by_domain.setdefault(recipient.rpartition("@")[2].lower(), []).append(
                recipient
            )
        delivered: dict[str, str] = {}
        failed: dict[str, TemporaryFailure | PermanentFailure] = {}
        for domain, rcpts in by_domain.items():
            try:
                delivered[domain], refused = self._deliver_to_domain(
                    domain, sender, rcpts, raw
                )
            except (TemporaryFailure, PermanentFailure) as error:
                failed.update(dict.fromkeys(rcpts, error))
                continue
            for rcpt, (code, reply) in refused.items():  # the MX took the others
                kind = PermanentFailure if code >= 500 else TemporaryFailure
                failed[rcpt] = kind(f"{delivered[domain]}: {code} {reply.decode()}")
        if failed and not delivered:
            raise next(iter(failed.values()))
        if failed:
            raise PartialDelivery(delivered, failed)
        return delivered

    def _deliver_to_domain(
        self, domain: str, sender: str, recipients: list[str], raw: bytes
    ) -> tuple[str, dict[str, tuple[int, bytes]]]:
        """The MX host that took the message, and the recipients it refused
        while taking it for the others."""
        errors = []
        for host in self.mx_hosts(domain):
            try:
                with smtplib.SMTP(
                    self.address_of(host),
                    self.port_for(host),
                    local_hostname=self.helo,
                    timeout=self.timeout,
                ) as client:
                    refused = client.sendmail(sender, recipients, raw)
                return host, refused
            except smtplib.SMTPResponseException as error:
                if error.smtp_code >= 500:
                    raise PermanentFailure(f"{host}: {error.smtp_code}") from None
                errors.append(f"{host}: {error.smtp_code}")  # 4xx: next MX
            except smtplib.SMTPRecipientsRefused as error:
                codes = [code for code, _ in error.recipients.values()]
                if all(code >= 500 for code in codes):
                    raise PermanentFailure(f"{host}: {codes}") from None
                errors.append(f"{host}: {codes}")
            except (OSError, smtplib.SMTPException, TemporaryFailure) as error:
                errors.append(f"{host}: {error}")  # down: next MX
        raise TemporaryFailure(f"{domain}: no MX host took it: {'; '.join(errors)}")
