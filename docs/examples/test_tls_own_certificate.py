"""Examples of the "TLS and authentication" page: your own certificate, and
what a failed handshake records."""

from __future__ import annotations

import smtplib
import ssl

import pytest
import trustme


@pytest.fixture(scope="session")
def company_ca():
    """Stands in for your own CA; in a real project, load its files."""
    return trustme.CA(organization_name="Example Corp test CA")


@pytest.fixture
def server_pem(company_ca, tmp_path):
    """A certificate for 127.0.0.1 and its key, in one PEM file."""
    path = tmp_path / "mail-server.pem"
    company_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(path)
    )
    return path


def test_own_certificate(smtpsink_factory, server_pem, company_ca):
    sink = smtpsink_factory(tls="starttls", tls_cert=server_pem)
    # A client that trusts only your CA, as the application under test would.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    company_ca.configure_trust(context)
    with smtplib.SMTP(sink.host, sink.port) as client:
        client.starttls(context=context)
        client.sendmail("app@example.com", ["ann@example.com"], b"Subject: Hi\r\n\r\n")
    assert sink.assert_sent(subject="Hi").session.tls is not None


def test_own_ssl_context(smtpsink_factory, company_ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    company_ca.issue_cert("127.0.0.1").configure_cert(context)
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # e.g. a stricter server
    sink = smtpsink_factory(tls="implicit", tls_context=context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    company_ca.configure_trust(client_context)
    with smtplib.SMTP_SSL(sink.host, sink.port, context=client_context) as client:
        client.noop()
    sink.wait_until(lambda: sink.sessions and sink.sessions[0].tls is not None)
    assert sink.sessions[0].tls.version == "TLSv1.3"


@pytest.mark.smtpsink(tls="starttls")
def test_client_rejects_the_certificate(smtpsink):
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts no CA at all
    with (
        smtplib.SMTP(smtpsink.host, smtpsink.port) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=untrusting)

    smtpsink.wait_until(lambda: smtpsink.sessions[0].end is not None)
    session = smtpsink.sessions[0]
    assert session.end == "tls-failed"
    assert "the client rejected the sink's certificate" in session.tls_error
