"""The certificates and kubeconfigs of a one-node test cluster, made fresh for each run with `cryptography`.

One CA signs everything, as kubeadm's does: the API server's serving certificate, the kubelet's serving
certificate (for logs and exec through the API server), and the client certificates whose subject names the
Kubernetes identity (CN = user, O = groups): the admin (system:masters), the node (system:node:NAME in
system:nodes), the controller manager, the scheduler and the API server's kubelet client. The service-account
token signing key is an RSA key of its own.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class PKI:
    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.now = datetime.datetime.now(datetime.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name("rune-test-ca")).issuer_name(_name("rune-test-ca"))
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(minutes=5))
            .not_valid_after(self.now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        self.ca = self.write("ca.crt", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self.write("sa.key", _pem_key(sa))
        self.sa_pub = self.write("sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def write(self, name: str, data: bytes) -> Path:
        p = self.base / name
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    def issue(self, name: str, cn: str, orgs: tuple[str, ...] = (), server: bool = False,
              hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A certificate for cn (client, or server for hosts); its (cert, key) files."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        b = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(self.ca_cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(self.now - datetime.timedelta(minutes=5))
             .not_valid_after(self.now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usage), critical=False))
        if hosts:
            alt: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    alt.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        return (self.write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
                self.write(f"{name}.key", _pem_key(key)))

    def kubeconfig(self, name: str, server: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        """A kubeconfig file for a client certificate of cn, talking to server (JSON is YAML)."""
        import json

        crt, key = self.issue(name, cn, orgs)

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority-data": b64(self.ca)}}],
            "users": [{"name": cn, "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": cn}}],
        }
        return self.write(f"{name}.kubeconfig", json.dumps(config, indent=1).encode())
