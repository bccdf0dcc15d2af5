"""The systemd cgroup driver (`rune --systemd-cgroup`): the container's cgroup is a transient scope that systemd
makes, as runc's systemd driver does.

linux.cgroupsPath is "slice:prefix:name": the unit is "prefix-name.scope" in the slice (default system.slice; "-.slice"
is the root slice); a name ending in ".slice" (a slice, which takes no process) is refused. create asks systemd, over D-Bus (jeepney), for the unit
with StartTransientUnit: Description, Slice, Delegate=yes, PIDs=[the init's pid], accounting on, DefaultDependencies=no
and linux.resources as unit properties (MemoryLimit, CPUShares, BlockIOWeight on v1 and hybrid hosts; MemoryMax,
CPUWeight, IOWeight on v2; TasksMax, CPUQuotaPerSecUSec, AllowedCPUs, DevicePolicy/DeviceAllow on both), and waits
for its JobRemoved signal. The directories systemd does not manage on a v1 or hybrid host (cpuset, freezer, ...) are
made by rune, the init joins them all, and the resources are also written to the cgroup files, as the cgroupfs driver
does (systemd has no property for most of them). delete stops the unit (StopUnit, then ResetFailedUnit) and removes
what is left; update sets the properties again (SetUnitProperties) before writing the files.

The bus: $DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket, else (as root) systemd's own private socket
/run/systemd/private, as go-systemd does for runc. jeepney is imported only here: the cgroupfs driver's hot path
never loads it.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

from . import Manager as FsManager
from . import host as _hostmod
from .host import Host

BOOTED = "/run/systemd/system"
SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
PRIVATE = "unix:path=/run/systemd/private"
SYSTEMD = ("/org/freedesktop/systemd1", "org.freedesktop.systemd1", "org.freedesktop.systemd1.Manager")
TIMEOUT = 30.0  # seconds for a job, as runc
U64_MAX = (1 << 64) - 1
CPU_PERIOD_DEFAULT = 100000


def check_booted() -> None:
    """systemd must be the init of this (pid and mount) namespace, as sd_booted(3) tells."""
    if not os.path.isdir(BOOTED):
        raise RuneError(f"--systemd-cgroup: systemd is not running as PID 1 ({BOOTED} is missing); the systemd "
                        f"cgroup driver needs it (drop the flag to use cgroupfs)")


def unit_of(container_id: str, cgroups_path: str | None) -> tuple[str, str]:
    """(slice, unit name) for linux.cgroupsPath "slice:prefix:name" (runc's rules)."""
    if not cgroups_path:
        parent, prefix, name = "", "runc", container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise RuneError(f'linux.cgroupsPath: expected "slice:prefix:name" with --systemd-cgroup (such as '
                            f'"system.slice:rune:{container_id}"), got {cgroups_path!r}')
        parent, prefix, name = parts
    if not name:
        raise RuneError(f'linux.cgroupsPath: the name of {cgroups_path!r} ("slice:prefix:name") is empty')
    for part, what in ((prefix, "prefix"), (name, "name")):
        if "/" in part or any(ord(c) < 0x20 for c in part):
            raise RuneError(f"linux.cgroupsPath: the {what} of {cgroups_path!r} may not contain '/' or control "
                            f"characters")
    parent = parent or "system.slice"
    _hostmod.expand_slice(parent)  # checks it
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    return parent, unit


# --- linux.resources -> unit properties (runc's genV1ResourcesProperties / genV2ResourcesProperties) -----------------

Prop = tuple  # (name, (D-Bus signature, value))


def _int(section: dict | None, key: str) -> int:
    value = (section or {}).get(key)
    return value if type(value) is int else 0


def cpu_quota(quota: int, period: int) -> list[Prop]:
    props: list[Prop] = []
    if period:
        props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_sec = U64_MAX  # USEC_INFINITY
        if quota > 0:
            # systemd keeps a whole percentage of a CPU: rounded up to 10 ms, so that the kernel value is not lower
            per_sec = quota * 1_000_000 // (period or CPU_PERIOD_DEFAULT)
            if per_sec % 10000:
                per_sec = (per_sec // 10000 + 1) * 10000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


def range_to_bits(text: str, field: str) -> bytes:
    """A cpuset list ("0-3,7") -> systemd's AllowedCPUs/AllowedMemoryNodes bitmask (byte 0 = cpus 0..7, LSB first)."""
    bits = 0
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise RuneError(f"{field}: {text!r} is not a list of numbers and ranges (such as \"0-3,7\")")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first or last > 8191:
            raise RuneError(f"{field}: bad range {part!r} in {text!r}")
        for i in range(first, last + 1):
            bits |= 1 << i
    if not bits:
        return b""
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def device_props(rules: list | None) -> list[Prop]:
    """DevicePolicy=strict and DeviceAllow from the OCI rules (the last matching rule wins), as runc: systemd would
    otherwise reset the devices cgroup to allow-all whenever it realizes the unit again (daemon-reload)."""
    if rules is None:
        return []
    from . import devices

    default_allow = False
    allowed: list[list] = []  # [type, major, minor, access]
    denies_in_blacklist = False
    for r in devices.parse(rules):
        if r.type == "a" and r.major == -1 and r.minor == -1:
            if r.access == "rwm":
                default_allow, allowed, denies_in_blacklist = r.allow, [], False
                continue
        types = ("c", "b") if r.type == "a" else (r.type,)
        for t in types:
            if default_allow:
                if not r.allow:
                    denies_in_blacklist = True
                continue
            same = [e for e in allowed if e[:3] == [t, r.major, r.minor]]
            if r.allow:
                if same:
                    same[0][3] = "".join(c for c in "rwm" if c in same[0][3] + r.access)
                else:
                    allowed.append([t, r.major, r.minor, r.access])
            else:
                for e in same:
                    e[3] = "".join(c for c in e[3] if c not in r.access)
    if default_allow:
        if not denies_in_blacklist:
            return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
        return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", []))]  # rune writes the real rules
    entries = []
    for t, major, minor, access in allowed:
        if not access:
            continue
        kind = "char" if t == "c" else "block"
        if major == -1:
            if minor != -1:
                continue  # "*:n" has no systemd form; the cgroup files still get it
            path = f"{kind}-*"
        elif minor == -1:
            path = f"{kind}-{major}"
        else:
            path = f"/dev/{kind}/{major}:{minor}"
        entries.append((path, access))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", entries))]


def resource_props(resources: dict, v2: bool) -> list[Prop]:
    """Unit properties for OCI linux.resources (already checked by the cgroupfs plan)."""
    from . import v2 as fs2

    props: list[Prop] = []
    props += device_props(resources.get("devices"))
    mem = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    limit = _int(mem, "limit")
    if v2:
        if limit:
            props.append(("MemoryMax", ("t", U64_MAX if limit == -1 else limit)))
        if _int(mem, "reservation") > 0:
            props.append(("MemoryLow", ("t", _int(mem, "reservation"))))
        swap = fs2.swap_max(_int(mem, "swap"), limit)
        if swap:
            props.append(("MemorySwapMax", ("t", U64_MAX if swap == -1 else swap)))
        if _int(cpu, "shares"):
            props.append(("CPUWeight", ("t", fs2.cpu_weight(_int(cpu, "shares")))))
        if _int(resources.get("blockIO"), "weight"):
            props.append(("IOWeight", ("t", fs2.io_weight(_int(resources.get("blockIO"), "weight")))))
    else:
        if limit:
            props.append(("MemoryLimit", ("t", U64_MAX if limit == -1 else limit)))
        if _int(cpu, "shares"):
            props.append(("CPUShares", ("t", _int(cpu, "shares"))))
        if _int(resources.get("blockIO"), "weight"):
            props.append(("BlockIOWeight", ("t", _int(resources.get("blockIO"), "weight"))))
    props += cpu_quota(_int(cpu, "quota"), _int(cpu, "period"))
    pids = _int(resources.get("pids"), "limit")
    if pids > 0 or pids == -1:
        props.append(("TasksMax", ("t", U64_MAX if pids == -1 else pids)))
    for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
        if isinstance(cpu.get(key), str) and cpu[key].strip():
            props.append((name, ("ay", range_to_bits(cpu[key], f"linux.resources.cpu.{key}"))))
    if v2:
        for key, value in (resources.get("unified") or {}).items():
            props += _unified_prop(key, str(value).strip())
    return props


def _unified_prop(key: str, value: str) -> list[Prop]:
    """The linux.resources.unified keys that have a unit property (the others are written to the files only)."""
    def number() -> int:
        if value == "max":
            return U64_MAX
        if not value.isdigit():
            raise RuneError(f"linux.resources.unified.{key}: {value!r} is not a number or \"max\"")
        return int(value)

    names = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow", "memory.min": "MemoryMin",
             "memory.max": "MemoryMax", "memory.swap.max": "MemorySwapMax", "pids.max": "TasksMax"}
    if key in names:
        return [(names[key], ("t", number()))]
    if key == "cpu.weight" and value.isdigit():
        return [("CPUWeight", ("t", int(value)))]
    if key == "cpu.max":
        fields = value.split()
        if 1 <= len(fields) <= 2 and (fields[0] == "max" or fields[0].isdigit()) and \
                (len(fields) == 1 or fields[1].isdigit()):
            quota = 0 if fields[0] == "max" else int(fields[0])
            return cpu_quota(quota, int(fields[1]) if len(fields) == 2 else CPU_PERIOD_DEFAULT)
    if key in ("cpuset.cpus", "cpuset.mems"):
        name = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
        return [(name, ("ay", range_to_bits(value, f"linux.resources.unified.{key}")))]
    return []


# --- D-Bus ----------------------------------------------------------------------------------------------------------

def _site_packages() -> None:
    """jeepney lives in site-packages, which the -I -S launchers leave out until inclavare.tee adds it on demand."""
    import inclavare.tee  # noqa: F401


class Bus:
    """A connection to systemd's manager object: the system bus, else systemd's private socket (root only)."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        check_booted()
        _site_packages()
        from jeepney import DBusAddress

        self.timeout = timeout
        self.addr = DBusAddress(SYSTEMD[0], bus_name=SYSTEMD[1], interface=SYSTEMD[2])
        self.conn, self.where = self._connect()
        self.private = self.where == PRIVATE

    def _connect(self):  # noqa: ANN202 - a jeepney DBusConnection
        from jeepney.bus import get_bus
        from jeepney.io.blocking import DBusConnection, prep_socket

        tried = []
        candidates = [os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS]
        if os.geteuid() == 0:
            candidates.append(PRIVATE)
        for where in candidates:
            try:
                sock = _peer_socket(get_bus(where)) if where == PRIVATE else prep_socket(get_bus(where), timeout=5.0)
            except (OSError, TimeoutError, ValueError, RuntimeError) as e:
                tried.append(f"{where.partition('=')[2] or where} ({getattr(e, 'strerror', None) or e})")
                continue
            try:
                if where == PRIVATE:
                    return _peer(sock), where  # a peer-to-peer socket: no bus daemon, no Hello
                return DBusConnection(sock), where
            except Exception as e:  # noqa: BLE001 - whatever the peer did, one sentence
                sock.close()
                tried.append(f"{where.partition('=')[2]} ({e})")
        raise RuneError(f"--systemd-cgroup: cannot reach systemd over D-Bus: {'; '.join(tried)}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, signature: str, body: tuple, what: str):  # noqa: ANN201 - the reply's body
        from jeepney import new_method_call

        return self._send(new_method_call(self.addr, method, signature, body), what)

    def _send(self, msg, what: str):  # noqa: ANN001, ANN202
        from jeepney.wrappers import DBusErrorResponse

        try:
            reply = self.conn.send_and_get_reply(msg, timeout=self.timeout)
        except TimeoutError:
            raise RuneError(f"--systemd-cgroup: {what}: no answer from systemd over D-Bus within "
                            f"{self.timeout:.0f} s") from None
        except OSError as e:
            raise RuneError(f"--systemd-cgroup: {what}: the D-Bus connection failed ({e.strerror or e})") from None
        if reply.header.message_type.name == "error":
            err = DBusErrorResponse(reply)
            raise SystemdError(what, err.name, err.data)
        return reply.body

    def run_job(self, method: str, signature: str, body: tuple, what: str) -> str:
        """Call a method that queues a job; wait for the job's JobRemoved signal; its result ("done", "failed"...)."""
        import collections
        import time

        from jeepney import MatchRule

        rule = MatchRule(type="signal", interface=SYSTEMD[2], member="JobRemoved", path=SYSTEMD[0])
        if not self.private:  # a bus daemon forwards the signal only to those who asked for it
            from jeepney.bus_messages import message_bus

            self._send(message_bus.AddMatch(rule), "cannot subscribe to systemd's JobRemoved signal")
        with self.conn.filter(rule, queue=collections.deque()) as queue:
            job = str(self.call(method, signature, body, what)[0])
            deadline = time.monotonic() + self.timeout
            while True:
                while queue:
                    _id, path, _unit, result = queue.popleft().body
                    if str(path) == job:
                        return str(result)
                try:
                    self.conn.recv_messages(timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise RuneError(f"--systemd-cgroup: {what}: systemd did not finish job {job} within "
                                    f"{self.timeout:.0f} s") from None
                except OSError as e:
                    raise RuneError(f"--systemd-cgroup: {what}: the D-Bus connection failed ({e})") from None

    # --- the calls runc makes -----------------------------------------------------------------------------------

    def start_transient_unit(self, unit: str, props: list[Prop]) -> None:
        what = f"cannot create the systemd unit {unit}"
        for attempt in (1, 2):
            try:
                result = self.run_job("StartTransientUnit", "ssa(sv)a(sa(sv))", (unit, "replace", props, []), what)
                break
            except SystemdError as e:
                if e.name == "org.freedesktop.systemd1.UnitExists" and attempt == 1:
                    self.reset_failed(unit)  # a failed leftover of the same name: systemd forgets it, then again
                    continue
                if e.name == "org.freedesktop.systemd1.UnitExists":
                    raise RuneError(f"--systemd-cgroup: {what}: a unit of that name exists already (another "
                                    f"container's linux.cgroupsPath?)") from None
                raise RuneError(str(e)) from None
        if result != "done":
            self.reset_failed(unit)
            raise RuneError(f"--systemd-cgroup: {what}: its start job ended with {result!r} (see journalctl -u "
                            f"{unit})")

    def stop_unit(self, unit: str) -> None:
        try:
            self.run_job("StopUnit", "ss", (unit, "replace"), f"cannot stop the systemd unit {unit}")
        except SystemdError as e:
            if e.name not in ("org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.LoadFailed"):
                raise RuneError(str(e)) from None
        self.reset_failed(unit)

    def reset_failed(self, unit: str) -> None:
        try:
            self.call("ResetFailedUnit", "s", (unit,), f"cannot reset the systemd unit {unit}")
        except SystemdError:
            pass  # not failed, or gone: nothing to forget

    def set_unit_properties(self, unit: str, props: list[Prop]) -> None:
        try:
            self.call("SetUnitProperties", "sba(sv)", (unit, True, props), f"cannot update the systemd unit {unit}")
        except SystemdError as e:
            raise RuneError(str(e)) from None


class SystemdError(RuneError):
    def __init__(self, what: str, name: str, body: tuple) -> None:
        self.name = name
        detail = str(body[0]) if body else name
        super().__init__(f"--systemd-cgroup: {what}: systemd said {detail} ({name})")


def _peer_socket(path: str):  # noqa: ANN202 - a socket.socket
    """An authenticated socket to systemd's private socket, BEGIN sent with the AUTH line (as systemd's own clients
    do). jeepney's prep_socket sends BEGIN after the server's OK, and the first message right after it: when systemd
    reads both at once, its server end leaves that message unanswered until more data comes (seen here in about one
    call in four); sent ahead, BEGIN is consumed with the AUTH line, and the message comes in a read of its own."""
    import socket

    from jeepney.auth import BEGIN, Authenticator, make_auth_external

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(5.0)
        sock.connect(path)
        sock.sendall(b"\0" + make_auth_external() + BEGIN)
        auth = Authenticator(inc_null_byte=False)
        auth.data_to_send()  # the AUTH line, sent above
        while not auth.authenticated:
            data = sock.recv(1024)
            if not data:
                raise ConnectionResetError(104, "the connection was closed during authentication")
            auth.feed(data)  # raises AuthenticationError unless OK
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise


def _peer(sock):  # noqa: ANN001, ANN202
    """A D-Bus connection to a peer (systemd's private socket), which has no bus daemon to say Hello to."""
    from jeepney.io.blocking import DBusConnection, DBusConnectionBase
    from jeepney.io.common import MessageFilters

    conn = DBusConnection.__new__(DBusConnection)
    DBusConnectionBase.__init__(conn, sock)
    conn._filters = MessageFilters()
    return conn


# --- the Manager ------------------------------------------------------------------------------------------------------

class Manager(FsManager):
    """The cgroups of one container, in a transient systemd scope. create() only checks linux.resources; the unit is
    made by join(pid) once the init exists (a scope needs a process), which also makes the directories systemd does
    not manage, moves the init into them all and writes the resources to the files."""

    late_join = True

    def __init__(self, container_id: str, cgroups_path: str | None, *, host: Host | None = None) -> None:
        self.slice, self.unit = unit_of(container_id, cgroups_path)  # a bad linux.cgroupsPath is named first
        if self.unit.endswith(".slice"):
            # runc asks for it and systemd refuses (a slice takes no PIDs): said here, before anything is made
            raise RuneError(f"linux.cgroupsPath: {cgroups_path!r} names a slice ({self.unit}), which cannot hold the "
                            f"container's processes; give \"slice:prefix:name\" with a name that does not end in "
                            f".slice (the container gets the scope prefix-name.scope)")
        check_booted()
        self.id = container_id
        self._host = host
        h = self.host
        base = _init_base()
        inner = base + _hostmod.expand_slice(self.slice).rstrip("/") + "/" + self.unit
        self.paths = _hostmod.resolve(h, inner)
        self.mode = h.mode
        self._created = []
        self._resources: dict = {}
        self.started = False

    def missing_parents(self) -> list[str]:
        return []  # the slices are systemd's

    def create(self, resources: dict | None = None) -> None:
        """Check linux.resources and their unit properties; nothing is made yet (see join)."""
        self._resources = resources or {}
        if resources:
            self._plan(resources)
            resource_props(resources, self.mode == "v2")

    def properties(self, pid: int) -> list[Prop]:
        v2 = self.mode == "v2"
        props: list[Prop] = [("Description", ("s", f"rune container {self.id}"))]
        props += [("Slice", ("s", self.slice)), ("Delegate", ("b", True))]
        if pid > 0:
            props.append(("PIDs", ("au", [pid])))
        props += [("MemoryAccounting", ("b", True)), ("CPUAccounting", ("b", True)),
                  ("IOAccounting" if v2 else "BlockIOAccounting", ("b", True)), ("TasksAccounting", ("b", True)),
                  ("DefaultDependencies", ("b", False))]
        return props + resource_props(self._resources, v2)

    def join(self, pid: int) -> None:
        with Bus() as bus:
            bus.start_transient_unit(self.unit, self.properties(pid))
        self.started = True
        FsManager.create(self, self._resources)  # the directories systemd left to us, and the files
        FsManager.join(self, pid)

    def pids(self) -> list[int]:
        return FsManager.pids(self) if self.started else []

    def destroy(self) -> None:
        """Undo a create: only what join() made. A unit that this manager did not start may be another container's
        (the same linux.cgroupsPath), with the same directories: nothing of it is touched."""
        if not self.started:
            return
        self.started = False
        try:
            stop(self.unit)
        finally:
            FsManager.destroy(self)


def _init_base() -> str:
    """Where PID 1's cgroup is, init.scope removed: the root of systemd's tree (not "/" when systemd runs in a
    container without a cgroup namespace), as runc's getSubsystemPath."""
    try:
        with open("/proc/1/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "name=systemd"):
            path = path.rstrip("/")
            if path.endswith("/init.scope"):
                path = path[: -len("/init.scope")]
            return "" if path == "/" else path
    return ""


def stop(unit: str) -> None:
    """Stop a container's unit (delete); a unit systemd no longer has is fine."""
    with Bus() as bus:
        bus.stop_unit(unit)


def update(unit: str, resources: dict, v2: bool) -> None:
    """rune update: the new values as the unit's properties (runtime), before the files are written."""
    props = resource_props(resources, v2)
    if props:
        with Bus() as bus:
            bus.set_unit_properties(unit, props)
