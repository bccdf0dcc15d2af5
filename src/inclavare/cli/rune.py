"""rune: an OCI runtime, a drop-in for runc, that also runs enclave containers.

Global flags come before the command, as with runc. Each command lives in its own module, imported only when
it is the one asked for: the commands engines call on every container start import the standard library only.
"""

from __future__ import annotations

import sys

from inclavare.cli import args, log
from inclavare.errors import RuneError, q

COMMANDS = {
    "create": "create", "start": "start", "run": "run", "state": "state", "kill": "kill", "delete": "delete",
    "list": "list_", "spec": "spec", "ps": "ps", "exec": "exec_", "pause": "pause", "resume": "pause",
    "update": "update", "events": "events", "features": "features", "checkpoint": "checkpoint",
    "restore": "checkpoint", "attest": "attest", "install": "install",
}  # fmt: skip
# commands that end within milliseconds: the cyclic garbage collector is off for them (a `create` made a dozen
# collections of objects that all live until exit); an init that stays Python (an enclave executor) turns it on again
SHORT = frozenset(("create", "start", "run", "state", "kill", "delete"))

USAGE = """NAME:
   rune - Open Container Initiative runtime with enclave containers

USAGE:
   rune [global options] command [command options] [arguments...]

COMMANDS:
   create      create a container
   start       executes the user defined process in a created container
   run         create and run a container
   state       output the state of a container
   kill        kill sends the specified signal (default: SIGTERM) to the container's init process
   delete      delete any resources held by the container often used with detached container
   list        lists containers started by rune with the given root
   ps          ps displays the processes running inside a container
   exec        execute new process inside the container
   pause       pause suspends all processes inside the container
   resume      resumes all processes that have been previously paused
   update      update container resource constraints
   events      display container events such as OOM notifications, cpu, memory, and IO usage statistics
   features    show the enabled features
   spec        create a new specification file
   attest      ask an enclave container for a local report or a quote
   install     add rune to containerd's configuration (rune install containerd --config PATH)
   checkpoint  checkpoint a running container (needs CRIU)
   restore     restore a container from a previous checkpoint (needs CRIU)

GLOBAL OPTIONS:
   --debug                 enable debug logging
   --log-level value       set the log level ('debug', 'info', 'warn', 'error') (default: "info")
   --log value             set the log file to write rune logs to (default is stderr)
   --log-format value      set the log format ('text' (default), or 'json')
   --root value            root directory for storage of container state (default: "/run/rune")
   --systemd-cgroup        enable systemd cgroup support
   --rootless value        ignore cgroup permission errors ('true', 'false', or 'auto') (default: "auto")
   --help, -h              show help
   --version, -v           print the version
"""


class Globals:
    root = "/run/rune"
    systemd_cgroup = False
    rootless = "auto"
    criu = "criu"


def _version() -> str:
    import platform

    from inclavare.about import location, version_text
    from inclavare.oci.spec import OCI_VERSION

    lines = [version_text("rune").split("\n")[0], f"spec: {OCI_VERSION}", f"python: {platform.python_version()}",
             f"from: {location()}"]
    try:
        from inclavare.linux.seccomp import libseccomp

        v = libseccomp.version()
        lines.append("libseccomp: " + (".".join(map(str, v)) if isinstance(v, tuple) else str(v)))
    except Exception:  # noqa: BLE001 - the version line is optional
        pass
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    g = Globals()
    i = 0
    debug_flag = False
    try:
        while i < len(argv) and argv[i].startswith("-"):
            a = argv[i]
            name, eq, val = a.lstrip("-").partition("=")
            i += 1
            if name in ("root", "log", "log-format", "log-level", "rootless", "criu"):
                if not eq:
                    if i >= len(argv):
                        raise RuneError(f"rune: flag needs an argument: {q(a)}")
                    val = argv[i]
                    i += 1
                if name == "root":
                    import os

                    g.root = os.path.abspath(val)  # the init changes directory before it uses the root
                elif name == "log":
                    log.path = val
                elif name == "log-level":
                    if not log.set_level(val):
                        raise RuneError(f"rune: --log-level: invalid log level {q(val)} (debug, info, warn or error)")
                    if debug_flag:
                        log.debug_enabled = True  # --debug wins, as with runc
                elif name == "log-format":
                    if val not in ("text", "json"):
                        raise RuneError(f"rune: --log-format: invalid log format {q(val)} (text or json)")
                    log.fmt = val
                elif name == "rootless":
                    if val not in ("true", "false", "auto"):
                        raise RuneError(f"rune: --rootless: invalid value {q(val)} (true, false or auto)")
                    g.rootless = val
                else:
                    g.criu = val
            elif name == "debug":
                log.debug_enabled = debug_flag = args.boolean(a.partition("=")[0], val) if eq else True
            elif name == "systemd-cgroup":
                g.systemd_cgroup = args.boolean(a.partition("=")[0], val) if eq else True
            elif name in ("help", "h"):
                sys.stdout.write(USAGE)
                return 0
            elif name in ("version", "v"):
                print(_version())
                return 0
            else:
                raise RuneError(f"rune: flag provided but not defined: {q(a)}")
        if i >= len(argv):
            sys.stdout.write(USAGE)
            return 0
        cmd = argv[i]
        if cmd in ("help", "h"):
            if i + 1 >= len(argv):
                sys.stdout.write(USAGE)
                return 0
            cmd = argv[i + 1]
            if cmd not in COMMANDS:
                raise RuneError(f"rune help: no such command {ascii(cmd)} (see rune --help)")
            return _help(cmd)
        module = COMMANDS.get(cmd)
        if module is None:
            raise RuneError(f"rune: no such command {ascii(cmd)} (see rune --help)")
        if i + 1 < len(argv) and argv[i + 1] in ("--help", "-h"):
            return _help(cmd)
        log.debug(f"rune {' '.join(argv)}")
        if cmd in SHORT:
            import gc

            gc.disable()
        mod = __import__(f"inclavare.cli.{module}", fromlist=["main"])
        try:
            return mod.main(g, cmd, argv[i + 1 :])
        except args.Help:
            return _help(cmd)
    except RuneError as e:
        log.error(str(e))
        return 1
    except BrokenPipeError:
        return 1  # `rune list | head`
    except OSError as e:
        # a failure no check foresaw still gets one sentence naming the file, not a traceback
        where = f"{q(str(e.filename))}: " if e.filename else ""
        cmd = f" {q(argv[i])}" if i < len(argv) else ""
        log.error(f"rune{cmd}: {where}{e.strerror or e}")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: a bug of rune's gets a sentence, not a traceback
        internal_error(argv[i] if i < len(argv) else "", e)
        return 1


def _help(cmd: str) -> int:
    from inclavare.cli import help as h

    sys.stdout.write(h.text(cmd))
    return 0


def internal_error(cmd: str, e: BaseException) -> None:
    """One sentence naming the command and the container; the traceback goes to the --log file with --debug only.
    What the command had made is removed by then (create and delete undo on any exception)."""
    cid = args.container
    where = f" of container {ascii(cid)}" if cid else ""
    detail = ascii(f"{type(e).__name__}: {e}")[1:-1]
    if len(detail) > 200:
        detail = detail[:197] + "..."
    if log.debug_enabled and log.path:
        import traceback

        log.write("debug", "".join(traceback.format_exception(e)))
        hint = "its traceback is in the --log file"
    else:
        hint = "run it again with --debug --log FILE for the traceback"
    log.error(f"rune {q(cmd)}{where}: internal error ({detail}); this is a bug in rune, please report it ({hint})")


if __name__ == "__main__":
    sys.exit(main())
