"""DKIM: verify the signatures of a captured message against test keys.

dkimpy does the verifying (and the application under test usually signs with
it too); this module only supplies what a test lacks: DNS. `publish_key`
makes (or takes) an RSA key for a test domain and selector and records the
TXT record a real zone would hold; `verify` hands dkimpy a ``dnsfunc`` that
answers from those records and never asks a real resolver, so a test
neither leaks DNS queries nor depends on the network.

Runs in the test's thread. dkimpy is imported on first use only: a suite
that never checks DKIM does not load it (tests/test_plugin.py checks).
The published keys are process-wide (each xdist worker has its own), kept
for the rest of the run; publishing again for the same name replaces it.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import datetime
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from ._text import Undisplayed, argument_error, printable, running_test

#: ``selector._domainkey.domain`` (lower case, no trailing dot) -> TXT record.
_RECORDS: dict[str, bytes] = {}
#: The same name -> the records it held before, newest last: to tell a
#: signature made with a key since replaced from a header changed after
#: signing (dkimpy reports both as a plain False).
_REPLACED: dict[str, list[bytes]] = {}
#: Replaced records kept per name. A key is usually replaced in the test that
#: signs with it; each one kept costs a verification when a signature fails.
_REPLACED_KEPT = 8
#: Names a test put a TXT record at in a sink's DNS stub (the stub notes
#: each ``_domainkey`` name): a key there is for the application, and a
#: reason saying only "no key published" sent users to look at that record.
_IN_STUB: dict[str, str] = {}  # name -> the test (stub records last a test)
#: Those of them whose record revokes a key (an empty p=, RFC 6376 3.6.1).
_REVOKED_IN_STUB: set[str] = set()
#: An empty p= tag in a key record: the key is revoked.
_EMPTY_P = re.compile(rb"(?:^|;)[ \t]*p[ \t]*=[ \t]*(?:;|$)")
#: The same name -> the test that published its key ("" outside a test):
#: keys outlive their test, and a signature that fails against an earlier
#: test's key sent readers looking for a changed header.
_PUBLISHED_BY: dict[str, str] = {}
_LOCK = threading.Lock()

#: RFC 8301: verifiers must not accept RSA keys below 1024 bits.
MIN_KEY_BITS = 1024
#: RFC 8301: verifiers must handle keys up to 4096 bits and may refuse larger.
MAX_KEY_BITS = 4096
#: The size of a key `publish_key` makes when not told.
DEFAULT_KEY_BITS = 2048


@dataclasses.dataclass(frozen=True, slots=True)
class DkimResult:
    """The verdict on one ``DKIM-Signature`` header."""

    domain: str
    """The signing domain (``d=``)."""
    selector: str
    """The selector (``s=``)."""
    verified: bool
    """Whether the signature verified: the body hash and the signature over
    the signed headers match the key published for `selector`."""
    reason: str | None
    """Why it did not verify (None when it did)."""
    algorithm: str = ""
    """``a=``, e.g. ``rsa-sha256``."""
    key_bits: int | None = None
    """Size of the public key found for the selector, if one was found."""
    signed_headers: tuple[str, ...] = ()
    """The header names in ``h=``, lower case, in order."""
    warnings: tuple[str, ...] = ()
    """What makes a verified signature weaker than it looks: an ``l=`` body
    length, which leaves whatever follows it unsigned (RFC 6376 8.2)."""

    def __str__(self) -> str:
        verdict = "verified" if self.verified else f"FAILED: {self.reason}"
        if self.warnings:
            verdict += f", but {'; '.join(self.warnings)}"
        # d=, s= and the reason come from the signature header: escaped
        # (`printable`), as failure messages print this line.
        return printable(f"DKIM d={self.domain} s={self.selector}: {verdict}")


#: The DKIM signatures of a message that are verified, top first.
MAX_SIGNATURES = 10


def record_name(domain: str, selector: str) -> str:
    """The TXT record's name, as DNS has it: an international domain
    (``bücher.example``, or its U-labels in a ``d=``, RFC 8616) in
    A-labels (``xn--bcher-kva.example``)."""
    return a_labels(f"{selector}._domainkey.{domain}")


def a_labels(name: str) -> str:
    """``name`` in lower case, without a trailing dot, its U-labels as
    A-labels; as it is if it is no IDNA name. Raw UTF-8 read from a header
    block may arrive as surrogate escapes.

    Mapped as the DNS stub maps names, with dnspython's default codec where
    dnspython is installed: IDNA 2008 or 2003 as it can use the ``idna`` package
    (``straße`` is ``xn--strae-oqa`` or ``strasse``), the names the
    application's own dnspython asks for. Without dnspython there is no
    stub to agree with: Python's own codec (IDNA 2003) serves."""
    name = name.lower().rstrip(".")
    try:
        text = name.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return name
    if text.isascii():
        return text
    try:
        import dns.exception
        import dns.name
    except ImportError:
        pass
    else:
        try:
            return dns.name.from_text(text).to_text(omit_final_dot=True).lower()
        except dns.exception.DNSException:
            return name
    try:
        return text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return name


def _check_names(domain: object, selector: object) -> None:
    """Raise TypeError or ValueError, saying why, unless ``domain`` and
    ``selector`` are names a key can be published for (and a signature's
    d= and s= could name)."""
    __tracebackhide__ = True
    if not isinstance(domain, str):
        raise TypeError(f"domain must be a str such as 'example.com', got {domain!r}")
    if "@" in domain:
        # The From address, most likely: its domain is what d= names.
        raise ValueError(
            f"domain must be a domain name such as 'example.com', got the "
            f"address {domain!r}: give its domain, "
            f"{domain.rpartition('@')[2]!r}"
        )
    if "." not in domain.strip("."):
        raise ValueError(
            f"domain must be a domain name such as 'example.com', got {domain!r}"
        )
    labels = domain.lower().split(".")
    if "_domainkey" in labels:
        # The record's whole name (s1._domainkey.shop.example): the key
        # would be published at s1._domainkey.s1._domainkey.shop.example.
        given = domain.strip(".")
        before, _, after = given.partition("._domainkey.")
        hint = f"dkim_key({after!r}, selector={before!r})" if before and after else ""
        raise ValueError(
            f"domain must be the signing domain alone, as in the signature's "
            f"d= (such as 'example.com'), got {domain!r}: dkim_key publishes "
            "the key at '<selector>._domainkey.<domain>' itself"
            + (f"; {hint}" if hint else "")
        )
    bad = [
        label
        for label in a_labels(domain).split(".")
        if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?", label)
    ]
    if bad:
        # "-bad.example" was taken: no signer's d= can name it (RFC 6376
        # 3.5 has d= a domain name, whose labels neither start nor end
        # with a hyphen).
        raise ValueError(
            f"domain must be a domain name such as 'example.com', got "
            f"{domain!r}: {bad[0]!r} is no DNS label (letters, digits and "
            "hyphens, not first or last)"
        )
    if not isinstance(selector, str):
        raise TypeError(f"selector must be a str such as 's1', got {selector!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", selector):
        raise ValueError(f"selector must be a DNS label such as 's1', got {selector!r}")
    if "_domainkey" in selector.lower().split("."):
        # s= names the selector alone; dkim_key adds "._domainkey.domain".
        raise ValueError(
            f"selector must be the selector alone, as in the signature's s= "
            f"(such as 's1'), got {selector!r}: dkim_key publishes it at "
            f"'<selector>._domainkey.<domain>' itself"
        )


def publish_key(
    domain: str,
    selector: str = "s1",
    *,
    bits: int | None = None,
    private_key: Undisplayed[object] | str | bytes | None = None,
) -> str:
    """Make an RSA key pair of ``bits`` (default `DEFAULT_KEY_BITS`), or
    take ``private_key`` (PEM) as it is, publish its public half for
    ``selector._domainkey.domain`` and return the private key PEM (PKCS#1,
    ``BEGIN RSA PRIVATE KEY``, as dkimpy's ``dkim.sign`` wants). Giving
    both ``bits`` and ``private_key`` is a ValueError: a key given has its
    own size. The key is held where ``--showlocals --full-trace`` shows no
    variable of it (`Undisplayed`): a key refused would be printed whole."""
    __tracebackhide__ = argument_error  # those point at the caller's line
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    given = (
        private_key
        if isinstance(private_key, Undisplayed)
        else Undisplayed(private_key)
    )
    del private_key
    _check_names(domain, selector)
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int)):
        raise TypeError(f"bits must be an int such as 2048, got {bits!r}")
    if given.value is None:
        size = DEFAULT_KEY_BITS if bits is None else bits
        if not MIN_KEY_BITS <= size <= MAX_KEY_BITS:
            raise ValueError(
                f"bits must be from {MIN_KEY_BITS} to {MAX_KEY_BITS} (RFC 8301), "
                f"got {bits!r}; to test a smaller key, make one and pass it as "
                "private_key"
            )
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=size)
    elif not isinstance(given.value, (str, bytes)):
        raise TypeError(
            f"private_key must be a PEM private key (str or bytes) or None, "
            f"got {type(given.value).__name__}"
        )
    else:
        data = Undisplayed(
            given.value.encode() if isinstance(given.value, str) else given.value
        )
        try:
            key = serialization.load_pem_private_key(data.value, password=None)
        # ValueError (not PEM, a bad key), TypeError (encrypted),
        # UnsupportedAlgorithm: all say what is wrong with the key.
        except Exception as error:
            public = _public_key_label(data.value)
            if public is not None and b"PRIVATE KEY-----" not in data.value:
                # The other half of the pair: OpenSSL's "invalid padding"
                # or "malformed framing" would not say so. (A private key
                # with its public half after it fails for its own reason.)
                raise ValueError(
                    f"private_key holds a public key ({public}): give "
                    "the private key that the application signs with; "
                    "dkim_key publishes its public half"
                ) from None
            raise ValueError(
                f"private_key could not be read as an unencrypted PEM private "
                f"key: {error}"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            # Not DSA's class: importing it warns (deprecated).
            from cryptography.hazmat.primitives.asymmetric import ec, ed25519

            kind = (
                "an EC key"
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else "another kind of key"
            )
            raise ValueError(
                "private_key must be an RSA private key (PEM), "
                + (
                    "got an Ed25519 key: ed25519-sha256 signatures (RFC 8463) "
                    "are not verified here; sign with an RSA key too, as RFC "
                    "8463 has senders do, and publish that one"
                    if isinstance(key, ed25519.Ed25519PrivateKey)
                    else f"got {kind}: DKIM signs with RSA or Ed25519 keys "
                    "(RFC 6376, RFC 8463)"
                )
            )
        if bits is not None:
            # Said, not ignored: a test asking for bits=4096 with a 2048-bit
            # key would check a key it does not have.
            raise ValueError(
                f"bits={bits!r} and private_key were both given: bits is the "
                "size of a key for dkim_key to make, and private_key is "
                f"published as it is (this one has {key.key_size} bits); "
                "pass one or the other"
            )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    name = record_name(domain, selector)
    with _LOCK:
        previous = _RECORDS.get(name)
        _RECORDS[name] = record
        _PUBLISHED_BY[name] = running_test()
        replaced = [r for r in _REPLACED.get(name, []) if r != record]
        if previous is not None and previous != record:
            replaced.append(previous)
        _REPLACED[name] = replaced[-_REPLACED_KEPT:]
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem.decode("ascii")


_PUBLIC_PEM = re.compile(rb"-----BEGIN ((?:RSA )?PUBLIC KEY)-----")


def note_stub_record(name: str, record: bytes = b"") -> None:
    """The DNS stub's note that a test published a TXT ``record`` at
    ``name``, a ``selector._domainkey.domain`` name (see `_IN_STUB`)."""
    name = a_labels(name)
    with _LOCK:
        _IN_STUB[name] = running_test()
        if _EMPTY_P.search(record):
            _REVOKED_IN_STUB.add(name)
        else:
            _REVOKED_IN_STUB.discard(name)


def _public_key_label(data: bytes) -> str | None:
    """``"BEGIN PUBLIC KEY"`` (SPKI) or ``"BEGIN RSA PUBLIC KEY"`` (PKCS #1,
    what ``openssl rsa -RSAPublicKey_out`` writes) when ``data`` holds one."""
    found = _PUBLIC_PEM.search(data)
    return None if found is None else f"BEGIN {found.group(1).decode()}"


def _lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
    """dkimpy's ``dnsfunc``: the published record, never real DNS."""
    # dkimpy asks for the d= as written: U-labels (RFC 8616) as UTF-8.
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    with _LOCK:
        return _RECORDS.get(a_labels(text))


class _Reasons(logging.Handler):
    """Collects what dkimpy logs as errors: it reports key problems that way
    rather than by raising."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def verify(raw: bytes, received: float | None = None) -> tuple[DkimResult, ...]:
    """One result per ``DKIM-Signature`` header, top first. Never raises.
    ``received``: when the message arrived (a POSIX time), which an ``x=``
    is judged against (RFC 6376 3.5)."""
    import dkim

    count = _count_signatures(raw)
    results = []
    # Each is verified on a parse of the whole header block: thousands of
    # signatures took time growing with the square of their number (2,000:
    # 12 s). RFC 6376 6.1 lets a verifier limit how many it checks.
    for index in range(min(count, MAX_SIGNATURES)):
        # A private logger, not attached to the logging tree: dkimpy's error
        # lines are our reasons, not noise in the test's captured log.
        logger = logging.Logger("pytest_smtpsink.dkim", logging.ERROR)
        reasons = _Reasons()
        logger.addHandler(reasons)
        verifier: Any = None
        error: str | None = None
        fields: dict[bytes, bytes] = {}
        try:
            verifier = dkim.DKIM(raw, logger=logger, minkey=MIN_KEY_BITS)
        except Exception as exc:  # a header line dkimpy cannot split
            verified = False
            error = (
                "dkimpy cannot read the message's header block, so no signature "
                f"in it can be verified ({str(exc) or type(exc).__name__})"
            )
            # Still say whose signature it is.
            fields = _signature_tags(raw, index)
        else:
            try:
                verified = bool(verifier.verify(idx=index, dnsfunc=_lookup))
            except Exception as exc:  # dkimpy's DKIMException and parse errors
                verified, error = False, _explain(exc)
            # Empty when dkimpy could not split the tags (a duplicate tag):
            # still say whose signature it is.
            fields = getattr(verifier, "signature_fields", None) or _signature_tags(
                raw, index
            )
        domain = _text(fields.get(b"d"))
        selector = _text(fields.get(b"s"))
        reason = None
        algorithm = _text(fields.get(b"a"))
        if verified and algorithm.strip().lower() == "rsa-sha1":
            # RFC 8301 3.1: "Verifiers MUST NOT consider signatures using
            # rsa-sha1 valid". Counted as verified, it passed the bulk-sender
            # rules for mail that receivers take as unsigned.
            verified = False
            error = (
                "a=rsa-sha1: the signature matches the key, but RFC 8301 has "
                "verifiers treat SHA-1 signatures as invalid, so receivers "
                "take the message as unsigned; sign with rsa-sha256"
            )
        empty_label = next(
            (
                (tag, value)
                for tag, value in (("d", domain), ("s", selector))
                if value and "" in value.split(".")
            ),
            None,
        )
        if empty_label is not None:
            # The stub's lookup forgave it (its names lose trailing dots),
            # and "no key published: publish one with selector='s1.'" led
            # on; DNS does not: dkimpy asks for
            # "mail._domainkey.shop.example..", which no resolver looks up.
            tag, value = empty_label
            verified = False
            error = (
                f"{tag}={value} is no DNS name (an empty label: a trailing dot, "
                "as a zone file writes names, or two dots in a row); receivers "
                f"look up {selector}._domainkey.{domain}. and find no key; "
                f"write {tag}= without it"
            )
        if verified and "from" not in _signed_headers(fields):
            # RFC 6376 6.1.1: a verifier MUST ignore a signature whose h=
            # leaves out From (dkimpy checks it only when signing). Counted
            # as verified, the message passed the bulk-sender rules.
            verified = False
            error = (
                "h= does not include From: the signature matches the key, but "
                "RFC 6376 (5.4, 6.1.1) has verifiers ignore a signature that "
                "does not sign From, so receivers take the message as "
                "unsigned; add from to h="
            )
        if not verified:
            said = error or "; ".join(reasons.messages)
            if algorithm.lower().startswith("ed25519") and (
                not said or said.startswith("missing public key")
            ):
                # No key of its kind can be published: "publish one with
                # dkim_key()" would publish an RSA key, which fails it too.
                said = (
                    f"a={algorithm} (RFC 8463) is not verified here: dkim_key() "
                    "publishes RSA keys only (a sender signing with both, as "
                    "RFC 8463 has it, is verified by its rsa-sha256 signature)"
                )
            froms = _header_counts(raw).get("from", 0)
            signed_froms = _signed_headers(fields).count("from")
            if not said and 1 <= signed_froms < froms:
                # dkimpy signs one From more than h= names (its guard
                # against a From added above the signed one): "a signed
                # header changed" sent the reader looking for a change.
                said = (
                    f"the message has {froms} From headers and h= signs "
                    f"{signed_froms} of them: dkimpy, as verifiers that guard "
                    "against a From added above the signed one (RFC 6376 8.15), "
                    "fails a signature that leaves a From unsigned; a message "
                    "has one From (RFC 5322 3.6)"
                )
            reason = said or _mismatch(raw, index, domain, selector, b"l" in fields)
            if reason.startswith("missing public key"):
                name = record_name(domain, selector)
                with _LOCK:
                    # This test's: a stub's records go with their test.
                    in_stub = _IN_STUB.get(name) == running_test()
                    revoked = in_stub and name in _REVOKED_IN_STUB
                reason = (
                    # Advice to publish the key would make it verify where
                    # a receiver, finding the record, fails it.
                    f"the key at {name} is revoked: the TXT record put there "
                    "with smtpsink.dns.txt() has an empty p= (RFC 6376 3.6.1), "
                    "so receivers fail the signature, as this does"
                    if revoked
                    else f"no key published for {name} by dkim_key(): "
                    "a TXT record put there with smtpsink.dns.txt() is for "
                    "the application under test, not Message.dkim; give its "
                    f"private key with smtpsink.dkim_key({domain!r}, "
                    f"selector={selector!r}, private_key=pem)"
                    if in_stub
                    else f"no key published for {name}: "
                    f"publish one with smtpsink.dkim_key({domain!r}, "
                    f"selector={selector!r})"
                    if _publishable(domain, selector)
                    # Undecodable bytes, a space: dkim_key would refuse it.
                    else f"no key published for {name}, and none can be: "
                    "its d= or s= is no domain name or selector"
                )
            elif reason.startswith("public key too small"):
                # dkimpy's "public key too small: 512", as a sentence.
                bits = getattr(verifier, "keysize", None)
                reason = (
                    f"public key too small: the key at "
                    f"{record_name(domain, selector)} has {bits or 'too few'} "
                    "bits, and verifiers require at least 1024 (RFC 8301)"
                )
        headers = _signed_headers(fields)
        warnings: tuple[str, ...] = ()
        if verified and b"l" in fields:
            warnings = (_body_length_warning(verifier, fields),)
        expired = _expired_by(fields, received)
        if verified and expired:
            # dkimpy forgives 10 hours of clock difference: an ESP's short
            # x= that had already passed verified with no word here.
            warnings += (
                f"x= passed {expired} s before the message arrived; dkimpy "
                "allows 10 hours for clocks that differ, receivers may allow "
                "much less and treat the signature as invalid (RFC 6376 3.5)",
            )
        if verified:
            instances = _header_counts(raw)
            unsigned = _unsigned_shown_headers(instances, headers)
            if unsigned:
                them = "it" if len(unsigned) == 1 else "them"
                warnings += (
                    f"it does not sign {' and '.join(unsigned)}, which the "
                    f"message has: anyone on the way could change {them} and "
                    "it would still verify (RFC 6376 5.4.1 recommends signing "
                    f"{them}); add {them} to h=",
                )
            if "content-type" not in headers and _MULTIPART.search(_head(raw)):
                # Not in RFC 6376 5.4.1's list, but how readers show the
                # parts: multipart/alternative made multipart/mixed shows
                # the text and the HTML one after the other, a boundary
                # changed can show a part they hid (dkimpy signs it).
                warnings += (
                    "it does not sign Content-Type, which the message has "
                    "(multipart): anyone on the way could change how its parts "
                    "are shown (alternative made mixed, another boundary) and "
                    "it would still verify; add content-type to h=",
                )
            for name, have, signs in _partly_signed_shown_headers(instances, headers):
                warnings += (
                    f"it signs {signs} of the {have} {name} headers the message "
                    "has, from the bottom up (RFC 6376 5.4.2): the top one, which "
                    "readers show, is not signed, and anyone on the way could have "
                    f"added it; name {name} in h= once more than the message has "
                    "it (RFC 6376 8.15)",
                )
        results.append(
            DkimResult(
                domain=domain,
                selector=selector,
                verified=verified,
                reason=reason,
                algorithm=algorithm,
                key_bits=getattr(verifier, "keysize", None) or None,
                signed_headers=headers,
                warnings=warnings,
            )
        )
    if count > MAX_SIGNATURES:
        for fields in map(_tags, _signature_values(raw)[MAX_SIGNATURES:]):
            results.append(
                DkimResult(
                    domain=_text(fields.get(b"d")),
                    selector=_text(fields.get(b"s")),
                    verified=False,
                    reason=(
                        f"not verified: only a message's first {MAX_SIGNATURES} "
                        f"DKIM signatures are (it has {count}; RFC 6376 6.1 lets "
                        "a verifier stop, and receivers do)"
                    ),
                    algorithm=_text(fields.get(b"a")),
                    signed_headers=_signed_headers(fields),
                )
            )
    return tuple(results)


def _publishable(domain: str, selector: str) -> bool:
    try:
        _check_names(domain, selector)
    except (TypeError, ValueError):
        return False
    return True


def _expired_by(fields: dict[bytes, bytes], received: float | None) -> int:
    """Seconds the signature's ``x=`` had passed when the message arrived
    (0 if it had not, or either is unknown)."""
    expires = fields.get(b"x", b"").strip()
    if received is None or not expires.isdigit():
        return 0
    return max(0, int(received) - int(expires))


def _body_length_warning(verifier: Any, fields: dict[bytes, bytes]) -> str:
    """What an ``l=`` tag leaves unsigned: dkimpy verifies the first ``l``
    bytes of the canonical body and says nothing of the rest, so text
    anyone appends (a phishing link under a bank's signature) verifies."""
    from dkim.canonicalization import CanonicalizationPolicy

    signed = int(_text(fields.get(b"l")))
    try:
        policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
        length = len(policy.canonicalize_body(verifier.body))
    except Exception:  # it verified with this c=; the guard is for the unforeseen
        length = None
    if length is not None and length > signed:
        return (
            f"l={signed} signs only the first {signed} bytes of the body: the "
            f"{length - signed} bytes after them are not signed, and anyone on "
            "the way could have added them (RFC 6376 8.2); sign without l="
        )
    if length is not None and length < signed:
        # Appended text is hashed up to l: it breaks the signature at first,
        # which "would still verify" denied.
        return (
            f"l={signed} is more than the body's {length} bytes (RFC 6376 3.5 "
            "has l= count the bytes that were signed): text appended later "
            f"breaks the signature until the body is {signed} bytes long, and "
            "what comes after that verifies (RFC 6376 8.2); sign without l="
        )
    return (
        f"l={signed} signs the body's length, not the whole body: text "
        "appended later would still verify (RFC 6376 8.2); sign without l="
    )


def _mismatch(
    raw: bytes, index: int, domain: str, selector: str, length_tag: bool
) -> str:
    """Why signature ``index`` failed when dkimpy only said False: the body
    hash matched (a mismatch raises; with ``l=``, over the signed length
    only), the signature over the headers did not verify with the published
    key."""
    import dkim

    name = record_name(domain, selector)
    with _LOCK:
        replaced = list(_REPLACED.get(name, ()))
    for record in reversed(replaced):
        logger = logging.Logger("pytest_smtpsink.dkim")
        logger.addHandler(logging.NullHandler())  # quiet, as in verify()
        try:
            verifier = dkim.DKIM(raw, logger=logger, minkey=MIN_KEY_BITS)
            if verifier.verify(idx=index, dnsfunc=_answering(record)):
                return (
                    f"signed with an earlier key for {name}, which a later "
                    "dkim_key() call replaced"
                )
        except Exception:  # this key cannot tell us more than the first try
            continue
    body = (
        "the body's first l= bytes are unchanged; any after them are not signed"
        if length_tag
        else "the body is unchanged"
    )
    with _LOCK:
        publisher = _PUBLISHED_BY.get(name, "")
    if publisher and publisher != running_test():
        # The usual case of "another key": a common selector (s1) whose
        # key an earlier test published, kept for the run.
        return (
            f"the signature does not verify with the key published for {name} "
            f"during {publisher}, an earlier test ({body}): keys last for the "
            "run (a session fixture's too), so "
            "publish the key it was signed with in this test (dkim_key(..., "
            "private_key=pem)), or a signed header changed after signing"
        )
    return (
        f"the signature does not verify with the key published for {name} "
        f"({body}): a signed header changed after signing, or another key "
        "signed it"
    )


def _answering(record: bytes) -> Callable[..., bytes]:
    """A dkimpy ``dnsfunc`` that answers every name with ``record``."""
    return lambda *_args, **_kwargs: record


# A Python bytes value as dkimpy's messages show it: b'v', b"x".
_BYTES_REPR = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'|(?<!\w)b\"(?:[^\"\\]|\\.)*\"")


def _unrepr(match: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(match.group())
    except (ValueError, SyntaxError):
        return match.group()
    return str(value.decode("ascii", "backslashreplace"))


def _utc(seconds: str) -> str:
    try:
        when = datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return "a time that does not exist"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _explain(error: Exception) -> str:
    # dkimpy formats tag values as Python shows bytes ("missing b'v'=").
    text = _BYTES_REPR.sub(_unrepr, str(error)) or type(error).__name__
    missing = re.fullmatch(r"missing (\w+)=", text)
    if missing:
        return f"the {missing[1]}= tag is missing (RFC 6376 3.5 requires it)"
    past = re.fullmatch(r"x= value is past \((\d+)\)", text)
    if past:
        return f"x={past[1]}: the signature expired at {_utc(past[1])} (RFC 6376 3.5)"
    future = re.fullmatch(r"t= value is in the future \((\d+)\)", text)
    if future:
        return (
            f"t={future[1]}: the signature claims to be made at {_utc(future[1])}, "
            "in the future (RFC 6376 3.5)"
        )
    if text.startswith("invalid literal for int()"):
        # dkimpy takes an empty l= as a number; int() then said this.
        return (
            "a tag that takes a number (l=, t= or x=) is empty or not a number "
            "(RFC 6376 3.5)"
        )
    if text.startswith("body hash mismatch"):
        return f"the body changed after signing ({text})"
    if type(error).__name__ == "MessageFormatError":
        # dkimpy wraps its tag-list errors, whose text is only the tag:
        # "malformed (b'd')" said nothing of what is wrong with it.
        cause = error.args[0] if error.args else None
        said = cause.args if isinstance(cause, Exception) else ()
        if type(cause).__name__ == "DuplicateTag" and said:
            text = f"the tag {_text(said[0])}= appears more than once"
        elif type(cause).__name__ == "InvalidTagSpec" and said:
            text = f"{_shown(said[0])} is not a tag=value pair"
        return f"the DKIM-Signature header is malformed ({text})"
    return text


def _shown(value: object) -> str:
    """A piece of the signature header as written, quoted and shortened."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "backslashreplace")
    text = " ".join(str(value).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


#: The headers readers show that RFC 6376 5.4.1 recommends signing, as
#: they are written (lower case is how h= is compared).
_SHOWN_HEADERS = ("Subject", "Date", "To", "Cc", "Reply-To")
#: A multipart top-level Content-Type in a header block.
_MULTIPART = re.compile(
    rb"^content-type[ \t]*:\s*multipart/", re.IGNORECASE | re.MULTILINE
)
#: A header field's name at the start of a line of the header block.
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


def _header_counts(raw: bytes) -> dict[str, int]:
    """How often each header field (by its lower-case name) is in ``raw``."""
    counts: dict[str, int] = {}
    for match in _FIELD_START.finditer(_head(raw)):
        name = match.group(1).decode("ascii").lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def _partly_signed_shown_headers(
    counts: dict[str, int], signed: tuple[str, ...]
) -> list[tuple[str, int, int]]:
    """``(name, instances, signed)`` for each of the `_SHOWN_HEADERS` that
    the message (its `_header_counts`) has more often than ``h=``
    (``signed``) names it, at least once: a Subject added above the signed
    one verifies, and is the one shown."""
    return [
        (name, counts[name.lower()], signs)
        for name in _SHOWN_HEADERS
        if 0 < (signs := signed.count(name.lower())) < counts.get(name.lower(), 0)
    ]


def _unsigned_shown_headers(
    counts: dict[str, int], signed: tuple[str, ...]
) -> list[str]:
    """The `_SHOWN_HEADERS` that the message (its `_header_counts`) has and
    ``h=`` (``signed``, lower case) leaves out: a signature over From alone
    verifies after anyone rewrote the Subject."""
    return [
        name
        for name in _SHOWN_HEADERS
        if name.lower() in counts and name.lower() not in signed
    ]


def body_length_warnings(result: DkimResult) -> tuple[str, ...]:
    """The warnings of ``result`` about its ``l=`` tag (each begins "l="),
    of the others: what the bulk-sender rule ``dkim-body-length`` judges."""
    return tuple(w for w in result.warnings if w.startswith("l="))


def _head(raw: bytes) -> bytes:
    end = re.search(rb"\r?\n\r?\n", raw)
    return raw if end is None else raw[: end.start()]


def _count_signatures(raw: bytes) -> int:
    return len(re.findall(rb"(?im)^dkim-signature[ \t]*:", _head(raw)))


def _signature_tags(raw: bytes, index: int) -> dict[bytes, bytes]:
    """The tags of the ``index``-th DKIM-Signature, read without dkimpy
    (for a message it refuses): each ``tag=value`` once; {} if unreadable."""
    values = _signature_values(raw)
    return _tags(values[index]) if index < len(values) else {}


def _signature_values(raw: bytes) -> list[bytes]:
    """Every DKIM-Signature header's value, unfolded lines and all."""
    return re.findall(
        rb"(?im)^dkim-signature[ \t]*:((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)",
        _head(raw),
    )


def _signed_headers(fields: dict[bytes, bytes]) -> tuple[str, ...]:
    """The header names of ``h=``, lower case, in order."""
    return tuple(
        h.strip().lower() for h in _text(fields.get(b"h")).split(":") if h.strip()
    )


def _tags(value: bytes) -> dict[bytes, bytes]:
    tags: dict[bytes, bytes] = {}
    for pair in value.split(b";"):
        name, equals, value = pair.partition(b"=")
        name = name.strip()
        if equals and name and name not in tags:
            tags[name] = value.strip()
    return tags


def _text(value: object) -> str:
    if isinstance(value, bytes):
        # UTF-8: a d= may be an international name in U-labels (RFC 8616).
        return re.sub(r"\s+", "", value.decode("utf-8", "replace"))
    return ""
