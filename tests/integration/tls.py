"""A TLS-secured embedded broker for tests: a throwaway PKI (made with `cryptography`) and Tansu's
plain listener behind Debian's stunnel, Tansu advertising stunnel's port.

Tansu 0.6's own TLS does not work (`--cert` with `--key` is refused, `--cert` alone stays
plaintext), so stunnel terminates TLS - `verify = 2` for mTLS - and the clients see a real TLS
handshake with a certificate whose subjectAltName is the address they dialled (127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from producers.kafka_options import KafkaSecurity
from sessionwatch.broker import find_tansu, free_port, stop_process_group, wait_for_port

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    ca: Path            # the CA that signed the server and client certificates
    server_cert: Path   # subjectAltName IP:127.0.0.1 only
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path      # a CA that signed nothing here

    def security(self, *, mtls: bool = False, cafile: Path | None = None) -> KafkaSecurity:
        """SSL with this CA (or `cafile`), and the client certificate if `mtls`."""
        return KafkaSecurity(protocol="SSL", cafile=str(cafile or self.ca),
                             certfile=str(self.client_cert) if mtls else "",
                             keyfile=str(self.client_key) if mtls else "")

    def env(self, *, mtls: bool = False, cafile: Path | None = None) -> dict[str, str]:
        """The same as settings for a `sessionwatch …` process (without the prefix)."""
        out = {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": str(cafile or self.ca)}
        if mtls:
            out.update(kafka_ssl_certfile=str(self.client_cert),
                       kafka_ssl_keyfile=str(self.client_key))
        return out


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _leaf(directory: Path, name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          san: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca, ca_key = _ca(directory, "test-ca")
    wrong_path, _, _ = _ca(directory, "wrong-ca")
    server_cert, server_key = _leaf(directory, "broker", ca, ca_key,
                                    [x509.IPAddress(ipaddress.ip_address(HOST))],
                                    ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = _leaf(directory, "client", ca, ca_key,
                                    [x509.DNSName("sessionwatch-client")],
                                    ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(ca=ca_path, server_cert=server_cert, server_key=server_key,
               client_cert=client_cert, client_key=client_key, wrong_ca=wrong_path)


def find_stunnel() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        pytest.fail("stunnel is not installed: run the tests through scripts/test.sh "
                    "(apt-get install stunnel4)")
    return found


class StunnelBroker:
    """Tansu on a free loopback port, advertising stunnel's TLS port in front of it."""

    def __init__(self, directory: Path, pki: Pki, *, mtls: bool = False) -> None:
        self.directory = directory
        self.pki = pki
        self.mtls = mtls
        self.plain_port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.plain_port:
            self.tls_port = free_port()
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def bootstrap(self) -> str:
        """The TLS listener: the only address the clients are told about."""
        return f"{HOST}:{self.tls_port}"

    @property
    def plain_bootstrap(self) -> str:
        return f"{HOST}:{self.plain_port}"

    def start(self) -> StunnelBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        tansu = [find_tansu(), "broker", "--listener-url", f"tcp://{HOST}:{self.plain_port}",
                 "--advertised-listener-url", f"tcp://{HOST}:{self.tls_port}",
                 "--storage-engine", "memory://tansu/"]
        conf = self.directory / "stunnel.conf"
        lines = ["foreground = yes", "pid =", f"output = {self.directory / 'stunnel.log'}",
                 "[kafka]", f"accept = {HOST}:{self.tls_port}",
                 f"connect = {HOST}:{self.plain_port}",
                 f"cert = {self.pki.server_cert}", f"key = {self.pki.server_key}"]
        if self.mtls:
            lines += ["verify = 2", f"CAfile = {self.pki.ca}"]
        conf.write_text("\n".join(lines) + "\n")
        try:
            for name, command in (("tansu", tansu), ("stunnel", [find_stunnel(), str(conf)])):
                with open(self.directory / f"{name}.out", "ab") as out:
                    self._procs.append(subprocess.Popen(command, stdout=out,
                                                        stderr=subprocess.STDOUT,
                                                        start_new_session=True))
            wait_for_port(HOST, self.plain_port, 15.0)
            wait_for_port(HOST, self.tls_port, 15.0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop_process_group(proc)
        self._procs = []

    def __enter__(self) -> StunnelBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
