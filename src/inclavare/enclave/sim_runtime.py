"""`sim`, the built-in enclave runtime: a Python PAL over the software TEE of inclavare.tee.sim. SIMULATED: it gives
SGX's rules and formats with software protection only.

Call order, as the init-runelet drives any PAL:
  load (before pivot_root, privileged; the moment the original dlopens a PAL): a short-lived child of the
      runelet (forked before the container's namespaces, so that it imports the launch check while the runelet
      makes them, and joining the runelet's mount namespace at load: Launcher) makes the container's root mount
      private (seal_root), and the mounts under it that hold trusted paths (seal_mounts), then runs the launch check -
      EINIT's rules, inclavare.tee.sim.launch_check over the rootfs through that mount, as the container will see
      it (its mounts done), and the process against the manifest - refusing a tampered or
      unsigned image with the TEE library's sentence, and makes the enclave's evidence material
      (inclavare.tee.sim.evidence) with the platform keys; it hands the runelet that material, the measured file
      list and the payload's environment, and exits, so that `cryptography`, the platform's PCK key and CAs and the
      whole launch check's memory never stay in PID 1. While the child checks (it needs no libcrypto: its digests and
      key derivations are inclavare.tee.sha256's), the runelet loads libcrypto (inclavare.tee.openssl) for the
      evidence's reports and quotes; then /dev/attestation gets its tmpfs. These need privileges the container's
      process drops, so they come before pivot_root and the credentials.
  pal_init (after pivot_root, as the container's user): the runelet, which holds the platform secret and the
      quoting key, becomes non-dumpable (no ptrace or /proc/PID/mem by the same user, no core) with RLIMIT_CORE 0;
      /dev/attestation is served by two threads of the runelet (see attestation_dev).
  pal_create_process / pal_exec / pal_kill: native processes, reaped by the runelet's main loop (no thread waits),
      forked and exec'd through the exec trampoline's memfd (execveat, never a path the container could mount
      over), with RLIMIT_CORE 0 (inherited) and PR_SET_DUMPABLE 0 set before execve - which the kernel resets at
      the execve of a readable binary, so the payload itself is protected from core dumps but not from ptrace by
      the same user: software cannot give it more.
  pal_get_local_report: EREPORT of the launched enclave (the v3 operation `rune attest` uses).
  pal_destroy: stops serving /dev/attestation.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

ANNOTATION_MRENCLAVE = "enclave.sim.mrenclave"
ENCLAVE_DIR = ".inclavare/enclave"  # inclavare.tee.sim.image.ENCLAVE_DIR, without importing the TEE for a PAL


def is_signed(rootfs: str, config: dict) -> bool:
    """The bundle says it is a signed sim enclave: its config carries sign-bundle's annotation, or its rootfs the
    signed image. Either one makes the launch check mandatory (removing the image does not skip it)."""
    return bool((config.get("annotations") or {}).get(ANNOTATION_MRENCLAVE)) or os.path.exists(
        os.path.join(rootfs, ENCLAVE_DIR))


def verify_image(rootfs: str, sim_dir: str | None, config: dict | None = None,  # noqa: ANN201 - LaunchedEnclave
                 signed: tuple | None = None, bundle=None,  # noqa: ANN001 - bundle_cache.Lookup
                 mountinfo: bytes | None = None, cache=None,  # noqa: ANN001 - MeasurementCache
                 host: HostSide | None = None):
    """The launch check; with the bundle `config`, also its process against the manifest (entry point, arguments,
    environment), whose process.env becomes the environment the payload gets. `signed`: the signed image as
    read_signed_image read it, when the caller has (through the sealed root). `bundle`: what epm holds for this
    enclave (bundle_cache.lookup), used before the host's measurement cache when epm serves. `mountinfo`: the
    mount table seal_mounts read, for the measurement cache (its overlay look-up reads no other). `cache`: the
    host's measurement cache of `sim_dir` when the caller opened it (Prepared), else opened here. `host`: what
    prepare_host read of the platform directory for a launch in a user namespace (HostSide), which then reads
    nothing of it: its launch policy is host.policy, and its cache, when not the one host.prepared read, none."""
    from inclavare.tee.sim.launch import LaunchPolicy, check_process, launch_check, read_signed_image

    mounts = tuple(m.get("destination", "") for m in (config or {}).get("mounts") or () if isinstance(m, dict))
    from inclavare.tee.sim.measure_cache import MeasurementCache, open_cache

    if cache is None:
        cache = open_cache(sim_dir) if host is None else MeasurementCache(None)
    cache.mountinfo = mountinfo
    if bundle is not None:
        from inclavare.enclave import bundle_cache

        signed = signed if signed is not None else read_signed_image(rootfs)
        cache = bundle_cache.measurements(bundle, rootfs, signed, cache)
    policy = host.policy if host is not None else LaunchPolicy.for_host(sim_dir)
    launched = launch_check(rootfs, policy=policy, sim_dir=sim_dir, mounts=mounts, cache=cache, signed=signed)
    try:
        if config is not None:  # the process too, before the check is said to have passed and epm's record saved
            process = config.setdefault("process", {})
            process["env"] = check_process(launched.config, process, rootfs)
    finally:
        cache.save()  # only what this launch hashed and accepted (the files, whatever the process)
    from inclavare.enclave import epm_client

    n = len(launched.config.trusted_files)
    epm_client.debug(f"sim launch check passed: {cache.hits} of {n} trusted files unchanged since measured, "
                     f"{n - cache.hits} read and hashed")
    if bundle is not None:
        bundle_cache.save(bundle, rootfs, signed, cache)
    return launched


def preimport(check: bool = True) -> None:
    """The modules load() and the enclave's services use, imported while Python's files are reachable (before a
    user namespace, before pivot_root). check=False leaves out the launch check's: the launch child imports them
    itself (it runs before pivot_root), while the runelet loads libcrypto, and PID 1 never holds them; only where
    Python's files may be out of the launch child's reach (a user namespace) or where the check runs in PID 1 (a PAL
    over a signed image) does the runelet import them first."""
    import fcntl  # noqa: F401

    from inclavare.enclave import attestation_dev  # noqa: F401
    from inclavare.linux import dmz, syscalls  # noqa: F401
    from inclavare.oci import jsonlite  # noqa: F401
    from inclavare.tee import openssl  # noqa: F401
    from inclavare.tee.sim import envpolicy, evidence  # noqa: F401

    if check:
        from inclavare.tee.sim import ereport, identity, image, launch, measure_cache, platform  # noqa: F401


class SimPal:
    name = "the built-in sim enclave runtime"
    version = 3
    reaps = True  # its processes are the runelet's children: the runelet's loop reaps them (see reap)

    def __init__(self, rootfs: str, config: dict, sim_dir: str | None) -> None:
        self.rootfs = rootfs
        self.config = config
        self.sim_dir = sim_dir
        self.evidence = None  # inclavare.tee.sim.evidence.Evidence
        self.lib = None  # inclavare.tee.openssl.LibCrypto
        self.dev = None
        self.procs: set[int] = set()
        self.status: dict[int, int] = {}  # exit statuses reaped, not yet collected by exec()
        self.lock = None  # _thread lock over procs, status and ended
        self.launch_child = 0  # the launch child's pid until init() reaps it
        self.ended: dict[int, object] = {}  # pid -> a _thread lock held until the process is reaped: exec() waits
        self.env_defaults: dict[str, str] = {}
        self.untrusted_env: list[str] = []
        self.trusted: frozenset[str] = frozenset()  # the measured files, as the manifest names them
        self.measured: frozenset[str] | None = None  # their real paths after pivot_root, when first needed
        self.bundle = None  # bundle_cache.Lookup: epm's record for this enclave, when epm serves
        self.launcher: Launcher | None = None  # the launch child forked early (Launcher.early), when there is one
        self.host: HostSide | None = None  # the platform directory's part, read before a user namespace

    # before pivot_root
    def load(self) -> None:
        import _thread  # not threading, whose import (functools, collections) costs more than the launch check
        import fcntl  # noqa: F401

        from inclavare.tee import openssl
        from inclavare.tee.sim import envpolicy  # noqa: F401
        from inclavare.tee.sim.evidence import Evidence

        self.lock = _thread.allocate_lock()
        launcher, self.launcher = self.launcher, None
        host, self.host = self.host, None  # the launch child's alone: PID 1 keeps none of it
        try:
            if launcher is None or not launcher.go(self.rootfs, self.config, self.sim_dir):
                launcher = Launcher.fork(self.bundle, (self.rootfs, self.config, self.sim_dir), host)
        finally:
            if host is not None:
                host.close()  # the launch child has its own copy
            del host
        try:  # while the launch child checks (it needs no libcrypto): the evidence's reports and quotes do
            self.lib = openssl.load()
        except (OSError, AttributeError) as e:
            launcher.result()
            raise RuneError(f"sim enclave: OpenSSL 3's libcrypto cannot be loaded ({e}); install libssl3") from None
        out = launcher.result()
        if "fallback" in out:  # the early child could not join the container's mount namespace
            from inclavare.enclave import epm_client

            epm_client.debug(f"sim launch: {out['fallback']}: the launch child is forked now")
            self.launch_child = launcher.pid
            self.reap_launch_child()
            launcher = Launcher.fork(self.bundle, (self.rootfs, self.config, self.sim_dir))
            out = launcher.result()
        self.launch_child = launcher.pid  # reaped in init(): its exit (its memory freed) need not hold the launch up
        if "error" in out:
            raise RuneError(out["error"])
        self.config.setdefault("process", {})["env"] = out["env"]
        self.env_defaults = out["env_defaults"]
        self.untrusted_env = out["untrusted_env"]
        self.trusted = frozenset(out["trusted"])
        self.evidence = Evidence.from_json(out["evidence"])
        dev = [m for m in self.config.get("mounts") or () if m.get("destination") == "/dev"]
        if dev and dev[-1].get("type") == "tmpfs":  # never write into a host /dev bound into the container
            from inclavare.enclave.attestation_dev import AttestationDev

            user = (self.config.get("process") or {}).get("user") or {}
            self.dev = AttestationDev(self.rootfs, user.get("uid", 0), user.get("gid", 0))
            self.dev.mount()

    def reap_launch_child(self) -> None:
        if self.launch_child:
            try:
                os.waitpid(self.launch_child, 0)
            except ChildProcessError:
                pass
            self.launch_child = 0

    # after pivot_root: the six PAL operations
    def init(self, args: str, log_level: str) -> None:
        from inclavare.linux import syscalls

        self.reap_launch_child()
        if self.evidence is None:
            raise RuneError("sim enclave: pal_init before the enclave was loaded")
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        syscalls.setrlimit(syscalls.RLIMITS["RLIMIT_CORE"], 0, 0)  # prlimit64: no `resource` extension to load
        if self.dev is not None:
            ev, lib = self.evidence, self.lib
            keys = {"_sgx_mrenclave": ev.seal_mrenclave, "_sgx_mrsigner": ev.seal_mrsigner}
            self.dev.start(lambda rd, ti: ev.report(lib, ti, rd), lambda rd: ev.quote(lib, rd), keys,
                           ev.target_info)

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        import fcntl

        from inclavare.linux import dmz, syscalls

        if self.evidence is not None and not self._measured(path):
            raise RuneError(f"{self.name}: the program {path!r} is not a measured file of the signed enclave; "
                            f"sign the image with it among the trusted files")
        if self.evidence is not None:  # the manifest's environment policy, for `rune exec` too
            from inclavare.tee.sim import envpolicy

            env = envpolicy.apply(self.env_defaults, self.untrusted_env, env, "the process's environment")
        # under the lock the reaping loop takes once it has reaped a child: a program that ends before it is
        # recorded here (an exec of `exit 6`) keeps its status instead of being reaped as an orphan
        env_map = dict(e.partition("=")[::2] for e in env)
        with self.lock:
            r, w = os.pipe2(os.O_CLOEXEC)
            # a fork, not posix_spawn (a vfork, 2 ms less): posix_spawn execs by path, and a path is the container's
            # to mount over (with CAP_SYS_ADMIN): a script there naming /proc/self/exe as its interpreter would run
            # the host's interpreter, as a child that still is the runelet's memory; execveat of the memfd is not
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    fds = [fd if fd >= 3 else os.dup(fd) for fd in stdio]  # never clobber one still to be copied
                    for i, fd in enumerate(fds):
                        os.dup2(fd, i)
                    if os.isatty(0):
                        os.setsid()
                        fcntl.ioctl(0, 0x540E, 0)  # TIOCSCTTY
                    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
                    # through the sealed trampoline: this process's /proc/self/exe is the host's interpreter; by
                    # its fd only (a refused execveat is not retried by a path: see dmz.execve)
                    dmz.execve(path, argv, env_map, w)
                except dmz.NeedsExecveat as e:
                    os.write(w, b"S%d" % (e.errno or 1))
                except OSError as e:
                    os.write(w, str(e.errno or 1).encode())
                except BaseException:  # noqa: BLE001
                    os.write(w, b"1")
                os._exit(127)
            os.close(w)
            err = os.read(r, 16)
            os.close(r)
            if err:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass  # the loop reaped it first
                n = int(err[1:] if err[:1] in (b"X", b"S") else err)
                if err[:1] == b"S":
                    raise RuneError(f"{self.name}: pal_create_process failed: the seccomp profile (linux.seccomp) "
                                    f"denies execveat ({os.strerror(n)}), which the runelet needs to start {path!r} "
                                    f"through rune's sealed exec trampoline; allow execveat in the profile")
                raise RuneError(f"{self.name}: pal_create_process failed: exec {path!r}: {os.strerror(n)} (errno {n})")
            import _thread

            ended = _thread.allocate_lock()
            ended.acquire()
            self.ended[pid] = ended
            self.procs.add(pid)
        return pid

    def _measured(self, path: str) -> bool:
        """`path` (in the container, after pivot_root) is a measured file: its real path is one the manifest names
        (the manifest's paths are real paths, as the signing walk found them), or, for a manifest that names a
        file through a symlinked directory, the real path of one."""
        real = os.path.realpath(path)
        if real in self.trusted:
            return True
        if self.measured is None:
            self.measured = _real_paths(self.trusted)
        return real in self.measured

    def reap(self) -> None:
        """Reap every child that ended (the runelet's loop calls it on SIGCHLD); orphans go too."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            with self.lock:
                if pid in self.procs:
                    self.status[pid] = status
                    ended = self.ended.get(pid)
                    if ended is not None and ended.locked():
                        ended.release()

    def collect(self, pid: int) -> int | None:
        """The exit status of `pid` if it was reaped (128+signal when killed), else None."""
        with self.lock:
            status = self.status.pop(pid, None)
            if status is None:
                return None
            self.procs.discard(pid)
            self.ended.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def exec(self, pid: int) -> int:
        if pid not in self.procs:
            raise RuneError(f"{self.name}: pal_exec failed: no process {pid} (errno 3)")
        ended = self.ended.get(pid)
        if ended is not None:
            with ended:  # released by reap()
                pass
        code = self.collect(pid)
        if code is None:
            raise RuneError(f"{self.name}: pal_exec failed: process {pid} was already waited for (errno 10)")
        return code

    def exec_v1(self, path: str, argv: list[str], stdio: tuple[int, int, int]) -> int:
        return self.exec(self.create_process(path, argv, [], stdio))

    def kill(self, pid: int, sig: int) -> None:
        targets = [pid] if pid > 0 else list(self.procs)
        for p in targets:
            if p not in self.procs:
                raise RuneError(f"{self.name}: pal_kill failed: no process {p} (errno 3)")
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def destroy(self) -> None:
        if self.dev is not None:
            self.dev.stopped = True

    def get_local_report(self, target_info: bytes, report_data: bytes = b"") -> bytes:
        if len(target_info) != 512:
            raise RuneError(f"a TARGETINFO is 512 bytes, got {len(target_info)}")
        if len(report_data) > 64:
            raise RuneError("report_data is at most 64 bytes")
        return self.evidence.report(self.lib, target_info, report_data)


def _real_paths(paths: frozenset[str]) -> frozenset[str]:
    """os.path.realpath of each trusted file, its directory resolved once for all the files in it (a trusted file
    is a regular file, never a symlink, as the launch check saw it)."""
    dirs: dict[str, str] = {}
    out = set()
    for p in paths:
        d, name = os.path.split(p)
        real = dirs.get(d)
        if real is None:
            real = dirs[d] = os.path.realpath(d)
        out.add(os.path.join(real, name))
    return frozenset(out)


def seal_root(rootfs: str) -> None:
    """The container's root mount (the bind of the rootfs onto itself that becomes /) private, before the launch
    check reads anything through it: the container gets the mount that was checked, in which no mount made later
    on the host side (propagated into the container's mount namespace by a shared or slave root) can cover a
    trusted path. It becomes read-only with the rest of the container's setup (a signed sim enclave's root.readonly
    is forced, enclave/create.py), once rune's own last writes to it are made (provisioned secrets' /run/secrets),
    before the payload runs. The mounts under it that hold trusted paths are sealed by seal_mounts."""
    from inclavare.linux import syscalls

    try:
        syscalls.mount(None, rootfs, None, syscalls.MS_PRIVATE)
    except OSError as e:
        raise RuneError(f"sim enclave: cannot make the container's root {rootfs} private: {e.strerror}") from None


_KEEPS_HOST_EVENTS = ("shared", "rshared", "slave", "rslave")  # the mount options that ask for the host's mounts
_UNBINDABLE = ("unbindable", "runbindable")


def seal_mounts(rootfs: str, config: dict, enclave) -> bytes:  # noqa: ANN001 - inclavare.tee.sim.image.EnclaveConfig
    """Make private (MS_PRIVATE|MS_REC) each mount under the container's sealed root that holds a trusted path,
    before the launch check reads through it; return the mount table read (once) to find them.

    A mount holds a trusted path when its mount point is a trusted file, symlink or root or a directory above one
    (a config bind over /etc/app whose trusted files the check still checks one by one), or lies under a trusted
    root outside the paths the measurement leaves out (untrusted paths and mount destinations: a mount the host
    had under the rootfs, which the walk measures). Only those: a mount event that reaches any other mount (a
    volume, /etc/hosts, /dev) cannot change what the check read, so the volumes keep the propagation the engine
    asked for (Kubernetes' HostToContainer). A mount is sealed when it or one under it still receives the host's
    mount events (shared:N or master:N in the table: a bind from a shared host mount is its peer or, under the
    default rslave root, its slave); recursively, so that a mount the host propagated into it between the read of
    the table and the seal is sealed with it, and through an O_PATH fd of its mount point reached without
    following a symlink (runtime.rootfs.Target), checked to be the mount the table showed (its mnt_id), or refused.

    A mount the config itself asks to be shared or slave ("rshared", "rslave"..., its last propagation option) that
    holds a trusted path, or lies in a mount that does, is refused with one sentence naming it, whatever the host's
    mounts are: that propagation is what the measurement cannot allow, and keeping it silently
    private would give the engine another mount than it asked for. An "unbindable" one is made unbindable again
    after the seal. linux.rootfsPropagation, runc's propagation of the root (and of the whole tree at first),
    applies again to the new root at the end of the setup (runtime.rootfs.finalize): sealed mounts have no peer and
    no master left by then, so "rshared" gives them a peer group of the container's own and "rslave" leaves them
    private; neither reaches the host again."""
    from inclavare.linux import mountinfo, syscalls

    table = mountinfo.read()
    real = os.path.realpath(rootfs)
    _root, mounts = mountinfo.under(mountinfo.parse(table), real)
    asked = [(i, m) for i, m in enumerate(config.get("mounts") or ()) if isinstance(m, dict)
             and any(o in _KEEPS_HOST_EVENTS or o in _UNBINDABLE for o in m.get("options") or ())]
    if not asked and not any(m.propagates for _top, subtree in mounts for m in subtree):
        return table  # nothing can reach the mounts under the root, nor was asked to (the usual `rune run`)
    holds = _holder(enclave, config)
    sealed = [(top, top.point[len(real):]) for top, subtree in mounts if holds(top.point[len(real):])]
    unbind = []
    if asked:
        from inclavare.linux import mountopts
        from inclavare.linux.securejoin import secure_join

        for i, m in asked:
            dest = secure_join(real, m.get("destination") or "/")[len(real):] or "/"
            if not any(dest == p or dest.startswith(p + "/") for _top, p in sealed):
                continue
            opt = next((o for o in reversed(m["options"]) if o in mountopts.PROPAGATION), None)  # the last wins
            if opt in _KEEPS_HOST_EVENTS:
                raise RuneError(f"config.json mounts[{i}]: the {opt} propagation of {m.get('destination')} would "
                                f"let a mount made on the host after the launch check reach trusted files of the "
                                f"signed sim enclave; drop the option or mount it where no trusted file is")
            if opt in _UNBINDABLE:
                unbind.append((dest, opt))
    subtrees = {top.id: subtree for top, subtree in mounts}
    for top, path in sealed:
        if any(m.propagates for m in subtrees[top.id]):
            _remount(rootfs, path, syscalls.MS_PRIVATE | syscalls.MS_REC, top.id)
    for dest, opt in unbind:
        _remount(rootfs, dest, mountopts.PROPAGATION[opt])
    return table


def _holder(enclave, config: dict):  # noqa: ANN001, ANN202 - EnclaveConfig; Callable[[str], bool]
    """holds(path): the mount point `path` (inside the rootfs) holds a trusted path (seal_mounts' rule)."""
    files, links = enclave.trusted_files, enclave.symlinks
    roots = {r.rstrip("/") or "/" for r in enclave.trusted_roots}
    above: set[str] = set()
    for d in {p.rpartition("/")[0] for p in (*files, *links, *roots)}:
        while d and d not in above:
            above.add(d)
            d = d.rpartition("/")[0]
    skip = {os.path.normpath(p) for p in enclave.untrusted_paths}
    skip |= {os.path.normpath(m.get("destination") or "/") for m in config.get("mounts") or () if isinstance(m, dict)}

    from inclavare.tee.sim.image import _under_set as under  # a look-up per ancestor

    def holds(path: str) -> bool:
        return path in files or path in links or path in roots or path in above or (
            under(path, roots) and not under(path, skip))

    return holds


def _remount(rootfs: str, path: str, flags: int, mnt_id: int | None = None) -> None:
    """Change the propagation of the mount on `path` (inside the rootfs) to `flags`, through an O_PATH fd of its
    mount point reached without following a symlink; with `mnt_id`, only if that fd is on the mount the table
    showed (seal_mounts: MS_PRIVATE|MS_REC), else it is an unbindable one made so again."""
    from inclavare.linux import syscalls
    from inclavare.runtime.rootfs import Target

    what = "private, which holds trusted files" if mnt_id is not None else \
        "unbindable again after the launch check made it private"
    try:
        t = Target(rootfs, rootfs + path)
        try:
            if mnt_id is not None:
                with open(f"/proc/self/fdinfo/{t.fd}", "rb") as f:
                    info = f.read()
                have = next((line.split()[1] for line in info.split(b"\n") if line.startswith(b"mnt_id:")), b"")
                if have != str(mnt_id).encode():
                    raise RuneError(f"sim enclave: the mount on {path} in the container changed while the launch "
                                    f"check made it private (another mount reached it); create the container again")
            syscalls.mount(None, t.proc, None, flags)
        finally:
            t.close()
    except OSError as e:
        raise RuneError(f"sim enclave: cannot make the mount on {path} in the container {what}: {e.strerror}") \
            from None


def sealed_image(rootfs: str, config: dict, sim_dir: str | None = None,  # noqa: ANN001
                 prepared: Prepared | None = None) -> tuple:
    """seal_root, the signed image read through it (or the early launch child's, Prepared, when the sealed root
    names the same files), then seal_mounts: what the launch check then reads is what the container gets. Returns
    the signed image (read_signed_image), the mount table seal_mounts read, and the measurement cache Prepared
    opened (None: the launch opens it)."""
    from inclavare.tee.sim.launch import read_signed_image

    seal_root(rootfs)  # first: what is read and measured is what the container gets
    signed, cache = prepared.take(rootfs, sim_dir) if prepared is not None else (None, None)
    if signed is None:
        signed = read_signed_image(rootfs)
    return signed, seal_mounts(rootfs, config, signed[0]), cache


class Launcher:
    """The launch child, and the end it answers on: its JSON result, read until end of file.

    `early` forks it in the runelet's prepare_host, before the container's namespaces, where the init is PID 1 of
    a new PID namespace and has no user namespace (prepare_host runs in the init itself, and a child that outlives
    a failed init dies and is reaped with its PID namespace): it imports the launch check (3 ms) while the runelet
    enters its namespaces and mounts the rootfs, then waits on a socket. `go` sends the request, at load, with the
    runelet's root and working directory (O_PATH fds, SCM_RIGHTS): the child checks that its parent is still the
    runelet, joins its mount namespace (setns through a pidfd, which moves the child to that namespace's root),
    then takes the runelet's root and working directory again (fchdir, chroot: a rune run under chroot, relative
    paths) and checks, as a child forked then would: the same parent, cgroup, credentials, PID namespace and view
    of the files; only its network, UTS and IPC namespaces stay the host's, which the check never uses. It dies
    with the runelet (PR_SET_PDEATHSIG) and exits at end of file when the runelet gives up before its load.
    `fork` forks one with the request in hand (elsewhere, or the early one's fallback)."""

    def __init__(self, pid: int, out: int, sock=None) -> None:  # noqa: ANN001 - _socket.socket
        self.pid = pid
        self.out = out
        self.sock = sock

    @classmethod
    def early(cls, bundle, rootfs: str | None = None, sim_dir: str | None = None) -> Launcher | None:  # noqa: ANN001
        """The early launch child; `rootfs` and `sim_dir`, when known, the ones the load will ask it to check: it
        reads their signed image and measurement cache while it waits (Prepared)."""
        import _socket

        try:
            mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        except OSError:
            return None
        launcher = cls._start(bundle, None, theirs, mine, (rootfs, sim_dir))
        theirs.close()
        if launcher is None:
            mine.close()
            return None
        launcher.sock, launcher.out = mine, mine.fileno()
        return launcher

    @classmethod
    def fork(cls, bundle, request: tuple, host: HostSide | None = None) -> Launcher:  # noqa: ANN001
        return cls._start(bundle, request, None, host=host)

    @classmethod
    def _start(cls, bundle, request: tuple | None, sock, other=None,  # noqa: ANN001, ANN206 - Launcher | None
               hint: tuple = (None, None), host: HostSide | None = None):
        parent = os.getpid()
        out_r, out_w = os.pipe2(os.O_CLOEXEC) if sock is None else (-1, -1)
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (out_r, out_w):
                if fd >= 0:
                    os.close(fd)
            if request is None:
                return None  # the early one: the load forks again
            raise RuneError(f"sim enclave: the launch child cannot be forked: {e.strerror} (the container's "
                            f"pids limit?)") from None
        if pid == 0:  # everything heavy happens here and goes with it
            if out_r >= 0:
                os.close(out_r)
            if other is not None:
                other.close()  # the runelet's end
            _launch_child(parent, sock, out_w, bundle, request, hint, host)  # never returns
        if out_w >= 0:
            os.close(out_w)
        return cls(pid, out_r)

    def go(self, rootfs: str, config: dict, sim_dir: str | None) -> bool:
        """Send the early child its request; False if it is gone (a fork does the check instead)."""
        import _socket
        import struct

        from inclavare.oci import jsonlite

        data = jsonlite.dumps({"rootfs": rootfs, "config": config, "sim_dir": sim_dir}).encode()
        fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in ("/", ".")]
        try:
            sent = self.sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("2i", *fds))])
            self.sock.sendall(data[sent:])
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:  # it ended (its reason, if it wrote one, is dropped: the check runs again in a fork)
            self.result()
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            return False
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def result(self) -> dict:
        from inclavare.oci import jsonlite

        chunks = []
        while True:
            chunk = os.read(self.out, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.out)
        self.out = -1
        try:
            out = jsonlite.loads(b"".join(chunks)) if chunks else None
        except ValueError:
            out = None
        return out if isinstance(out, dict) else {"error": "sim enclave: the launch check died"}


def _request(sock) -> tuple[bytes, list[int]]:  # noqa: ANN001 - _socket.socket
    """The early launch child's request and the fds that came with it (close-on-exec), read until end of file."""
    import _socket
    import struct

    data, fds = b"", []
    while True:
        chunk, anc, _flags, _addr = sock.recvmsg(1 << 16, _socket.CMSG_SPACE(8), 0x40000000)  # MSG_CMSG_CLOEXEC
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
        if not chunk:
            return data, fds
        data += chunk


def _launch_child(parent: int, sock, out: int, bundle, request: tuple | None,  # noqa: ANN001
                  hint: tuple = (None, None), host: HostSide | None = None) -> None:
    """The launch child's body (see Launcher; `hint`: the early one's (rootfs, sim_dir), see Prepared; `host`:
    HostSide, for a launch in a user namespace); never returns."""
    import gc

    from inclavare.oci import jsonlite

    # a short-lived process that ends by _exit and makes no reference cycles worth collecting: the collector would
    # only walk a large manifest's thousands of objects again and again (about 4 ms of a 100 MB image's launch)
    gc.disable()
    try:
        if request is None:
            from inclavare.linux import syscalls

            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, 9)
            # everything the launch uses, imported while it waits: it is forked before the runelet's own imports
            from inclavare.linux import mountinfo, mountopts, securejoin  # noqa: F401
            from inclavare.tee.sim import (  # noqa: F401
                envpolicy,
                ereport,
                evidence,
                identity,
                image,
                launch,
                measure_cache,
                platform,
            )

            measure_cache.host_mounts()  # here, in the host's mount namespace (its mounts' ids: the keys')
            try:
                prepared = Prepared(*hint) if hint[0] else None
            except Exception:  # noqa: BLE001 - only a head start: the launch reads everything itself then
                prepared = None
            data, fds = _request(sock)
            if not data or len(fds) != 2 or os.getppid() != parent:
                os._exit(0)  # the runelet gave up, or died, before its load
            req = jsonlite.loads(data)
            try:
                pidfd = os.pidfd_open(parent)
                try:
                    syscalls.setns(pidfd, syscalls.CLONE_NEWNS)
                finally:
                    os.close(pidfd)
            except (OSError, AttributeError) as e:  # a kernel before 5.8 has no setns through a pidfd
                result = {"fallback": f"the launch child cannot join the runelet's mount namespace ({e})"}
            else:
                os.fchdir(fds[0])  # the runelet's root (a rune under chroot), then its working directory
                os.chroot(".")
                os.fchdir(fds[1])
                result = _launch(req["rootfs"], req["config"], req["sim_dir"], bundle, prepared)
            for fd in fds:
                os.close(fd)
        else:
            result = _launch(*request, bundle, None, host)
    except RuneError as e:
        result = {"error": str(e)}
    except BaseException as e:  # noqa: BLE001
        result = {"error": f"sim enclave launch failed: {type(e).__name__}: {e}"}
    data = jsonlite.dumps(result).encode()
    try:
        if sock is not None:
            sock.sendall(data)
            sock.close()
        else:
            while data:
                data = data[os.write(out, data):]
            os.close(out)  # end of file for the runelet now, not once the kernel has freed this process's memory
    except OSError:
        pass
    os._exit(0)


class Prepared:
    """What the early launch child reads while it waits for its request (see Launcher): the signed image (manifest
    parsed, a large image's thousands of entries) and the host's measurement cache of it, loaded. Used at the
    launch only for the very files the sealed root then names: the manifest's and SIGSTRUCT's identity (device,
    inode, change time, size, mtime: what the measurement cache trusts) the same before and after this read and
    again through the sealed root; any difference, and the launch reads them again."""

    def __init__(self, rootfs: str, sim_dir: str | None) -> None:
        from inclavare.tee.sim.launch import read_signed_image
        from inclavare.tee.sim.measure_cache import open_cache

        self.rootfs, self.sim_dir = rootfs, sim_dir
        self.signed = self.cache = None
        before = _signed_identity(rootfs)
        if before is None:
            return
        try:
            signed = read_signed_image(rootfs)
        except RuneError:
            return  # the launch says why, reading them itself
        if _signed_identity(rootfs) != before:
            return
        self.identity, self.signed = before, signed
        self.cache = open_cache(sim_dir)
        self.cache.select(signed[2].hex())
        self.cache.mr_enclave()  # loads it

    def take(self, rootfs: str, sim_dir: str | None) -> tuple:
        """(signed, cache) for a launch of `rootfs` through the sealed root, or (None, None) when they may differ."""
        if self.signed is None or (rootfs, sim_dir) != (self.rootfs, self.sim_dir) or \
                _signed_identity(rootfs) != self.identity:
            return None, None
        return self.signed, self.cache


def _signed_identity(rootfs: str) -> tuple | None:
    """(st_dev, st_ino, st_ctime_ns, st_size, st_mtime_ns) of the signed image's manifest and SIGSTRUCT."""
    from inclavare.tee.sim.launch import signed_files

    out = []
    try:
        for path in signed_files(rootfs):  # as read_signed_image finds them
            st = os.stat(path, follow_symlinks=False)
            out.append((st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns))
    except (OSError, RuneError):
        return None
    return tuple(out)


def _launch(rootfs: str, config: dict, sim_dir: str | None, bundle=None,  # noqa: ANN001
            prepared: Prepared | None = None, host: HostSide | None = None) -> dict:
    """In the launch child: seal the container's root, check through it, and hand back what the runelet keeps.
    `host`: the platform directory's part, read before a user namespace (HostSide)."""
    from inclavare.tee.sim import evidence
    from inclavare.tee.sim.platform import load_keys

    if host is not None:
        prepared = host.prepared
    signed, table, cache = sealed_image(rootfs, config, sim_dir, prepared)
    launched = verify_image(rootfs, sim_dir, config, signed, bundle, table, cache, host)
    ev = evidence.make(host.keys if host is not None else load_keys(sim_dir), launched.identity)
    return {"env": config["process"]["env"], "env_defaults": launched.config.env,
            "untrusted_env": list(launched.config.untrusted_env), "trusted": list(launched.config.trusted_files),
            "evidence": ev.to_json()}


class HostSide:
    """What a launch in a user namespace needs of the sim platform directory, read by the runelet's prepare_host in
    the host's namespaces, as the host's root: inside the user namespace the container's root is not the host's,
    and the directory (0700, its files 0600) is out of its reach. The launch policy (launch-policy.json, so that
    an unreadable one is never the default policy), the platform's keys for the evidence (`keys`: the built-in
    runtime only; a PAL makes its own), and the signed image with its measurement cache, read from the host path of
    the rootfs (Prepared, used only if the sealed root then names the very same files). The files are read and
    closed here: no fd of the directory goes on into the container's namespaces. The first use of a platform
    creates its identity with `cryptography` in a child (host_keys), not in what becomes PID 1.

    What the launch adds to the measurement cache cannot be written back from the user namespace: it goes to
    `out`, a file PENDING of the container's state directory (root-only, out of the container's reach) opened
    here, which `rune create` merges into the cache once the container is created (merge_pending: digests only,
    never a manifest measurement). Only rune's own code ever holds `out`: the runelet closes it once the launch
    child is forked, or, with a PAL, right after its own check and before the library is loaded (a review: a PAL's
    constructor, run as the container's root, rewrote it); the launch child, which writes it, has ended before
    pivot_root."""

    def __init__(self, rootfs: str, sim_dir: str | None, keys: bool, state_dir: str) -> None:
        from inclavare.tee.sim.launch import LaunchPolicy
        from inclavare.tee.sim.measure_cache import host_mounts

        self.out = -1
        host_mounts()  # in the host's mount namespace, for the launch child forked later (the keys' mount ids)
        self.policy = LaunchPolicy.for_host(sim_dir)
        self.keys = host_keys(sim_dir) if keys else None
        try:
            self.prepared: Prepared | None = Prepared(rootfs, sim_dir)
        except Exception:  # noqa: BLE001 - only a head start: the launch reads the image itself, uncached
            self.prepared = None
        cache = self.prepared.cache if self.prepared is not None else None
        if cache is not None and cache.path is not None:
            try:
                self.out = cache.out = os.open(os.path.join(state_dir, PENDING), os.O_WRONLY | os.O_CREAT |
                                               os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                pass  # not written back then

    def close(self) -> None:
        if self.out >= 0:
            os.close(self.out)
            self.out = -1
        self.prepared = self.keys = None


PENDING = "measurements.pending"  # in the state directory: HostSide


def merge_pending(state_dir: str, sim_dir: str | None) -> None:
    """In `rune create`, on the host, once the container is created: what a launch in a user namespace added to
    the measurement cache (HostSide) merged into it."""
    path = os.path.join(state_dir, PENDING)
    if not os.path.exists(path):
        return
    from inclavare.enclave import epm_client
    from inclavare.tee.sim.measure_cache import merge

    n = merge(path, sim_dir)
    epm_client.debug(f"sim launch in a user namespace: {n} digests merged into the host's measurement cache")


def host_keys(sim_dir: str | None):  # noqa: ANN201 - inclavare.tee.sim.platform.PlatformKeys
    """load_keys(sim_dir), its first use on the platform (which creates the identity and the quote template with
    `cryptography`) made in a short-lived child, so that the process that becomes the runelet never imports it."""
    from inclavare.tee.sim.platform import TEMPLATE, load_keys, platform_path

    if not os.path.exists(os.path.join(platform_path(sim_dir), TEMPLATE)):
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            raise RuneError(f"sim enclave: cannot fork to create the sim platform identity: {e.strerror}") from None
        if pid == 0:
            msg = b""
            try:
                os.close(r)
                load_keys(sim_dir)
            except RuneError as e:
                msg = str(e).encode(errors="replace")
            except BaseException as e:  # noqa: BLE001
                msg = f"sim enclave: the sim platform identity cannot be created: {type(e).__name__}: {e}".encode(
                    errors="replace")
            try:
                while msg:
                    msg = msg[os.write(w, msg):]
            finally:
                os._exit(0)
        os.close(w)
        chunks = []
        try:
            while chunk := os.read(r, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        if chunks:
            raise RuneError(b"".join(chunks).decode(errors="replace"))
    return load_keys(sim_dir)
