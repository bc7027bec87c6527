"""Real libraries sending to the sink: Django, Flask-Mailman, Flask-Mail,
logging's SMTPHandler, thread and process pools, and environment-configured
apps (in-process and in a subprocess), with TLS and AUTH where they support it.

The plain cases are the recipes in docs/examples/test_recipe_*.py (which run
as tests too); this module covers what a recipe would be too long for.
Libraries that are not installed make their tests skip.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import smtplib
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pytest_smtpsink import Mailbox

TLS_AUTH = pytest.mark.smtpsink(
    tls="starttls", auth={"ann": "s3cret"}, auth_required=True
)


@pytest.fixture
def trust_sink(smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ssl.create_default_context()`` trust the sink's test CA.

    OpenSSL reads SSL_CERT_FILE when a default context loads its trust store,
    so libraries that build their own context (Django, Flask-Mailman) verify
    the sink's certificate without any change to their code.
    """
    monkeypatch.setenv("SSL_CERT_FILE", smtpsink.ca_path)


# -- Django ----------------------------------------------------------------------------


def django_mail_settings(smtpsink: Mailbox, **options: object) -> dict[str, object]:
    """As ``sink_mail_settings`` in docs/examples/test_recipe_django.py:
    MAILERS on Django 6.1 and later, the EMAIL_* settings before."""
    django = pytest.importorskip("django")
    options = {"host": smtpsink.host, "port": smtpsink.port, "timeout": 10, **options}
    backend = "django.core.mail.backends.smtp.EmailBackend"
    if django.VERSION >= (6, 1):
        return {"MAILERS": {"default": {"BACKEND": backend, "OPTIONS": options}}}
    old_names = {
        "host": "EMAIL_HOST",
        "port": "EMAIL_PORT",
        "username": "EMAIL_HOST_USER",
        "password": "EMAIL_HOST_PASSWORD",
        "use_tls": "EMAIL_USE_TLS",
        "use_ssl": "EMAIL_USE_SSL",
        "timeout": "EMAIL_TIMEOUT",
    }
    # Off unless given, as MAILERS would have them.
    defaults = {"use_tls": False, "use_ssl": False, "username": "", "password": ""}
    return {"EMAIL_BACKEND": backend} | {
        old_names[k]: v for k, v in (defaults | options).items()
    }


@pytest.fixture
def django_mail(smtpsink: Mailbox) -> Iterator[Any]:
    # importorskip: skipped without Django, and typed as Any for mypy (Django
    # ships no type hints).
    settings = pytest.importorskip("django.conf").settings
    mail = pytest.importorskip("django.core.mail")
    override_settings = pytest.importorskip("django.test.utils").override_settings
    if not settings.configured:
        settings.configure()
    with override_settings(**django_mail_settings(smtpsink)):
        yield mail


@TLS_AUTH
@pytest.mark.usefixtures("trust_sink")
def test_django_starttls_and_auth(smtpsink: Mailbox, django_mail: Any) -> None:
    override_settings = pytest.importorskip("django.test.utils").override_settings
    with override_settings(
        **django_mail_settings(
            smtpsink, use_tls=True, username="ann", password="s3cret"
        )
    ):
        django_mail.send_mail("Secure", "body", "app@example.com", ["bob@example.com"])

    msg = smtpsink.assert_sent(to="bob@example.com", subject="Secure")
    assert msg.session.tls is not None
    assert not msg.session.tls.implicit
    assert msg.session.authenticated_as == "ann"
    assert msg.session.before("STARTTLS", "AUTH")


@pytest.mark.smtpsink(tls="implicit")
@pytest.mark.usefixtures("trust_sink")
def test_django_implicit_tls(smtpsink: Mailbox, django_mail: Any) -> None:
    override_settings = pytest.importorskip("django.test.utils").override_settings
    with override_settings(**django_mail_settings(smtpsink, use_ssl=True)):
        django_mail.send_mail(
            "Over SMTPS", "body", "app@example.com", ["bob@example.com"]
        )

    tls = smtpsink.assert_sent(subject="Over SMTPS").session.tls
    assert tls is not None
    assert tls.implicit


def test_djangos_in_memory_outbox_is_named_in_the_hint(
    smtpsink: Mailbox, django_mail: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Django's test runner and pytest-django do to every test: the
    # locmem backend, whose mail.outbox fills up while the sink hears
    # nothing. The generic hint only listed it among possible causes.
    locmem = pytest.importorskip("django.core.mail.backends.locmem")
    monkeypatch.setattr(django_mail, "outbox", [], raising=False)
    # The backend itself (Django 6.1 deprecates EmailMessage(connection=)).
    locmem.EmailBackend().send_messages(
        [
            django_mail.EmailMessage(
                "Reset your password", "body", "app@example.com", ["ann@example.com"]
            )
        ]
    )
    with pytest.raises(AssertionError) as failed:
        smtpsink.assert_sent(to="ann@example.com")
    assert str(failed.value).splitlines()[3] == (
        "Hint: Django's mail.outbox got 1 message in this test ('Reset your "
        "password'): its in-memory (locmem) backend took mail, as Django's test "
        "runner and pytest-django set it. Override the backend with the SMTP one "
        "and this host and port for the test (EMAIL_BACKEND, or MAILERS from "
        "Django 6.1): see the Recipes page."
    )


def test_an_earlier_tests_mail_in_djangos_outbox_is_not_named(
    smtpsink_factory: Callable[..., Mailbox],
    django_mail: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without Django's test runner or pytest-django nothing empties the
    # outbox: every later test that sent nothing pointed at Django.
    locmem = pytest.importorskip("django.core.mail.backends.locmem")
    monkeypatch.setattr(django_mail, "outbox", [], raising=False)
    locmem.EmailBackend().send_messages(
        [django_mail.EmailMessage("Old", "body", "app@example.com", ["a@example.com"])]
    )
    sink = smtpsink_factory(max_size=1_000_000)  # a mailbox made after it
    with pytest.raises(AssertionError) as failed:
        sink.assert_sent(to="ann@example.com")
    assert "mail.outbox" not in str(failed.value)
    locmem.EmailBackend().send_messages(
        [django_mail.EmailMessage("New", "body", "app@example.com", ["a@example.com"])]
    )
    with pytest.raises(AssertionError) as failed:
        sink.assert_sent(to="ann@example.com")
    assert "mail.outbox got 1 message in this test ('New')" in str(failed.value)
    # Emptied in place (pytest-django does), then filled: new all the same.
    django_mail.outbox.clear()
    locmem.EmailBackend().send_messages(
        [
            django_mail.EmailMessage(
                "Again", "body", "app@example.com", ["a@example.com"]
            )
        ]
    )
    with pytest.raises(AssertionError) as failed:
        sink.assert_sent(to="ann@example.com")
    assert "mail.outbox got 1 message in this test ('Again')" in str(failed.value)


def test_djangos_on_commit_callbacks_not_run_are_named_in_the_hint(
    pytester: pytest.Pytester,
) -> None:
    # The usual place to send from ("after the row is saved"): under
    # pytest-django's django_db, or a TestCase, the test's transaction is
    # rolled back and the callback never runs. The hint pointed at the host
    # and port, the locmem backend and wait_for, which then timed out.
    pytest.importorskip("django")
    pytester.makepyfile(
        """
        import django
        from django.conf import settings

        settings.configure(
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
            }
        )
        django.setup()

        import functools

        from django.db import transaction

        def send_welcome(to):
            raise AssertionError("never runs: the transaction is not committed")

        def test_signup(smtpsink):
            with transaction.atomic():  # as django_db wraps a test
                # Named by its function, not "partial".
                transaction.on_commit(functools.partial(send_welcome, "ann@example.com"))
                smtpsink.assert_sent(subject="Welcome")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *Hint: Django holds 1 on_commit callback that has not run "
            "('send_welcome'): the test's transaction is rolled back, never "
            "committed (pytest-django's django_db, a TestCase), so mail sent from "
            "one never goes. Run them with django_capture_on_commit_callbacks"
            "(execute=True) (pytest-django), self.captureOnCommitCallbacks"
            "(execute=True) (a TestCase), or use django_db(transaction=True): see "
            "the Recipes page."
        ]
    )


def test_django_reuses_one_connection(smtpsink: Mailbox, django_mail: Any) -> None:
    sent = django_mail.send_mass_mail(
        [
            (f"Digest {n}", "body", "app@example.com", [f"user{n}@example.com"])
            for n in range(3)
        ]
    )

    assert sent == 3
    smtpsink.assert_sent(count=3)
    (session,) = smtpsink.sessions
    assert [m.subject for m in session.messages] == ["Digest 0", "Digest 1", "Digest 2"]


def test_django_sees_a_refused_recipient(smtpsink: Mailbox, django_mail: Any) -> None:
    smtpsink.fail("RCPT", 550, "No such user", match="nobody@example.com")

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        django_mail.send_mail("Hi", "body", "app@example.com", ["nobody@example.com"])
    smtpsink.assert_nothing_sent()


def test_django_sends_non_ascii_text_as_8bit_without_8bitmime(
    smtpsink: Mailbox, django_mail: Any
) -> None:
    # What docs/recipes.rst says of the lint warning Django's mail gets.
    django_mail.send_mail(
        "Gr\u00fc\u00dfe",
        "Sch\u00f6ne Gr\u00fc\u00dfe",
        "app@example.com",
        ["a@example.com"],
    )
    message = smtpsink.assert_sent()
    assert b"Content-Transfer-Encoding: 8bit" in message.raw
    assert "BODY=8BITMIME" not in message.envelope.mail_options
    assert [p.code for p in message.lint()] == ["8bit-without-8bitmime"]


# -- Flask -----------------------------------------------------------------------------


@TLS_AUTH
@pytest.mark.usefixtures("trust_sink")
def test_flask_mailman_starttls_and_auth(smtpsink: Mailbox) -> None:
    flask_mailman = pytest.importorskip("flask_mailman")
    from flask import Flask

    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        MAIL_BACKEND="smtp",  # TESTING alone would select the locmem backend
        MAIL_SERVER=smtpsink.host,
        MAIL_PORT=smtpsink.port,
        MAIL_USE_TLS=True,
        MAIL_USERNAME="ann",
        MAIL_PASSWORD="s3cret",
        MAIL_DEFAULT_SENDER="app@example.com",
        MAIL_TIMEOUT=10,
    )
    flask_mailman.Mail(app)
    with app.app_context():
        message = flask_mailman.EmailMessage(
            "Report", "See attached.", to=["bob@example.com"]
        )
        message.attach("report.csv", "a,b\n1,2\n", "text/csv")
        message.send()

    msg = smtpsink.assert_sent(to="bob@example.com", attachment="report.csv")
    # A text/* attachment travels in canonical form, with CRLF line ends.
    assert msg.attachment("report.csv").content == b"a,b\r\n1,2\r\n"
    assert msg.session.authenticated_as == "ann"


def test_flask_mail(smtpsink: Mailbox) -> None:
    flask_mail = pytest.importorskip("flask_mail")
    from flask import Flask

    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        MAIL_SUPPRESS_SEND=False,  # TESTING alone would suppress sending
        MAIL_SERVER=smtpsink.host,
        MAIL_PORT=smtpsink.port,
        MAIL_DEFAULT_SENDER=("Example Team", "team@example.com"),
    )
    mail = flask_mail.Mail(app)
    with app.app_context():
        mail.send(
            flask_mail.Message(
                "Welcome",
                recipients=["ann@example.com"],
                body="Hello Ann",
                html="<p>Hello <b>Ann</b></p>",
                bcc=["audit@example.com"],
            )
        )

    msg = smtpsink.assert_sent(to="ann@example.com", subject="Welcome")
    assert msg.from_ == "team@example.com"
    assert msg.from_ is not None
    assert msg.from_.name == "Example Team"
    assert msg.html is not None
    assert "<b>Ann</b>" in msg.html
    assert "audit@example.com" in msg.envelope.rcpt_to


# -- logging ---------------------------------------------------------------------------


@TLS_AUTH
def test_smtp_handler_with_starttls_and_credentials(smtpsink: Mailbox) -> None:
    # secure=() makes SMTPHandler call starttls() (which, without a context,
    # does not check the certificate) before logging in.
    handler = logging.handlers.SMTPHandler(
        mailhost=(smtpsink.host, smtpsink.port),
        fromaddr="app@example.com",
        toaddrs=["ops@example.com", "oncall@example.com"],
        subject="Critical",
        credentials=("ann", "s3cret"),
        secure=(),
        timeout=10,
    )
    logger = logging.getLogger("tests.integrations.smtp_handler")
    logger.addHandler(handler)
    try:
        logger.critical("database unreachable: %s", "db1")
    finally:
        logger.removeHandler(handler)
        handler.close()

    msg = smtpsink.assert_sent(subject="Critical")
    assert msg.envelope.rcpt_to == ("ops@example.com", "oncall@example.com")
    assert msg.text is not None
    assert "database unreachable: db1" in msg.text
    assert msg.session.tls is not None
    assert msg.session.authenticated_as == "ann"


# -- background senders ----------------------------------------------------------------


def send_numbered(host: str, port: int, number: int) -> int:
    message = EmailMessage()
    message["From"] = "worker@example.com"
    message["To"] = f"user{number}@example.com"
    message["Subject"] = f"Job {number}"
    message.set_content(f"job {number} done")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(message)
    return number


def test_many_threads(smtpsink: Mailbox) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [
            pool.submit(send_numbered, smtpsink.host, smtpsink.port, n)
            for n in range(20)
        ]
        smtpsink.wait_for(count=20, timeout=30)
    assert sorted(job.result() for job in jobs) == list(range(20))
    assert len(smtpsink.sessions) == 20
    assert {m.subject for m in smtpsink.messages} == {f"Job {n}" for n in range(20)}


def test_several_processes(smtpsink: Mailbox) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        jobs = [
            pool.submit(send_numbered, smtpsink.host, smtpsink.port, n)
            for n in range(4)
        ]
        # Criteria narrow the wait: only job 3's mail ends it early.
        msg = smtpsink.wait_for(subject="Job 3", timeout=60)
        assert msg.to == ("user3@example.com",)
        smtpsink.wait_for(count=4, timeout=60)
    assert sorted(job.result() for job in jobs) == [0, 1, 2, 3]


def test_wait_for_names_what_arrived_when_a_job_sends_the_wrong_mail(
    smtpsink: Mailbox,
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(send_numbered, smtpsink.host, smtpsink.port, 1).result()
    with pytest.raises(AssertionError, match="Job 1"):
        smtpsink.wait_for(subject="Job 2", timeout=0.2)


# -- environment-configured apps -------------------------------------------------------

APP = """
import os, smtplib, ssl
host, port = os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"])
message = b"Subject: from a subprocess\\r\\n\\r\\nhello\\r\\n"
if os.environ.get("SMTP_TLS") == "starttls":
    context = ssl.create_default_context(cafile=os.environ["SMTP_CA_FILE"])
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.login(os.environ["SMTP_USER"], os.environ["SMTP_PASSWORD"])
        smtp.sendmail("app@example.com", ["ann@example.com"], message)
else:
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail("app@example.com", ["ann@example.com"], message)
"""


def test_env_for_a_plain_sink(smtpsink: Mailbox) -> None:
    env = smtpsink.env()
    assert env == {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtpsink.port),
        "SMTP_URL": f"smtp://127.0.0.1:{smtpsink.port}",
    }


@TLS_AUTH
def test_env_for_a_tls_sink_in_a_subprocess(smtpsink: Mailbox) -> None:
    env = smtpsink.env()
    assert env["SMTP_TLS"] == "starttls"
    assert env["SMTP_CA_FILE"] == smtpsink.ca_path
    subprocess.run(
        [sys.executable, "-c", APP],
        env={**os.environ, **env, "SMTP_USER": "ann", "SMTP_PASSWORD": "s3cret"},
        check=True,
        timeout=60,
    )
    msg = smtpsink.assert_sent(subject="from a subprocess")
    assert msg.session.tls is not None
    assert msg.session.authenticated_as == "ann"


def test_env_with_monkeypatch_in_process(
    smtpsink: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in smtpsink.env(prefix="EMAIL_").items():
        monkeypatch.setenv(name, value)
    with smtplib.SMTP(os.environ["EMAIL_HOST"], int(os.environ["EMAIL_PORT"])) as smtp:
        smtp.sendmail(
            "app@example.com", ["ann@example.com"], b"Subject: env\r\n\r\nx\r\n"
        )
    smtpsink.assert_sent(subject="env")
