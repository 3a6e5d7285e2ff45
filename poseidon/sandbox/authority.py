"""The sandbox's certificate authority: made per sandbox, so that its API emulator serves HTTPS
that clients can verify, as the real API is HTTPS only (pydo refuses a token over plain HTTP).

A folder holds the authority (``ca.pem``), the emulator's certificate for 127.0.0.1 and
localhost (``server.pem``, ``server.key``) and ``bundle.pem``: the certificate authorities this
environment trusted before and the sandbox's, for ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``
(so the other HTTPS a shell makes is verified as before). The authority may sign for
127.0.0.0/8 and localhost only (critical name constraints), and its key is thrown away once the
emulator's certificate is signed: trusting it trusts nothing else. All are this user's alone
(0600). A kept sandbox keeps them, so that what ``sandbox env`` exported stays valid; a set that
is near its end, damaged or mismatched is made anew.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

from poseidon import files

__all__ = ["Authority", "authority"]

#: How long the certificates are valid; one with less than a week left is made anew.
VALIDITY = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Authority:
    """The files of a sandbox's certificate authority."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The authority's certificate: what a client must trust (alone)."""
        return self.folder / "ca.pem"

    @property
    def certificate(self) -> Path:
        """The emulator's certificate (127.0.0.1, localhost), signed by the authority."""
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def bundle(self) -> Path:
        """This machine's authorities and the sandbox's, in one file."""
        return self.folder / "bundle.pem"

    def server_context(self) -> ssl.SSLContext:
        """The TLS context the emulator serves with."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        return context


def authority(folder: Path) -> Authority:
    """The authority kept in ``folder``, made (or made anew, when near its end) as needed."""
    made = Authority(folder)
    if not _valid(made):
        _make(made)
    _write_bundle(made)  # this machine's authorities may have changed since
    return made


def _valid(made: Authority) -> bool:
    """Whether the files are whole, fit together and have time left."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
        server = x509.load_pem_x509_certificate(made.certificate.read_bytes())
        key = serialization.load_pem_private_key(made.key.read_bytes(), password=None)
        server.verify_directly_issued_by(ca)
        spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != server.public_key().public_bytes(*spki):
            return False
        return all(c.not_valid_after_utc - _now() >= _RENEW_BEFORE for c in (ca, server))
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make(made: Authority) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files.folder(made.folder)
    now = _now() - datetime.timedelta(minutes=5)  # a clock a little behind still accepts it
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"poseidon sandbox CA {os.urandom(4).hex()}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[
                    x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
                    x509.DNSName("localhost"),
                ],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def private(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    (made.folder / "ca.key").unlink(missing_ok=True)  # an older sandbox's: the key is not kept
    files.write(made.key, private(server_key))
    files.write(made.ca, ca.public_bytes(serialization.Encoding.PEM).decode())
    files.write(made.certificate, server.public_bytes(serialization.Encoding.PEM).decode())


def _trusted_before() -> list[str]:
    """The files of authorities this environment trusts without the sandbox: OpenSSL's own
    (``openssl_cafile``, which no variable moves), else requests' certifi; and what
    ``REQUESTS_CA_BUNDLE`` and ``SSL_CERT_FILE`` name now (a company's bundle)."""
    found: list[str] = []
    default = ssl.get_default_verify_paths().openssl_cafile
    if default and Path(default).is_file():
        found.append(default)
    else:
        try:
            import certifi

            found.append(certifi.where())
        except ImportError:
            pass
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        named = os.environ.get(name)
        if named and Path(named).is_file():
            found.append(named)
    return found


def _write_bundle(made: Authority) -> None:
    """The authorities trusted before, each once, then the sandbox's; no sandbox's authority of an
    earlier bundle (exported by an earlier ``sandbox up``) is carried on."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    blocks: dict[bytes, str] = {}
    for path in _trusted_before():
        text = Path(path).read_text(errors="replace")
        for block in re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.DOTALL):
            try:
                with warnings.catch_warnings():  # some systems' old authorities have serials RFC 5280 refuses
                    warnings.simplefilter("ignore")
                    certificate = x509.load_pem_x509_certificate(block.encode())
            except ValueError:
                continue
            names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if names and str(names[0].value).startswith("poseidon sandbox CA"):
                continue
            blocks.setdefault(certificate.fingerprint(hashes.SHA256()), block)
    files.write(made.bundle, "".join(block + "\n" for block in blocks.values()) + made.ca.read_text())
