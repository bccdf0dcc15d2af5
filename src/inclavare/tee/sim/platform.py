"""The sim platform identity, created on first use under a state directory.

Directory: the `directory` argument, else $INCLAVARE_SIM_DIR, else /var/lib/inclavare/sim (mode 0700). Files (0600):
    platform.json    version, platform id, creation time, cpu_svn, and a hash of the host's machine-id
    platform.secret  32 random bytes: the root of every report and sealing key (EGETKEY)
    quoting.key      the attestation key of the simulated quoting enclave (ECDSA P-256, PKCS#8 PEM)
    pck.key          the PCK-like key that signs the QE report (ECDSA P-256, PKCS#8 PEM)
    pck_chain.pem    PCK leaf || platform CA || root CA, every certificate marked SIMULATED (see tee.marker)
    root_ca.pem      the simulated root CA alone: what a verifier's policy must name to accept sim evidence
    quote.template   the parts of a sim quote that do not depend on the enclave (the header, and after the ISV
                     signature the attestation key, the QE report signed by the PCK key, QE auth data, certification
                     data): made once with `cryptography`, so that a launch (load_keys) reads files and imports
                     nothing beyond the standard library; the quoting key is used as DER by inclavare.tee.openssl
The CA keys are discarded once the chain is issued. The identity is created in a temporary directory and renamed into
place, so concurrent first uses agree on one identity. A directory created on another host (different machine-id) is
refused rather than silently shared.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError
from inclavare.oci import jsonlite
from inclavare.tee import marker, records

TYPE_CHECKING = False  # pathlib (with re, fnmatch, urllib.parse) costs a sim enclave's launch more than its check
if TYPE_CHECKING:
    from pathlib import Path

TYPE_CHECKING = False  # importing typing costs a sim enclave start
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_DIR = "/var/lib/inclavare/sim"
ENV_DIR = "INCLAVARE_SIM_DIR"
CPU_SVN = bytes([1] * 4) + bytes(12)  # the sim's fixed CPUSVN
MACHINE_ID = "/etc/machine-id"
FILES = ("platform.json", "platform.secret", "quoting.key", "pck.key", "pck_chain.pem", "root_ca.pem")
TEMPLATE = "quote.template"


@records.record
class Platform:
    directory: Path
    platform_id: str
    secret: bytes
    cpu_svn: bytes
    quoting_key: ec.EllipticCurvePrivateKey
    pck_key: ec.EllipticCurvePrivateKey
    pck_chain_pem: bytes
    root_ca_pem: bytes

    @property
    def root_ca(self) -> x509.Certificate:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.root_ca_pem)


def platform_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    from pathlib import Path

    return Path(platform_path(directory))


def platform_path(directory: str | os.PathLike[str] | None = None) -> str:
    """platform_dir as a string, for the launch path (no pathlib)."""
    return os.fspath(directory or os.environ.get(ENV_DIR) or DEFAULT_DIR)


def _host_id() -> str:
    try:
        with open(MACHINE_ID, "rb") as f:
            mid = f.read().strip()
    except OSError:
        return ""
    from inclavare.tee.sha256 import sha256

    return sha256(b"inclavare-sim-host:" + mid).hexdigest() if mid else ""


def _name(cn: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Inclavare sim TEE (SIMULATED, NOT SGX HARDWARE)"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, years: int) -> x509.Certificate:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(marker.SIM_EXTENSION_OID),
                                                  marker.SIM_EXTENSION_VALUE), critical=True)
    )
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _create(target: Path) -> None:
    import datetime
    import shutil
    import tempfile
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sim-new-", dir=target.parent))
    try:
        root_key = ec.generate_private_key(ec.SECP256R1())
        ca_key = ec.generate_private_key(ec.SECP256R1())
        pck_key = ec.generate_private_key(ec.SECP256R1())
        root_cn = f"Inclavare SIM Root CA ({marker.SIM_CN_MARK})"
        ca_cn = f"Inclavare SIM PCK Platform CA ({marker.SIM_CN_MARK})"
        root = _cert(root_cn, root_key, root_cn, root_key, ca=True, years=20)
        ca = _cert(ca_cn, ca_key, root_cn, root_key, ca=True, years=15)
        leaf = _cert(f"Inclavare SIM PCK Certificate ({marker.SIM_CN_MARK})", pck_key, ca_cn, ca_key, ca=False,
                     years=10)
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca, root))
        meta = {"version": 1, "platform_id": os.urandom(16).hex(), "host": _host_id(), "cpu_svn": CPU_SVN.hex(),
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "note": "inclavare sim TEE: SIMULATED platform identity, software protection only"}
        _write(tmp / "platform.json", jsonlite.dumps_indent(meta, " ").encode() + b"\n")
        _write(tmp / "platform.secret", os.urandom(32))
        _write(tmp / "quoting.key", _pem_key(ec.generate_private_key(ec.SECP256R1())))
        _write(tmp / "pck.key", _pem_key(pck_key))
        _write(tmp / "pck_chain.pem", chain)
        _write(tmp / "root_ca.pem", root.public_bytes(serialization.Encoding.PEM))
        try:
            os.rename(tmp, target)  # atomic; fails when another process won the race
        except OSError:
            if not (target / "platform.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_platform(directory: str | os.PathLike[str] | None = None, create: bool = True) -> Platform:
    """The sim platform identity in `directory` (see platform_dir), created on first use when `create`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = platform_dir(directory)
    if not (d / "platform.json").exists():
        if not create:
            raise RuneError(f"there is no sim platform identity in {d}; run an enclave or 'sgx-tools gen-qe-target-info --sim' once to create it")
        try:
            _create(d)
        except OSError as e:
            raise RuneError(f"cannot create the sim platform identity in {d}: {e.strerror}; set {ENV_DIR} to a writable directory") from None
    try:
        meta = jsonlite.loads((d / "platform.json").read_bytes())
        data = {name: (d / name).read_bytes() for name in FILES[1:]}
    except (OSError, ValueError) as e:
        raise RuneError(f"the sim platform identity in {d} is unreadable or incomplete ({e}); remove the directory to create a new one") from None
    unreadable = f"the sim platform keys in {d} are unreadable; remove the directory to create a new one"
    _check_meta(meta, d, unreadable)
    try:
        q = serialization.load_pem_private_key(data["quoting.key"], None)
        p = serialization.load_pem_private_key(data["pck.key"], None)
        platform_id = meta["platform_id"]
        cpu_svn = bytes.fromhex(meta["cpu_svn"])
        x509.load_pem_x509_certificate(data["root_ca.pem"])
    except (ValueError, TypeError, KeyError):
        raise RuneError(unreadable) from None
    if not isinstance(q, ec.EllipticCurvePrivateKey) or not isinstance(p, ec.EllipticCurvePrivateKey):
        raise RuneError(f"the sim platform keys in {d} are not ECDSA keys; remove the directory to create a new one")
    return Platform(d, platform_id, data["platform.secret"], cpu_svn, q, p,
                    data["pck_chain.pem"], data["root_ca.pem"])


@records.record
class PlatformKeys:
    """What a launched enclave's evidence needs of the platform, read without `cryptography` (see load_keys)."""

    directory: str
    secret: bytes
    cpu_svn: bytes
    quoting_key_der: bytes  # PKCS#8 DER, for inclavare.tee.openssl
    quote_template: bytes  # quote header (48 bytes) || the quote's tail after the ISV signature


def _pem_der(pem: bytes, label: bytes) -> bytes:
    import binascii

    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    head, sep, rest = pem.partition(begin)
    body, sep2, _ = rest.partition(end)
    if not sep or not sep2 or head.strip():
        raise ValueError(f"not a PEM {label.decode()}")
    return binascii.a2b_base64(b"".join(body.split()))


def _check_meta(meta: object, d: str | Path, unreadable: str) -> None:
    """platform.json is an object, made on this host (a copied platform directory would share its secret)."""
    if not isinstance(meta, dict):
        raise RuneError(unreadable)
    host = _host_id()
    if meta.get("host") and host and meta["host"] != host:
        raise RuneError(f"the sim platform identity in {d} was created on another host (machine-id differs); "
                        f"remove it or set {ENV_DIR} so that hosts never share one by accident")


def load_keys(directory: str | os.PathLike[str] | None = None) -> PlatformKeys:
    """The platform's secret, CPUSVN, quoting key and quote template, as a launch needs them: files read, nothing
    parsed with `cryptography`. The first use on a platform (no identity, or none of its quote template yet) goes
    through load_platform, which creates what is missing."""
    d = platform_path(directory)
    if not os.path.exists(os.path.join(d, TEMPLATE)):
        _write_template(load_platform(directory))
    unreadable = f"the sim platform keys in {d} are unreadable; remove the directory to create a new one"

    def read(name: str) -> bytes:
        with open(os.path.join(d, name), "rb") as f:
            return f.read()

    try:
        meta = jsonlite.loads(read("platform.json"))
        secret = read("platform.secret")
        qkey = read("quoting.key")
        template = read(TEMPLATE)
    except (OSError, ValueError) as e:
        raise RuneError(f"the sim platform identity in {d} is unreadable or incomplete ({e}); remove the directory to "
                        f"create a new one") from None
    _check_meta(meta, d, unreadable)
    try:
        cpu_svn = bytes.fromhex(meta["cpu_svn"])
        der = _pem_der(qkey, b"PRIVATE KEY")
    except (ValueError, TypeError, KeyError):
        raise RuneError(unreadable) from None
    if len(secret) != 32 or len(cpu_svn) != 16 or len(template) < 48 + 64 + 384 + 64:
        raise RuneError(unreadable)
    return PlatformKeys(d, secret, cpu_svn, der, template)


def _write_template(platform: Platform) -> None:
    from inclavare.tee.sim import qe

    data = qe.quote_template(platform)
    # not the pid for a unique name: launch children of concurrent containers are all pid 2 in their namespaces
    tmp = platform.directory / f".{TEMPLATE}.tmp{os.urandom(8).hex()}"
    try:
        _write(tmp, data)
        os.replace(tmp, platform.directory / TEMPLATE)  # concurrent first uses: the last one wins, each one valid
    except OSError as e:
        raise RuneError(f"cannot write the sim quote template into {platform.directory}: {e.strerror}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
