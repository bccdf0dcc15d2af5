"""`sim`, the built-in enclave runtime: a Python PAL over the software TEE of inclavare.tee.sim. SIMULATED: it gives
SGX's rules and formats with software protection only.

Call order, as the init-runelet drives any PAL:
  load (before pivot_root, privileged; the moment the original dlopens a PAL): the launch check - EINIT's rules,
      inclavare.tee.sim.launch_check over the rootfs as the container will see it (its mounts done) - refusing a
      tampered or unsigned image with the TEE library's sentence; then every verified file (entry, trusted files,
      the signed manifest and SIGSTRUCT) is bind-mounted read-only onto itself, and /dev/attestation gets its tmpfs.
      These need privileges the container's process drops, so they come before pivot_root and the credentials.
  pal_init (after pivot_root, as the container's user): the runelet, which holds the platform keys, becomes
      non-dumpable (no ptrace or /proc/PID/mem by the same user, no core) with RLIMIT_CORE 0, and its memory is
      locked (mlockall MCL_CURRENT) when the container may (CAP_IPC_LOCK or RLIMIT_MEMLOCK); /dev/attestation is
      served (see attestation_dev).
  pal_create_process / pal_exec / pal_kill: native processes, with RLIMIT_CORE 0 (inherited) and PR_SET_DUMPABLE 0
      set before execve - which the kernel resets at execve of a readable binary, so the payload itself is protected
      from core dumps but not from ptrace by the same user: software cannot give it more.
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


def verify_image(rootfs: str, sim_dir: str | None, config: dict | None = None):  # noqa: ANN201 - LaunchedEnclave
    """The launch check; with the bundle `config`, also its process against the manifest (entry point, arguments,
    environment), whose process.env becomes the environment the payload gets."""
    from inclavare.tee.sim.launch import LaunchPolicy, check_process, launch_check

    mounts = tuple(m.get("destination", "") for m in (config or {}).get("mounts") or () if isinstance(m, dict))
    launched = launch_check(rootfs, policy=LaunchPolicy.for_host(sim_dir), sim_dir=sim_dir, mounts=mounts)
    if config is not None:
        process = config.setdefault("process", {})
        process["env"] = check_process(launched.config, process, rootfs)
    return launched


class SimPal:
    name = "the built-in sim enclave runtime"
    version = 3

    def __init__(self, rootfs: str, config: dict, sim_dir: str | None) -> None:
        self.rootfs = rootfs
        self.config = config
        self.sim_dir = sim_dir
        self.launched = None
        self.platform = None
        self.dev = None
        self.procs: set[int] = set()
        self.measured: frozenset[str] | None = None  # real paths of the measured files, seen after pivot_root

    # before pivot_root
    def load(self) -> None:
        import fcntl  # noqa: F401
        import resource  # noqa: F401
        import threading  # noqa: F401

        from inclavare.linux import syscalls
        from inclavare.tee.sgx.report import TargetInfo  # noqa: F401
        from inclavare.tee.sim import ereport, qe
        from inclavare.tee.sim.image import MANIFEST, SIGSTRUCT, enclave_dir, resolve_in_rootfs
        from inclavare.tee.sim.platform import load_platform

        self.launched = verify_image(self.rootfs, self.sim_dir, self.config)
        self.platform = load_platform(self.sim_dir)
        ident = self.launched.identity
        # everything the enclave's services use after pivot_root, exercised once now (lazy imports included)
        qe.gen_quote(self.platform, ereport.ereport(self.platform, ident, qe.qe_target_info(), b""))
        ereport.seal_key(self.platform, ident, "mrenclave")
        cfg = self.launched.config
        files = list(cfg.trusted_files)
        hosts = [str(resolve_in_rootfs(self.rootfs, p)) for p in files]
        hosts += [str(enclave_dir(self.rootfs) / MANIFEST), str(enclave_dir(self.rootfs) / SIGSTRUCT)]
        for h in dict.fromkeys(hosts):
            try:
                syscalls.mount(h, h, None, syscalls.MS_BIND)
                syscalls.mount(None, h, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
            except OSError as e:
                raise RuneError(f"sim enclave: cannot mount the verified file {h} read-only: {e.strerror}") from None
        # measured, then mounted: a file swapped in between is what the read-only mounts now hold; measure those
        again = verify_image(self.rootfs, self.sim_dir, dict(self.config, process=dict(self.config.get("process") or {})))
        if again.mr_enclave != self.launched.mr_enclave:
            raise RuneError("sim enclave: the verified files changed while they were being mounted read-only")
        dev = [m for m in self.config.get("mounts") or () if m.get("destination") == "/dev"]
        if dev and dev[-1].get("type") == "tmpfs":  # never write into a host /dev bound into the container
            from inclavare.enclave.attestation_dev import AttestationDev

            user = (self.config.get("process") or {}).get("user") or {}
            self.dev = AttestationDev(self.rootfs, user.get("uid", 0), user.get("gid", 0))
            self.dev.mount()
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.mlockall(1)  # MCL_CURRENT: the platform keys stay out of swap; fails quietly without the right
        except OSError:
            pass

    # after pivot_root: the six PAL operations
    def init(self, args: str, log_level: str) -> None:
        import resource

        from inclavare.linux import syscalls

        if self.launched is None:
            raise RuneError("sim enclave: pal_init before the enclave was loaded")
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cfg = self.launched.config
        self.measured = frozenset(os.path.realpath(p) for p in cfg.trusted_files)
        if self.dev is not None:
            from inclavare.tee.sgx.report import TargetInfo
            from inclavare.tee.sim import ereport, qe

            platform, ident = self.platform, self.launched.identity

            def report(report_data: bytes, target_info: bytes) -> bytes:
                return ereport.ereport(platform, ident, TargetInfo.from_bytes(target_info, strict=False),
                                       report_data).to_bytes()

            def quote(report_data: bytes) -> bytes:
                return qe.gen_quote(platform, ereport.ereport(platform, ident, qe.qe_target_info(), report_data))

            keys = {"_sgx_mrenclave": ereport.seal_key(platform, ident, "mrenclave"),
                    "_sgx_mrsigner": ereport.seal_key(platform, ident, "mrsigner")}
            self.dev.start(report, quote, keys, ident.target_info().to_bytes())

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        import fcntl

        from inclavare.linux import syscalls

        if self.measured is not None and os.path.realpath(path) not in self.measured:
            raise RuneError(f"{self.name}: the program {path!r} is not a measured file of the signed enclave; "
                            f"sign the image with it among the trusted files")
        if self.launched is not None:  # the manifest's environment policy, for `rune exec` too
            from inclavare.tee.sim.launch import check_env

            env = check_env(self.launched.config, env, "the process's environment")
        r, w = os.pipe2(os.O_CLOEXEC)
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
                from inclavare.linux import dmz

                # through the sealed trampoline: this process's /proc/self/exe is the host's interpreter
                dmz.execve(path, argv, dict(e.partition("=")[::2] for e in env), w)
            except OSError as e:
                os.write(w, str(e.errno or 1).encode())
            except BaseException:  # noqa: BLE001
                os.write(w, b"1")
            os._exit(127)
        os.close(w)
        err = os.read(r, 16)
        os.close(r)
        if err:
            os.waitpid(pid, 0)
            n = int(err[1:] if err[:1] == b"X" else err)
            raise RuneError(f"{self.name}: pal_create_process failed: exec {path!r}: {os.strerror(n)} (errno {n})")
        self.procs.add(pid)
        return pid

    def exec(self, pid: int) -> int:
        if pid not in self.procs:
            raise RuneError(f"{self.name}: pal_exec failed: no process {pid} (errno 3)")
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                raise RuneError(f"{self.name}: pal_exec failed: process {pid} is gone (errno 10)") from None
        self.procs.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

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
        from inclavare.tee.sgx.report import TargetInfo
        from inclavare.tee.sim import ereport

        if len(target_info) != 512:
            raise RuneError(f"a TARGETINFO is 512 bytes, got {len(target_info)}")
        if len(report_data) > 64:
            raise RuneError("report_data is at most 64 bytes")
        return ereport.ereport(self.platform, self.launched.identity, TargetInfo.from_bytes(target_info, strict=False),
                               report_data).to_bytes()
