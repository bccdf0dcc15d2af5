"""The init-runelet: PID 1 of an enclave container. It never execs; it hosts the enclave runtime (a PAL) and runs
the container's process, and every `rune exec`, through it.

It plugs into the runtime's init at four points (runtime/init.py, Launch):
  pre_namespaces  `prepare_host`: in the host's namespaces, before the init enters the container's: import
             everything needed later and bind the agent socket in the state dir (a user namespace's root may reach
             neither Python's files nor --root, and the package's files are out of reach after pivot_root), and,
             for a signed sim image in a user namespace, read the sim platform directory (sim_runtime.HostSide);
  pre_pivot  `load`:  in the container's namespaces, mounts done, before pivot_root: load the PAL from its host path
             (dlopen, or the built-in sim runtime's launch check), then provision the secrets the container asks
             for (enclave/provision.py);
  pre_ready  `init`:  after pivot_root and the process's credentials, before create reports ready: pal_init
             (its failure fails `create`);
  executor   `__call__`: at start: pal_create_process + pal_exec (v2/v3) or pal_exec (v1) of the container's process
             with the runelet's stdio; every signal the runelet gets goes to that process as pal_kill(pid, sig)
             (not -1: the original's -1 broke Occlum); agent requests are served; when the process ends:
             pal_destroy, and its exit status becomes the container's.
With PAL v1 (no pal_kill) a signal goes to the payload's processes with kill(-1) when the runtime runs the payload as
processes (the reference PAL does); when it runs inside the runelet, a signal whose default action ends a process ends
the runelet, and with it the container.
"""

from __future__ import annotations

import os
import sys

from inclavare.enclave.config import SIM, EnclaveConfig, user_namespace
from inclavare.errors import RuneError

_NOT_FORWARDED = (9, 17, 19, 13)  # SIGKILL, SIGCHLD (reaping), SIGSTOP, SIGPIPE (the runelet's own broken pipes)
_TERMINATING = (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 14, 15, 24, 25, 26, 27, 29, 30, 31)


def log(msg: str) -> None:
    try:
        os.write(2, f"rune: {msg}\n".encode(errors="replace"))
    except OSError:
        pass


class Runelet:
    def __init__(self, cfg: EnclaveConfig, state_dir: str, config: dict, sim_dir: str | None,
                 signed: bool = True) -> None:
        self.cfg = cfg
        self.signed = signed  # a signed sim image in the rootfs: a PAL of type sim runs the launch check too
        self.state_dir = state_dir
        self.config = config
        self.sim_dir = sim_dir
        self.pal = None
        self.listener = None
        self.running = False
        self.pids: set[int] = set()
        self.lock = None  # a _thread lock, made in load
        self.rootfs: str | None = None  # the container's rootfs (host path), set by enclave/create.py
        self.epm = None  # epm_client.Session, when epm serves: bundle caches and pre-initialised enclaves
        self.bundle = None  # bundle_cache.Lookup: epm's bundle cache for a signed sim image, when epm serves
        self.launcher = None  # sim_runtime.Launcher: the built-in sim runtime's launch child, forked early
        self.host = None  # sim_runtime.HostSide: the sim platform directory's part, read before a user namespace

    # --- pre_namespaces: in the host's namespaces, before the init enters the container's --------------------
    def prepare_host(self) -> None:
        """Import what runs later and listen on the agent socket in the state dir: a user namespace's root may reach
        neither Python's files nor --root."""
        from inclavare.enclave import sim_runtime

        userns = user_namespace(self.config)
        sim_signed = self.cfg.type == SIM and self.signed and self.rootfs is not None
        if sim_signed or self.cfg.runtime_path:
            from inclavare.enclave import epm_client

            # here, where epm's socket is reachable: the connection serves the launch (and its child) later
            self.epm = epm_client.connect()
        if self.epm is not None and sim_signed:
            from inclavare.enclave import bundle_cache

            self.bundle = bundle_cache.lookup(self.epm, self.rootfs, self.cfg.type, self.cfg.runtime_path)
        if self.cfg.type == SIM and not self.cfg.runtime_path and not userns and os.getpid() == 1:
            # the launch child, forked first (before the runelet's own imports and the agent's socket), when this
            # init is PID 1 of a new PID namespace: it imports the launch check and reads the signed image while
            # this process makes its imports, enters the container's namespaces and mounts its rootfs
            # (sim_runtime.Launcher): the launch child's head start is what a signed sim launch waits for
            self.launcher = sim_runtime.Launcher.early(self.bundle, self.rootfs, self.sim_dir)

        import _signal  # noqa: F401 - not `signal`, whose enum classes cost PID 1 more than the rest of its imports
        import _socket  # noqa: F401
        import fcntl  # noqa: F401
        import select  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401

        from inclavare.enclave import agent, provision  # noqa: F401
        from inclavare.linux import console, proctitle, syscalls  # noqa: F401

        if self.cfg.runtime_path:
            from inclavare.enclave import pal  # noqa: F401 - the built-in sim runtime does not need it

        if self.cfg.type == SIM and (not self.cfg.runtime_path or self.signed):  # a PAL's unsigned image: none
            sim_runtime.preimport(check=bool(self.cfg.runtime_path) or userns)
            if self.cfg.runtime_path and self.signed:  # PID 1 checks: the host's mount ids, for the cache's keys
                from inclavare.tee.sim import measure_cache

                measure_cache.host_mounts()
            if userns and self.signed and self.rootfs is not None:
                # the platform directory is root-only: in the user namespace the container's root cannot read it
                self.host = sim_runtime.HostSide(self.rootfs, self.sim_dir, not self.cfg.runtime_path,
                                                 self.state_dir)
        self.listener = agent.listen(self.state_dir)

    # --- pre_pivot -------------------------------------------------------------------------------------------
    def load(self, ctx) -> None:  # noqa: ANN001 - runtime.init.Launch
        import _thread  # not threading: its import (functools, collections) costs PID 1 more than what it runs

        from inclavare.linux import proctitle, syscalls

        # PID 1 for the container's life, never exec'd: non-dumpable whatever the PAL (no ptrace, no /proc/1/mem,
        # environ, fd/ or exe for the container), and nothing of the host in the command line or environment it shows
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        try:
            proctitle.set_cmdline(["init-runelet"])
        except OSError as e:
            log(f"cannot hide the host's command line from the container: {e.strerror}")
        self.lock = _thread.allocate_lock()
        from inclavare.enclave import provision

        secrets = provision.read(self.config)  # ENCLAVE_SECRETS*, read before the launch check drops ENCLAVE_* env
        host, self.host = self.host, None  # what prepare_host read of the sim platform directory (a user namespace)
        try:
            if self.cfg.runtime_path:
                from inclavare.enclave import pal

                if self.cfg.type == SIM:
                    from inclavare.enclave import sim_runtime

                    if sim_runtime.is_signed(ctx.rootfs, self.config):
                        if host is None and user_namespace(self.config):
                            raise RuneError("sim enclave: the image is signed as the container sees its root, not on "
                                            "the host path of config.json root.path, and a user namespace cannot "
                                            "read the host's launch policy; sign the rootfs itself")
                        # checked through the root and mounts the container gets
                        prepared = host.prepared if host is not None else None
                        signed, table, cache = sim_runtime.sealed_image(ctx.rootfs, self.config, self.sim_dir,
                                                                        prepared)
                        sim_runtime.verify_image(ctx.rootfs, self.sim_dir, self.config, signed, self.bundle, table,
                                                 cache, host)
                        del prepared, signed, table, cache
                if host is not None:
                    host.close()  # before the PAL's own code runs (dlopen): it must not reach the pending cache file
                self.pal = pal.load(self.cfg.runtime_path)
                if self.epm is not None and self.pal.version >= 3:
                    from inclavare.enclave import enclave_pool

                    self.pal.enclave = enclave_pool.take(self.epm, self.cfg.runtime_path) or (-1, 0)
            else:
                from inclavare.enclave import sim_runtime

                self.pal = sim_runtime.SimPal(ctx.rootfs, self.config, self.sim_dir)
                self.pal.bundle = self.bundle
                self.pal.launcher, self.launcher = self.launcher, None
                self.pal.host = host
                self.pal.load()
        finally:
            if host is not None:
                host.close()  # before pivot_root: no fd of it reaches the container's processes
            del host
            self.bundle = None
            if self.epm is not None:
                self.epm.close()  # epm's connection never reaches the container's processes
                self.epm = None
        provision.provide(secrets, self.config, ctx.rootfs, self.pal)  # attest to verdictd, mount the secrets

    # --- pre_ready -------------------------------------------------------------------------------------------
    def init(self, ctx) -> None:  # noqa: ANN001
        self.pal.init(self.cfg.runtime_args, self.cfg.loglevel)
        from inclavare.linux import syscalls

        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)  # again: pal_init runs the enclave runtime's own code

    # --- executor --------------------------------------------------------------------------------------------
    def __call__(self, ctx, path: str, args: list[str], env: dict[str, str]) -> None:  # noqa: ANN001
        import _signal
        import _socket
        import _thread
        import select

        pal = self.pal
        env_list = [f"{k}={v}" for k, v in env.items()]
        release_terminal()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        done_r, done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(wake_w)
        for s in _signal.valid_signals():
            if s not in (9, 19):
                try:
                    _signal.signal(s, _noop)
                except (OSError, ValueError):
                    pass
        result = {"code": 1}
        pid = 0
        reaps = getattr(pal, "reaps", False)  # the built-in sim runtime: no thread waits, this loop reaps
        if pal.version >= 2:
            with self.lock:
                try:
                    pid = pal.create_process(path, args, env_list, (0, 1, 2))  # its RuneError fails start / run
                except RuneError as e:
                    if "(errno 2)" in str(e) and not os.path.exists(path):
                        # as a plain container's missing program: the path named, exit status 127
                        log(f'exec: "{args[0]}": no such file or directory in the container ({e})')
                        os._exit(127)
                    raise
                self.pids.add(pid)

            def wait() -> None:
                try:
                    result["code"] = pal.exec(pid)
                except RuneError as e:
                    log(str(e))
                os.write(done_w, b"x")
        else:
            def wait() -> None:
                try:
                    result["code"] = pal.exec_v1(path, args, (0, 1, 2))
                except RuneError as e:
                    log(str(e))
                os.write(done_w, b"x")

        if not reaps:
            _thread.start_new_thread(wait, ())
        self.running = True
        ctx.sock.close()  # tells `run` that the process started
        listener = self.listener
        while True:
            try:
                ready, _, _ = select.select([wake_r, listener, done_r], [], [])
            except InterruptedError:
                continue
            if done_r in ready:
                break
            if wake_r in ready:
                try:
                    sigs = os.read(wake_r, 512)
                except BlockingIOError:
                    sigs = b""
                for sig in sigs:
                    if sig == 17 and reaps:
                        pal.reap()
                        code = pal.collect(pid)
                        if code is not None:
                            result["code"] = code
                            os.write(done_w, b"x")
                    elif sig == 17:
                        self._reap_orphans()
                    elif sig not in _NOT_FORWARDED:
                        self._forward(pid, sig)
            if listener in ready:
                try:
                    fd, _ = listener._accept()  # _socket: the `socket` module costs PID 1 an import of enum
                except OSError:
                    continue
                conn = _socket.socket(fileno=fd)
                _thread.start_new_thread(self._serve, (conn,))
        self.running = False
        listener.close()
        try:
            pal.destroy()
        except RuneError as e:
            log(str(e))
        sys.stdout.flush()
        os._exit(result["code"] & 0xFF)

    def _forward(self, pid: int, sig: int) -> None:
        if self.pal.version < 2:
            # PAL v1 has no pal_kill: a runtime that runs its payload as processes (ours are our children) gets the
            # signal through kill(-1), which from PID 1 reaches every other process of the container, so that a
            # payload that handles it is not killed; a runtime that runs it inside the runelet cannot be told
            if _has_children():
                try:
                    os.kill(-1, sig)
                except ProcessLookupError:
                    pass
            elif sig in _TERMINATING:
                os._exit(128 + sig)  # the pid namespace ends with its init: the payload goes too
            return
        try:
            self.pal.kill(pid, sig)
        except RuneError as e:
            log(str(e))

    def _reap_orphans(self) -> None:
        """Reap zombies that are ours but not the PAL's (orphans re-parented to PID 1); the PAL waits for its own."""
        if self.pal.version < 2:
            return  # a v1 PAL's processes have pids we never learn
        me = str(os.getpid())
        with self.lock:
            try:
                entries = os.listdir("/proc")
            except OSError:
                return
            for name in entries:
                if not name.isdigit() or int(name) in self.pids:
                    continue
                try:
                    with open(f"/proc/{name}/stat") as f:
                        fields = f.read().rpartition(")")[2].split()
                except OSError:
                    continue
                if len(fields) > 1 and fields[0] == "Z" and fields[1] == me:
                    try:
                        os.waitpid(int(name), os.WNOHANG)
                    except ChildProcessError:
                        pass

    # --- agent -----------------------------------------------------------------------------------------------
    def _serve(self, conn) -> None:  # noqa: ANN001 - socket.socket
        from inclavare.enclave import agent

        fds: list[int] = []
        try:
            req, fds = agent.recv_msg(conn)
            if req is None:
                return
            kind = req.get("type")
            if kind == "exec":
                owned, fds = fds, []
                self._exec(conn, req, owned)
            elif kind == "attest":
                report = self.pal.get_local_report(bytes.fromhex(req.get("target_info", "")),
                                                   bytes.fromhex(req.get("report_data", "")))
                agent.send_msg(conn, {"type": "report", "report": report.hex()})
            else:
                agent.send_msg(conn, {"type": "error", "msg": f"the enclave agent does not know request {kind!r}"})
        except RuneError as e:
            try:
                agent.send_msg(conn, {"type": "error", "msg": str(e)})
            except OSError:
                pass
        except Exception as e:  # noqa: BLE001 - a bad request must not take PID 1 down
            try:
                agent.send_msg(conn, {"type": "error", "msg": f"the enclave agent failed: {type(e).__name__}: {e}"})
            except OSError:
                pass
        finally:
            for fd in fds:
                os.close(fd)
            try:
                conn.shutdown(2)  # wakes the thread that reads kill requests
            except OSError:
                pass
            conn.close()

    def _exec(self, conn, req: dict, fds: list[int]) -> None:  # noqa: ANN001
        import _thread

        from inclavare.enclave import agent

        pal = self.pal
        ok = False
        master = -1
        try:
            if not self.running:
                raise RuneError("the enclave container is not started: its enclave runtime runs processes only "
                                "after 'rune start'")
            argv = req.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise RuneError("exec: argv must be a non-empty list of strings")
            env = [e for e in req.get("env") or () if isinstance(e, str)]
            if req.get("tty"):
                from inclavare.linux import console

                for fd in fds:
                    os.close(fd)
                fds = []
                master, _ = console.open_pty("/dev/ptmx")
                slave = console.open_peer(master)
                fds = [slave]
                if req.get("size"):
                    console.set_size(slave, *req["size"])
                stdio = (slave, slave, slave)
            elif len(fds) != 3:
                raise RuneError(f"exec: expected 3 stdio fds, got {len(fds)}")
            else:
                stdio = (fds[0], fds[1], fds[2])
            path = resolve(argv[0], env)
            pid = 0
            if pal.version >= 2:
                with self.lock:
                    old = os.open(".", os.O_PATH | os.O_CLOEXEC)
                    try:
                        if req.get("cwd"):
                            try:
                                os.chdir(req["cwd"])
                            except OSError as e:
                                raise RuneError(f"exec: cannot enter {req['cwd']}: {e.strerror}") from None
                            try:
                                os.getcwd()  # ENOENT: not under the container's root (a directory fd's path)
                            except FileNotFoundError:
                                raise RuneError(f"exec: {req['cwd']!r} is outside the container's root "
                                                "filesystem") from None
                        pid = pal.create_process(path, argv, env, stdio)
                        self.pids.add(pid)
                    finally:
                        os.fchdir(old)
                        os.close(old)
            ok = True
        finally:
            if pal.version >= 2 or not ok:
                for fd in fds:
                    os.close(fd)
                fds = []
                if not ok and master >= 0:
                    os.close(master)
        agent.send_msg(conn, {"type": "started", "pid": pid}, [master] if master >= 0 else ())
        if master >= 0:
            os.close(master)
        if pal.version < 2:
            try:
                code = pal.exec_v1(path, argv, stdio)  # synchronous: the fds stay open until it returns
            finally:
                for fd in fds:
                    os.close(fd)
        else:
            def kills() -> None:
                while True:
                    try:
                        msg, extra = agent.recv_msg(conn)
                    except (OSError, RuneError, ValueError):
                        return
                    for fd in extra:
                        os.close(fd)
                    if msg is None:
                        return
                    if msg.get("type") == "kill" and isinstance(msg.get("sig"), int):
                        try:
                            pal.kill(pid, msg["sig"])
                        except RuneError as e:
                            log(str(e))

            _thread.start_new_thread(kills, ())
            try:
                code = pal.exec(pid)
            finally:
                with self.lock:
                    self.pids.discard(pid)
        agent.send_msg(conn, {"type": "exit", "code": code})


def resolve(name: str, env: list[str]) -> str:
    """argv[0] looked up in the container's PATH; passed through unchanged when not found (an enclave runtime such
    as Occlum resolves it inside its own image)."""
    if "/" in name:
        return name
    path = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for d in path.split(":"):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return name


def _noop(_sig: int, _frame: object) -> None:
    pass


def release_terminal() -> None:
    """Give up the controlling terminal (rune's init took the container's pty as it), so that the payload, which
    starts a session of its own, can take it: job control, and Ctrl-C and window changes sent by the terminal to the
    payload's foreground process group. TIOCNOTTY sends the session SIGHUP, ignored here."""
    if not os.isatty(0):
        return
    import _signal
    import fcntl
    import termios

    old = _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    try:
        fcntl.ioctl(0, termios.TIOCNOTTY)
    except OSError:
        pass  # not our controlling terminal
    finally:
        _signal.signal(_signal.SIGHUP, old)


def _has_children() -> bool:
    try:
        for t in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{t}/children") as f:
                if f.read().strip():
                    return True
    except OSError:
        pass
    return False
