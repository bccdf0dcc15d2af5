"""`rune help CMD` and `rune CMD --help`: one command's usage, in runc's wording where runc has the command or the
flag. The options listed are the ones the command's parser accepts (its FLAGS), so the two cannot drift apart.
Imported only when help is asked for."""

from __future__ import annotations

# command: (arguments, one-line description, longer description or "")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "create": ("<container-id>", "create a container",
               "The create command creates an instance of a container for a bundle. The bundle is a directory with a "
               "specification file named \"config.json\" and a root filesystem."),
    "start": ("<container-id>", "executes the user defined process in a created container",
              "The start command executes the user defined process in a created container."),
    "run": ("<container-id>", "create and run a container",
            "The run command creates an instance of a container for a bundle and runs its process."),
    "state": ("<container-id>", "output the state of a container",
              "The state command outputs current state information for the instance of a container."),
    "kill": ("<container-id> [signal]",
             "kill sends the specified signal (default: SIGTERM) to the container's init process", ""),
    "delete": ("<container-id>", "delete any resources held by the container often used with detached container",
               ""),
    "list": ("", "lists containers started by rune with the given root", ""),
    "ps": ("<container-id> [ps options]", "ps displays the processes running inside a container", ""),
    "exec": ("<container-id> <command> [command options]  || -p process.json <container-id>",
             "execute new process inside the container", ""),
    "pause": ("<container-id>", "pause suspends all processes inside the container",
              "The pause command suspends all processes in the instance of the container."),
    "resume": ("<container-id>", "resumes all processes that have been previously paused",
               "The resume command resumes all processes in the instance of the container."),
    "update": ("<container-id>", "update container resource constraints", ""),
    "events": ("<container-id>", "display container events such as OOM notifications, cpu, memory, and IO usage "
               "statistics", ""),
    "features": ("", "show the enabled features", ""),
    "spec": ("", "create a new specification file", ""),
    "checkpoint": ("<container-id>", "checkpoint a running container (needs CRIU)", ""),
    "restore": ("<container-id>", "restore a container from a previous checkpoint (needs CRIU)", ""),
    "attest": ("<container-id>", "ask an enclave container for a local report or a quote", ""),
    "install": ("containerd --config PATH", "add rune to containerd's configuration", ""),
}

FLAGS: dict[str, str] = {
    "bundle": "path to the root of the bundle directory, defaults to the current directory",
    "console-socket": "path to an AF_UNIX socket which will receive a file descriptor referencing the master end "
                      "of the console's pseudoterminal",
    "pid-file": "specify the file to write the process id to",
    "no-pivot": "do not use pivot root to jail process inside rootfs",
    "no-new-keyring": "do not create a new session keyring for the container",
    "preserve-fds": "Pass N additional file descriptors to the container (stdio + N in total) (default: 0)",
    "detach": "detach from the container's process",
    "keep": "do not delete the container after it exits",
    "no-subreaper": "disable the use of the subreaper used to reap reparented processes",
    "force": "Forcibly deletes the container if it is still running (uses SIGKILL)",
    "all": "send the specified signal to all processes inside the container",
    "format": "select one of: table or json (default: \"table\")",
    "quiet": "display only container IDs",
    "cwd": "current working directory in the container",
    "env": "set environment variables",
    "tty": "allocate a pseudo-TTY",
    "user": "UID (format: <uid>[:<gid>])",
    "additional-gids": "additional gids",
    "process": "path to the process.json",
    "process-label": "set the asm process label for the process commonly used with selinux",
    "apparmor": "set the apparmor profile for the process",
    "no-new-privs": "set the no new privileges value for the process",
    "cap": "add a capability to the bounding set for the process",
    "cgroup": "run the process in an (existing) sub-cgroup(s). Format is [<controller>:]<cgroup>.",
    "ignore-paused": "allow exec in a paused container",
    "stats": "display the container's stats then exit",
    "interval": "set the stats collection interval (default: 5s)",
    "rootless": "generate a configuration for a rootless container",
    "enclave": "generate a configuration for an enclave container",
    "resources": "path to the file containing the resources to update or '-' to read from the standard input",
    "image-path": "path for saving criu image files",
    "work-path": "path for saving work files and logs",
    "leave-running": "leave the process running after checkpointing",
}


def text(cmd: str) -> str:
    """The help of one command (its module's FLAGS give the options)."""
    from inclavare.cli.rune import COMMANDS as MODULES

    usage, short, long = COMMANDS[cmd]
    mod = __import__(f"inclavare.cli.{MODULES[cmd]}", fromlist=["main"])
    flags = getattr(mod, "FLAGS", {}) or {}
    by_dest: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for name, (kind, dest) in flags.items():
        by_dest.setdefault(dest, []).append(name)
        kinds[dest] = kind
    rows = []
    for dest, names in by_dest.items():
        names.sort(key=lambda n: (len(n) == 1, n))
        value = "" if kinds[dest] == "bool" else " value"
        spelled = ", ".join(("-" if len(n) == 1 else "--") + n + value for n in names)
        rows.append((spelled, FLAGS.get(names[0], "")))
    rows.append(("--help, -h", "show help"))
    width = max(len(r[0]) for r in rows) + 2
    out = [f"NAME:\n   rune {cmd} - {short}\n", f"USAGE:\n   rune {cmd} [command options] {usage}".rstrip() + "\n"]
    if long:
        out.append(f"DESCRIPTION:\n   {long}\n")
    out.append("OPTIONS:\n" + "".join(f"   {s.ljust(width)}{d}".rstrip() + "\n" for s, d in rows))
    return "\n".join(out)
