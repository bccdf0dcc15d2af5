"""verdictd: the store, the verifier, the broker, the KBS HTTP listener, the attested-TLS listeners and the admin
socket, in one process. SIGHUP reloads the configuration's attestation settings (collateral, PCCS, sim roots, root
CA), the records from disk and the audit log (listeners keep their addresses); SIGTERM and SIGINT stop it."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import signal
import sys
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attest.collateral import Collateral
from inclavare.attest.errors import VerificationError
from inclavare.attest.policy import PolicyError
from inclavare.attest.verifier import Verifier
from inclavare.errors import RuneError
from inclavare.kbs import config as cfgmod
from inclavare.kbs.admin import AdminServer
from inclavare.kbs.audit import Audit
from inclavare.kbs.broker import Broker, build_policy
from inclavare.kbs.store import Store, StoreError, check_name, check_path, load_key
from inclavare.kbs.token import TokenIssuer


def build_verifier(c: cfgmod.Config) -> Verifier:
    try:
        collateral = [Collateral.from_file(p) for p in c.collateral]
    except VerificationError as e:
        raise RuneError(f"{c.path}: {e.reason}") from None
    roots = []
    for p in c.sim_roots:
        try:
            roots.append(x509.load_pem_x509_certificate(p.read_bytes()))
        except (OSError, ValueError) as e:
            raise RuneError(f"{c.path}: the sim root {p} is not a readable PEM certificate ({e})") from None
    root_der = None
    if c.root_ca:
        try:
            data = c.root_ca.read_bytes()
            cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            root_der = cert.public_bytes(serialization.Encoding.DER)
        except (OSError, ValueError) as e:
            raise RuneError(f"{c.path}: the root CA {c.root_ca} is not a readable certificate ({e})") from None
    return Verifier(collateral, c.pccs_url or None, roots, root_der)


class Verdictd:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.cfg = cfgmod.load(config_path)
        self.threads: list[threading.Thread] = []
        self.stop_event = threading.Event()
        self.reload_lock = threading.Lock()

    # ---- start / stop ----
    def start(self) -> None:
        from inclavare.attest import ratls
        from inclavare.kbs.http import make_server
        from inclavare.kbs.ratls_service import RatlsService
        from inclavare.kbs.rcar import Rcar

        c = self.cfg
        self.verifier = build_verifier(c)  # first: a bad attestation setting leaves no state directory or log behind
        c.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = Store(c.state_dir, load_key(c.key_file))
        self.store.load()
        self.audit = Audit(c.audit_log)
        self.broker = Broker(self.store, self.audit)
        self.tokens = TokenIssuer(self._key_pem("token", lambda: TokenIssuer().pem()))
        tls_key = serialization.load_pem_private_key(self._key_pem("tls", _new_ec_pem), None)
        self.tls_spki = hashlib.sha256(tls_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()
        self.rcar = Rcar(self.broker, _Current(self), self.tokens, c.session_timeout, c.token_lifetime)
        self.http = None
        if c.kbs_listen:
            self.http = make_server(self.rcar, c.kbs_listen, c.max_connections, c.max_body, c.io_timeout)
            self._thread(self.http.serve_forever)
        ctx = ratls.server_context(_self_signed(tls_key), tls_key, mutual=True)  # type: ignore[arg-type]
        self.ratls = [RatlsService(self.broker, lambda: self.verifier, ctx, a, c.max_connections, c.max_body,
                                   c.io_timeout) for a in c.ratls_listen]
        for r in self.ratls:
            self._thread(r.serve_forever)
        self.admin = AdminServer(str(c.admin_socket), self.admin_op)
        self._thread(self.admin.serve_forever)
        self.audit.log("start", pid=os.getpid(), kbs=self.kbs_address(), attested_tls=[r.address for r in self.ratls])

    def _thread(self, target: Any) -> None:
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self.threads.append(t)

    def _key_pem(self, name: str, make: Any) -> bytes:
        rec = self.store.get("key", name)
        if rec is None:
            self.store.put("key", name, {"pem": make().decode()})
            rec = self.store.get("key", name)
        return rec["pem"].encode()

    def kbs_address(self) -> str:
        if self.http is None:
            return ""
        host, port = self.http.server_address[:2]
        return f"{host}:{port}"

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        for r in self.ratls:
            r.stop()
        self.admin.stop()
        self.audit.log("stop", pid=os.getpid())

    def reload(self) -> dict[str, Any]:
        with self.reload_lock:
            try:
                new = cfgmod.load(self.config_path)
                verifier = build_verifier(new)
                self.store.load()
            except (RuneError, OSError) as e:
                self.audit.log("reload_failed", reason=str(e))
                return {"ok": False, "error": f"reload failed, the running configuration is kept: {e}"}
            self.verifier = verifier
            self.cfg.collateral, self.cfg.sim_roots, self.cfg.pccs_url = new.collateral, new.sim_roots, new.pccs_url
            self.broker.forget()
            self.audit.path = new.audit_log
            self.audit.reopen()
            self.audit.log("reload", secrets=len(self.store.names("secret")))
            return {"ok": True}

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=self.reload, daemon=True).start())
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        self.start()
        print(f"verdictd: ready, KBS on {self.kbs_address() or '-'}, attested TLS on "
              f"{', '.join(r.address for r in self.ratls) or '-'}, admin {self.cfg.admin_socket}", file=sys.stderr,
              flush=True)
        while not self.stop_event.wait(3600):
            pass
        self.stop()
        return 0

    # ---- admin ----
    def admin_op(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        try:
            if op == "status":
                return {"ok": True, "pid": os.getpid(), "kbs": self.kbs_address(),
                        "attested_tls": [r.address for r in self.ratls], "tls_spki_sha256": self.tls_spki.hex(),
                        "secrets": len(self.store.names("secret")), "policies": self.store.names("policy")}
            if op == "list_secrets":
                out = []
                for p in self.store.names("secret"):
                    value, policy = self.store.secret(p) or (b"", "")
                    out.append({"path": p, "policy": policy, "size": len(value)})
                return {"ok": True, "secrets": out}
            if op == "set_secret":
                path, policy = check_path(str(req.get("path"))), check_name(str(req.get("policy") or "default"))
                try:
                    value = base64.b64decode(str(req.get("value", "")), validate=True)
                except (binascii.Error, ValueError):
                    return {"ok": False, "error": "value must be base64"}
                self.store.set_secret(path, value, policy)
                self.audit.log("admin", op=op, resource=path, policy=policy)
                return {"ok": True}
            if op == "delete_secret":
                path = check_path(str(req.get("path")))
                if not self.store.delete("secret", path):
                    return {"ok": False, "error": f"there is no secret {path}"}
                self.audit.log("admin", op=op, resource=path)
                return {"ok": True}
            if op == "list_policies":
                return {"ok": True, "policies": sorted({"default", *self.store.names("policy")})}
            if op == "get_policy":
                name = check_name(str(req.get("name")))
                rec = self.store.get("policy", name)
                if rec is None and name != "default":
                    return {"ok": False, "error": f"there is no policy {name}"}
                rec = rec or {"rego": None, "reference": {}}
                return {"ok": True, "name": name, "rego": rec.get("rego"), "reference": rec.get("reference") or {}}
            if op in ("set_policy", "set_reference"):
                name = check_name(str(req.get("name")))
                old = self.store.get("policy", name) or {"rego": None, "reference": {}}
                rego = req.get("rego") if op == "set_policy" else old.get("rego")
                ref = req.get("reference")
                rec = {"rego": rego if isinstance(rego, str) else None,
                       "reference": ref if isinstance(ref, dict) else ({} if op == "set_policy" else old["reference"])}
                build_policy(name, rec)  # refuses a module that does not compile or bad reference values
                self.store.put("policy", name, rec)
                self.audit.log("admin", op=op, policy=name)
                return {"ok": True}
            if op == "delete_policy":
                name = check_name(str(req.get("name")))
                users = [p for p in self.store.names("secret") if (self.store.secret(p) or (b"", ""))[1] == name]
                if users:
                    return {"ok": False, "error": f"policy {name} is used by the secret {users[0]}"}
                if not self.store.delete("policy", name):
                    return {"ok": False, "error": f"there is no policy {name}"}
                self.audit.log("admin", op=op, policy=name)
                return {"ok": True}
            if op == "reload":
                return self.reload()
        except (StoreError, PolicyError) as e:
            return {"ok": False, "error": str(e)}
        except OSError as e:
            return {"ok": False, "error": f"the store could not be written: {e.strerror}"}
        return {"ok": False, "error": f"unknown admin op {op!r}"}


class _Current:
    """The daemon's verifier as it is now (a reload replaces it)."""

    def __init__(self, d: Verdictd) -> None:
        self.d = d

    def verify(self, *a: Any, **kw: Any) -> Any:
        return self.d.verifier.verify(*a, **kw)


def _new_ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verdictd")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))


def main_run(config_path: str) -> int:
    try:
        d = Verdictd(config_path)
        return d.run()
    except (RuneError, OSError) as e:
        msg = str(e) if isinstance(e, RuneError) else f"verdictd cannot start: {e}"
        print(f"verdictd: {msg}", file=sys.stderr)
        return 1


