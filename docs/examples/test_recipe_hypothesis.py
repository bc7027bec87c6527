"""Recipe: property-based tests with Hypothesis."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

hypothesis = pytest.importorskip("hypothesis")  # in the test extra
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def send_receipt(host, port, customer, amount):
    """The application code: one receipt per order."""
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = customer
    message["Subject"] = f"Receipt: {amount} EUR"
    message.set_content(f"You paid {amount} EUR.")
    with smtplib.SMTP(host, port) as smtp:
        smtp.send_message(message)


# The fixture is made once for all the examples of a test: Hypothesis asks
# to be told that this is meant (the health check), and each example starts
# with clear(), or it would see the mail of every example before it. No
# deadline: an example that sends mail may take more than Hypothesis's
# 200 ms on a busy CI machine, which it would report as a flaky test.
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(amount=st.integers(min_value=1, max_value=10_000))
def test_one_receipt_per_order(smtpsink, amount):
    smtpsink.clear()

    send_receipt(smtpsink.host, smtpsink.port, "ann@example.com", amount)

    receipt = smtpsink.assert_sent(count=1, to="ann@example.com")
    assert receipt.subject == f"Receipt: {amount} EUR"
