"""Certificates for TLS sinks: one throwaway authority per process.

trustme makes a CA and a leaf certificate for 127.0.0.1, ::1 and localhost.
Key generation is the expensive part, so it happens once, on the first TLS
sink, and every TLS sink and client context of the process reuses it.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import ssl
import tempfile
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import trustme

_lock = threading.Lock()


class _Authority:
    def __init__(self) -> None:
        import trustme  # imported lazily: plain sinks never pay for it

        self.ca: trustme.CA = trustme.CA(organization_name="pytest-smtpsink")
        self.leaf = self.ca.issue_cert("127.0.0.1", "::1", "localhost")
        # Applications configured by path (SSL_CERT_FILE, Django settings,
        # curl --cacert) need the CA as a file.
        self._dir = tempfile.mkdtemp(prefix="smtpsink-ca-")
        self.ca_path = os.path.join(self._dir, "smtpsink-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)
        atexit.register(shutil.rmtree, self._dir, True)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.leaf.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        # PROTOCOL_TLS_CLIENT verifies the certificate and the host name, like
        # create_default_context(), without loading the system's CA store:
        # only our CA is trusted, and building the context stays cheap.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ca.configure_trust(context)
        return context


def authority() -> _Authority:
    """The process-wide test CA, created on first use."""
    # The lock makes it one: concurrent first calls would each make an
    # authority, as functools.cache does not hold a lock while it calls.
    with _lock:
        return _the_authority()


@functools.cache
def _the_authority() -> _Authority:
    return _Authority()
