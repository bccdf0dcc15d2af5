"""Secret provisioning into enclave containers: before the payload starts, the init-runelet (the trusted side, PID 1
of the container) attests to verdictd with the enclave's own evidence and places the secrets on a memory-only
filesystem inside the container, readable only by the payload's user. Nothing is written to the host's disk.

Settings, each from process.env first, then from the annotation (as the enclave configuration is read):

| env | annotation | value |
|---|---|---|
| ENCLAVE_SECRETS | enclave.secrets | comma-separated `REPO/TYPE/TAG[=FILE]`: the secrets, and the file name of each (TAG by default) |
| ENCLAVE_SECRETS_BROKER | enclave.secrets.broker | verdictd's attested-TLS listener: `unix:PATH` (a host path: reachable from a container without a network) or `HOST:PORT` |
| ENCLAVE_SECRETS_BROKER_SHA256 | enclave.secrets.broker_sha256 | optional: the SHA-256 (hex) of verdictd's TLS key (`verdict status`), pinned |
| ENCLAVE_SECRETS_DIR | enclave.secrets.dir | where the secrets appear in the container (/run/secrets) |
| ENCLAVE_SECRETS_ENV | enclave.secrets.env | optional, comma-separated `FILE=VARIABLE`: also put a secret in the payload's environment |

The ENCLAVE_SECRETS* variables never reach the payload. When they name secrets, the runelet, after the launch check
and before pivot_root, in a short-lived child (so that the long-lived runelet never loads `cryptography` or `ssl`):
makes a P-256 key and a certificate carrying the enclave's quote over SHA-256 of its DICE claims
(inclavare.attest.ratls), connects to the broker with mutual attested TLS, asks for every secret at once, and hands
them to the runelet, which mounts a tmpfs (noswap where the kernel has it; nosuid, nodev, noexec; mode 0500, owned by
process.user) at the secrets directory, writes each secret as a file of mode 0400 owned by the same user, and
remounts it read-only.
If the broker refuses (the evidence does not verify, or a secret's policy does not accept the enclave), the container
is not created, and rune's error says which check or policy rule failed. Evidence comes from the built-in sim enclave
runtime (the launched, signed sim enclave); other enclave runtimes are refused with a sentence.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

SETTINGS = {  # field: (env var, annotation)
    "secrets": ("ENCLAVE_SECRETS", "enclave.secrets"),
    "broker": ("ENCLAVE_SECRETS_BROKER", "enclave.secrets.broker"),
    "broker_sha256": ("ENCLAVE_SECRETS_BROKER_SHA256", "enclave.secrets.broker_sha256"),
    "dir": ("ENCLAVE_SECRETS_DIR", "enclave.secrets.dir"),
    "env": ("ENCLAVE_SECRETS_ENV", "enclave.secrets.env"),
}
ENV_VARS = frozenset(env for env, _ in SETTINGS.values())
DEFAULT_DIR = "/run/secrets"
MAX_TOTAL = 16 << 20


class Request:
    def __init__(self, items: list[tuple[str, str]], broker: str, pin: bytes | None, directory: str,
                 env: dict[str, str]) -> None:
        self.items = items  # (resource path, file name)
        self.broker = broker
        self.pin = pin
        self.dir = directory
        self.env = env  # file name -> variable


def read(config: dict) -> Request | None:
    """The provisioning request of a config.json, validated; None when it names no secrets. RuneError names the
    setting at fault. The ENCLAVE_SECRETS* variables are removed from process.env."""
    process = config.get("process") or {}
    env_list = process.get("env") or []
    env = {}
    for e in env_list:
        k, _, v = e.partition("=")
        if k in ENV_VARS:
            env[k] = v
    ann = config.get("annotations") or {}
    raw = {f: env.get(var) or ann.get(a) or "" for f, (var, a) in SETTINGS.items()}
    if env_list:
        process["env"] = [e for e in env_list if e.partition("=")[0] not in ENV_VARS]
    if not raw["secrets"].strip():
        return None
    where = "ENCLAVE_SECRETS / enclave.secrets"
    items: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in raw["secrets"].split(","))):
        path, _, name = part.partition("=")
        segs = path.split("/")
        if len(segs) != 3 or not all(segs) or any(s in (".", "..") for s in segs):
            raise RuneError(f"{where}: {part!r} is not REPO/TYPE/TAG[=FILE]")
        name = name or segs[2]
        if "/" in name or name in (".", "..") or not name or name.startswith("."):
            raise RuneError(f"{where}: the file name {name!r} of {path} must be a plain name")
        if any(n == name for _, n in items):
            raise RuneError(f"{where}: two secrets would be the file {name!r}")
        items.append((path, name))
    broker = raw["broker"].strip()
    if not broker:
        raise RuneError("ENCLAVE_SECRETS names secrets but ENCLAVE_SECRETS_BROKER (enclave.secrets.broker) gives no "
                        "broker: set it to verdictd's attested-TLS address (unix:PATH or HOST:PORT)")
    if not (broker.startswith("unix:/") or broker.rpartition(":")[2].isdigit()):
        raise RuneError(f"ENCLAVE_SECRETS_BROKER {broker!r} must be unix:/ABSOLUTE/PATH or HOST:PORT")
    pin = None
    if raw["broker_sha256"]:
        try:
            pin = bytes.fromhex(raw["broker_sha256"])
        except ValueError:
            pin = b""
        if len(pin) != 32:
            raise RuneError("ENCLAVE_SECRETS_BROKER_SHA256 must be 64 hex digits (the SHA-256 `verdict status` shows)")
    directory = raw["dir"] or DEFAULT_DIR
    if not directory.startswith("/") or ".." in directory.split("/"):
        raise RuneError(f"ENCLAVE_SECRETS_DIR {directory!r} must be an absolute path inside the container")
    env_map: dict[str, str] = {}
    names = {n for _, n in items}
    for part in filter(None, (p.strip() for p in raw["env"].split(","))):
        name, _, var = part.partition("=")
        if name not in names or not var or not var.replace("_", "a").isalnum():
            raise RuneError(f"ENCLAVE_SECRETS_ENV: {part!r} must be FILE=VARIABLE for a secret's file name")
        env_map[name] = var
    return Request(items, broker, pin, directory, env_map)


def attester(pal):  # noqa: ANN001, ANN201 - the runelet's PAL; returns report_data -> quote
    evidence = getattr(pal, "evidence", None)
    lib = getattr(pal, "lib", None)
    if evidence is None or lib is None:
        raise RuneError("secret provisioning (ENCLAVE_SECRETS) needs evidence of a signed sim enclave run by the "
                        "built-in sim enclave runtime; this container's enclave runtime gives none")
    return lambda rd: evidence.quote(lib, rd)


def resolve_in(rootfs: str, broker: str) -> str:
    """HOST:PORT with HOST a name: its address as the container resolves it (its /etc/hosts, where the kubelet puts
    a pod's hostAliases, and its /etc/resolv.conf, the cluster's DNS for a pod), not as the node does: the name of
    a Service (verdictd.inclavare-system.svc) means nothing to the node's resolver. The lookup runs chrooted in the
    container's root (glibc's files and dns lookups are part of libc), then the process returns to its own root.
    unix: addresses, IP addresses and a name the container cannot resolve are left to the connect itself (the
    node's resolver), whose error names the broker."""
    import ipaddress
    import socket

    if broker.startswith("unix:"):
        return broker
    host, _, port = broker.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return broker
    except ValueError:
        pass
    name = host.encode("idna")  # before the chroot: str names would import the idna codec from there
    old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chroot(rootfs)
        try:
            infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
        finally:
            os.fchdir(old)
            os.chroot(".")
    except OSError:
        return broker
    finally:
        os.close(old)
    family, _, _, _, addr = infos[0]
    return f"[{addr[0]}]:{port}" if family == socket.AF_INET6 else f"{addr[0]}:{port}"


def _fetch(req: Request, quote, rootfs: str = "/") -> dict[str, bytes]:  # noqa: ANN001
    """Attest and fetch in a short-lived child: `cryptography` and `ssl` are loaded there and go with it, so the
    long-lived runelet holds neither (nor the TLS key). The secrets come back over a pipe."""
    import base64
    import json

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            from inclavare.attest.errors import VerificationError
            from inclavare.kbs.client import KbsError, fetch_secrets

            try:
                got = fetch_secrets(resolve_in(rootfs, req.broker), quote, [p for p, _ in req.items], req.pin)
                out: dict = {"secrets": {k: base64.b64encode(v).decode() for k, v in got.items()}}
            except (KbsError, VerificationError) as e:
                out = {"error": f"secret provisioning from {req.broker} was refused: {e}"}
            except (OSError, ValueError) as e:
                out = {"error": f"secret provisioning: cannot reach the secrets broker {req.broker}: "
                                f"{getattr(e, 'strerror', None) or e}"}
        except BaseException as e:  # noqa: BLE001 - whatever happens, the parent gets one sentence
            out = {"error": f"secret provisioning failed: {type(e).__name__}: {e}"}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(w, data):]
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    try:
        out = json.loads(b"".join(chunks))
    except ValueError:
        out = {"error": "secret provisioning: the attesting process died"}
    if "error" in out:
        raise RuneError(out["error"])
    secrets = {k: base64.b64decode(v) for k, v in out["secrets"].items()}
    if sum(len(v) for v in secrets.values()) > MAX_TOTAL:
        raise RuneError("secret provisioning: the secrets are larger than 16 MiB together")
    return secrets


def provide(req: Request | None, config: dict, rootfs: str, pal) -> None:  # noqa: ANN001
    """In the init-runelet, after the launch check and before pivot_root (privileged, host paths visible): attest,
    fetch, mount, write. `req` is what read() found before the launch check (which drops ENCLAVE_* variables)."""
    if req is None:
        return
    secrets = _fetch(req, attester(pal), rootfs)
    user = (config.get("process") or {}).get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    _place(rootfs, req, secrets, uid, gid)
    env_list = config.setdefault("process", {}).setdefault("env", [])
    for path, name in req.items:
        var = req.env.get(name)
        if var:
            try:
                text = secrets[path].decode()
            except UnicodeDecodeError:
                raise RuneError(f"ENCLAVE_SECRETS_ENV: the secret {path} is not UTF-8 text, it cannot be the "
                                f"variable {var}") from None
            if "\0" in text:
                raise RuneError(f"ENCLAVE_SECRETS_ENV: the secret {path} holds a NUL byte, it cannot be {var}")
            env_list[:] = [e for e in env_list if e.partition("=")[0] != var] + [f"{var}={text}"]
            defaults = getattr(pal, "env_defaults", None)
            if isinstance(defaults, dict):  # the sim runtime's environment policy: part of the trusted defaults
                defaults[var] = text


def _place(rootfs: str, req: Request, secrets: dict[str, bytes], uid: int, gid: int) -> None:
    from inclavare.linux import syscalls
    from inclavare.linux.securejoin import secure_join

    target = secure_join(rootfs, req.dir)
    try:
        os.makedirs(target, 0o755, exist_ok=True)
    except OSError as e:
        raise RuneError(f"secret provisioning: cannot make {req.dir} in the container: {e.strerror}") from None
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    size = max(64 * 1024, sum(len(v) for v in secrets.values()) * 2 + 64 * 1024)
    opts = f"size={size},mode=0500,uid={uid},gid={gid}"
    try:
        try:
            syscalls.mount("tmpfs", target, "tmpfs", flags, opts + ",noswap")
        except OSError:
            syscalls.mount("tmpfs", target, "tmpfs", flags, opts)  # kernels before 6.4 have no noswap
    except OSError as e:
        raise RuneError(f"secret provisioning: cannot mount a tmpfs at {req.dir}: {e.strerror}") from None
    for path, name in req.items:
        f = os.path.join(target, name)
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        try:
            view = memoryview(secrets[path])
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o400)
        finally:
            os.close(fd)
    try:
        syscalls.mount(None, target, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | flags)
    except OSError as e:
        raise RuneError(f"secret provisioning: cannot make {req.dir} read-only: {e.strerror}") from None
