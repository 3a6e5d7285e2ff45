"""The sandbox's certificate authority: made per sandbox, so that its API emulator serves HTTPS
that clients can verify, as the real API is HTTPS only (pydo refuses a token over plain HTTP).

A folder holds the authority (``ca.pem``, its key ``ca.key``), the emulator's certificate for
127.0.0.1 and localhost (``server.pem``, ``server.key``) and ``bundle.pem``: this machine's
certificate authorities and the sandbox's, for ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``
(so the other HTTPS a shell makes is verified as before). All are this user's alone (0600). A kept
sandbox keeps its authority, so that what ``sandbox env`` exported stays valid; one close to
its end is made anew.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
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
    from cryptography import x509

    try:
        for path in (made.ca, made.certificate):
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
            if certificate.not_valid_after_utc - _now() < _RENEW_BEFORE:
                return False
        return made.key.is_file() and (made.folder / "ca.key").is_file()
    except (OSError, ValueError):
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

    files.write(made.folder / "ca.key", private(ca_key))
    files.write(made.key, private(server_key))
    files.write(made.ca, ca.public_bytes(serialization.Encoding.PEM).decode())
    files.write(made.certificate, server.public_bytes(serialization.Encoding.PEM).decode())


def _system_authorities() -> str:
    """This machine's trusted authorities, as OpenSSL (or, without them, requests' certifi) has them."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text(errors="replace")
    try:
        import certifi

        return Path(certifi.where()).read_text(errors="replace")
    except (ImportError, OSError):
        return ""


def _write_bundle(made: Authority) -> None:
    system = _system_authorities().rstrip("\n")
    text = (system + "\n" if system else "") + made.ca.read_text()
    files.write(made.bundle, text)
