"""Recipe: an application configured by environment variables."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from email.message import EmailMessage


def send_alert(text):
    """The application code: it reads its SMTP server from the environment."""
    message = EmailMessage()
    message["From"] = "monitor@example.com"
    message["To"] = "ops@example.com"
    message["Subject"] = f"Alert: {text}"
    message.set_content(text)
    with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"])) as smtp:
        smtp.send_message(message)


def test_in_process(smtpsink, monkeypatch):
    # SMTP_HOST, SMTP_PORT and SMTP_URL, undone after the test.
    for name, value in smtpsink.env().items():
        monkeypatch.setenv(name, value)

    send_alert("disk full")

    smtpsink.assert_sent(to="ops@example.com", subject="Alert: disk full")


def test_other_variable_names(smtpsink):
    # Apps that read MAIL_HOST / MAIL_PORT: change the prefix.
    assert smtpsink.env(prefix="MAIL_")["MAIL_PORT"] == str(smtpsink.port)


SCRIPT = """
import os, smtplib
with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"])) as smtp:
    smtp.sendmail("cron@example.com", ["ops@example.com"],
                  b"Subject: nightly report\\r\\n\\r\\nAll good.\\r\\n")
"""


def test_subprocess(smtpsink):
    # A script, a CLI or a server started by the test gets the sink's
    # address through its environment.
    subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, **smtpsink.env()},
        check=True,
        timeout=60,
    )

    msg = smtpsink.assert_sent(subject="nightly report")
    assert msg.envelope.mail_from == "cron@example.com"
