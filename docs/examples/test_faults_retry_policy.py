"""Testing an application's retry policy end to end against scripted faults."""

from __future__ import annotations

import dataclasses
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage

import pytest

# -- the application under test ------------------------------------------------------


class Bounced(Exception):
    """The server refused the message for good (5xx): do not retry."""


class GaveUp(Exception):
    """Every attempt failed temporarily."""


@dataclasses.dataclass
class Delivery:
    attempts: int
    refused: dict[str, tuple[int, bytes]]


class Outbox:
    """Sends mail; retries temporary failures (4xx, timeouts, dropped
    connections) with exponential backoff, gives up on permanent ones (5xx)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        attempts: int = 3,
        backoff: float = 1.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host, self.port = host, port
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self.sleep = sleep

    def send(self, message: EmailMessage) -> Delivery:
        for attempt in range(1, self.attempts + 1):
            try:
                with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                    refused = smtp.send_message(message)
                return Delivery(attempt, refused)
            except smtplib.SMTPRecipientsRefused as error:
                if all(code >= 500 for code, _ in error.recipients.values()):
                    raise Bounced(error.recipients) from error
            except smtplib.SMTPResponseException as error:
                if error.smtp_code >= 500:
                    raise Bounced(error.smtp_error) from error
            except (smtplib.SMTPServerDisconnected, OSError):
                pass  # timed out or dropped: worth another try
            if attempt < self.attempts:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        raise GaveUp(f"{self.attempts} attempts failed")


def receipt(to: str = "ann@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = to
    message["Subject"] = "Your receipt"
    message.set_content("Thank you for your order.\n")
    return message


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture
def outbox(smtpsink):
    slept = []
    box = Outbox(smtpsink.host, smtpsink.port, sleep=slept.append)
    box.slept = slept  # what the backoff would have waited, without waiting
    return box


@pytest.mark.smtpsink_fault("fail", "MAIL", 451, times=2)
def test_greylisted_mail_is_retried_with_backoff(outbox, smtpsink):
    delivery = outbox.send(receipt())

    assert delivery.attempts == 3
    assert outbox.slept == [1.0, 2.0]
    smtpsink.assert_sent(1, subject="Your receipt")
    assert [451 in s.codes for s in smtpsink.sessions] == [True, True, False]


def test_gives_up_after_three_temporary_failures(outbox, smtpsink):
    smtpsink.fail("MAIL", 451)

    with pytest.raises(GaveUp):
        outbox.send(receipt())

    assert len(smtpsink.sessions) == 3
    smtpsink.assert_not_sent()


def test_a_bounce_is_not_retried(outbox, smtpsink):
    smtpsink.fail("EOD", 554, "5.7.1 Rejected as spam")

    with pytest.raises(Bounced):
        outbox.send(receipt())

    assert len(smtpsink.sessions) == 1  # exactly one attempt
    assert outbox.slept == []


def test_unknown_recipient_bounces(outbox, smtpsink):
    smtpsink.fail("RCPT", 550, match="nobody@example.com")

    with pytest.raises(Bounced):
        outbox.send(receipt(to="nobody@example.com"))
    assert len(smtpsink.sessions) == 1


def test_partial_delivery_is_reported(outbox, smtpsink):
    smtpsink.fail("RCPT", 550, match="bob@example.com")

    delivery = outbox.send(receipt(to="ann@example.com, bob@example.com"))

    assert delivery.attempts == 1
    assert list(delivery.refused) == ["bob@example.com"]
    assert smtpsink.assert_sent().envelope.rcpt_to == ("ann@example.com",)


def test_slow_server_times_out_then_succeeds(outbox, smtpsink):
    # No greeting for a minute: the first thing the client waits for.
    smtpsink.delay("CONNECT", seconds=60, times=1)
    outbox.timeout = 0.5  # the first attempt gives up on it...

    def back_off(seconds):
        outbox.timeout = 30.0  # ...the retry waits as long as a busy CI needs

    outbox.sleep = back_off

    delivery = outbox.send(receipt())

    assert delivery.attempts == 2
    smtpsink.assert_sent(1)


def test_dropped_connection_is_retried(outbox, smtpsink):
    smtpsink.disconnect("EOD", times=1)

    delivery = outbox.send(receipt())

    assert delivery.attempts == 2
    smtpsink.assert_sent(1)  # the dropped attempt kept nothing


def test_flaky_server_replays_with_its_seed(smtpsink):
    flaky = smtpsink.fail("MAIL", 421, probability=0.5, seed=2024)
    outbox = Outbox(smtpsink.host, smtpsink.port, attempts=10, sleep=lambda s: None)

    delivery = outbox.send(receipt())

    # Same seed, same failures: with seed 2024 the first attempt fails and
    # the second gets through, on every run. Without a seed, one is chosen
    # at random and shown in repr(flaky), to paste here and replay.
    assert delivery.attempts == 2
    assert flaky.fired == 1
    smtpsink.assert_sent(1)
