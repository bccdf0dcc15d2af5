"""rune install containerd: add rune to containerd's CRI runtimes (inclavare.k8s.containerd_config).

    rune install containerd [--config /etc/containerd/config.toml] [--name rune] [--shim auto|rune|runc]
                            [--rune PATH] [--runtime-path PATH] [--shim-config PATH] [--default]
                            [--remove] [--restart [--unit containerd.service]]

--shim auto takes containerd-shim-rune-v2 when it is installed beside rune or on PATH, else runc's shim with
BinaryName = rune. Nothing is written when the file already says it; containerd is restarted (through systemd) only
with --restart, and only when the file changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from inclavare.errors import RuneError

SHIM = "containerd-shim-rune-v2"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one sentence, exit 1, as rune's other commands
        raise RuneError(f"rune install: {message}")


def parse(args: list[str]) -> argparse.Namespace:
    p = Parser(prog="rune install", description="add rune to a container engine's configuration")
    p.add_argument("engine", choices=("containerd",))
    p.add_argument("--config", default="/etc/containerd/config.toml", help="containerd's config.toml")
    p.add_argument("--name", default="rune", help="the CRI runtime handler name (RuntimeClass handler)")
    p.add_argument("--shim", default="auto", choices=("auto", "rune", "runc"))
    p.add_argument("--rune", default="", help="rune's path, the BinaryName with --shim runc (default: this rune)")
    p.add_argument("--runtime-path", default="", help="the shim's absolute path, if containerd's PATH lacks it")
    p.add_argument("--shim-config", default="/etc/inclavare-containers/config.toml", help="the shim's ConfigPath")
    p.add_argument("--default", action="store_true", help="make it containerd's default runtime")
    p.add_argument("--remove", action="store_true", help="take the runtime out of the configuration")
    p.add_argument("--restart", action="store_true", help="restart containerd through systemd if the file changed")
    p.add_argument("--unit", default="containerd.service", help="containerd's systemd unit")
    return p.parse_args(args)


def this_rune() -> str:
    return os.path.realpath(sys.argv[0]) if os.path.basename(sys.argv[0]) == "rune" else shutil.which("rune") or ""


def choose_shim(a: argparse.Namespace, rune: str) -> str:
    if a.shim != "auto":
        return a.shim
    beside = os.path.join(os.path.dirname(rune), SHIM) if rune else ""
    return "rune" if a.runtime_path or (beside and os.access(beside, os.X_OK)) or shutil.which(SHIM) else "runc"


def main(g, cmd: str, args: list[str]) -> int:
    a = parse(args)
    import inclavare.k8s  # noqa: F401  (makes site-packages visible under the -I -S launcher)

    try:
        from inclavare.k8s import containerd_config as cc
    except ImportError as e:
        raise RuneError(f"rune install: a Python package is missing ({e.name}); install tomlkit") from None
    doc = cc.load(a.config)
    if a.remove:
        changed = cc.remove_runtime(doc, a.config, a.name)
        what = f"removed runtime {a.name!r} from" if changed else f"no runtime {a.name!r} in"
    else:
        rune = os.path.abspath(a.rune) if a.rune else this_rune()
        shim = choose_shim(a, rune)
        if shim == "runc" and not rune:
            raise RuneError("rune install: --shim runc needs rune's path (--rune PATH)")
        rt = cc.Runtime(name=a.name, shim=shim, rune=rune, runtime_path=a.runtime_path, config_path=a.shim_config,
                        default=a.default)
        changed = cc.add_runtime(doc, a.config, rt)
        how = f"{cc.RUNE_SHIM}" if shim == "rune" else f"{cc.RUNC_SHIM} with BinaryName {rune}"
        what = f"{'added' if changed else 'already has'} runtime {a.name!r} ({how}) {'to' if changed else 'in'}"
    if changed:
        cc.write(doc, a.config)
    print(f"{what} {a.config}")
    if not a.remove and shim == "rune" and cc.systemd_cgroup(cc.containerd_table(doc, a.config), a.name):
        print(f"containerd's runc handler has SystemdCgroup = true: set systemd_cgroup = true under [rune] in "
              f"{a.shim_config} for the shim to use the systemd cgroup driver too")
    if changed and a.restart:
        from inclavare.k8s import systemd

        job = systemd.restart_unit(a.unit)
        print(f"restarting {a.unit} ({job})")
    return 0
