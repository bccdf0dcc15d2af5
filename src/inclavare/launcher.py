"""Write the command launchers (rune, sgx-tools, containerd-shim-rune-v2, rune-signing-server, verdictd,
verdict, rune-device-plugin, epm) into a directory.

A pip console script starts the interpreter with `site`, which on some hosts imports third-party .pth hooks at every
start (tens of milliseconds). rune is on the hot path of every container start, so its launcher runs the interpreter
with -I -S and puts this package's directory on sys.path itself. The launchers name the interpreter and the package
by absolute path, so engines can call them with a minimal environment.

rune, started three times for every container, runs on the system's interpreter of the same
Python version when there is one (/usr/bin/python3.X: distributions build it with PGO and LTO and link libpython
statically, and it starts about 3 ms sooner than a --enable-shared build such as pyenv's), with the writing
interpreter's site-packages after the standard library on sys.path (what it imports beyond it, for enclave work,
was installed there). Same version means the same bytecode magic, so both read the checkout's __pycache__. Without
such an interpreter, or with PYTHON_LAUNCHER_INTERPRETER=same, every launcher runs on the writing interpreter.
"""

import os
import sys

HEAD = "#!{python} -IS\nimport sys\nsys.path.insert(0, {path!r})\n"
TAIL = """from {module} import main
code = main()
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(code or 0)  # interpreter finalization (module teardown, GC) is pure overhead for a CLI
"""
TEMPLATE = HEAD + TAIL  # python, path, module
SITE = "sys.path += {site!r}  # the writing interpreter's site-packages, for what is not in the standard library\n"

LAUNCHERS = {"rune": "inclavare.cli.rune", "sgx-tools": "inclavare.cli.sgx_tools",
             "containerd-shim-rune-v2": "inclavare.cli.shim", "rune-signing-server": "inclavare.cli.signing_server",
             "verdictd": "inclavare.cli.verdictd", "verdict": "inclavare.cli.verdict",
             "rune-device-plugin": "inclavare.cli.device_plugin", "epm": "inclavare.cli.epm"}
HOT = ("rune", "containerd-shim-rune-v2")  # rune starts three times per container; the shim runs rune's commands
# in forks of itself when rune's launcher is its own with the module changed (inclavare.shim.forkserver): both on the
# fastest fitting interpreter
_PROBE = ("import sys, importlib.util, _ctypes, _json, _socket, fcntl, select; "
          "print(sys.version_info[0], sys.version_info[1], importlib.util.MAGIC_NUMBER.hex())")


def system_python() -> str | None:
    """/usr/bin/python3.X for this interpreter's X, if it is another binary with the same bytecode magic and the
    extension modules rune's hot path uses; else None."""
    if os.environ.get("PYTHON_LAUNCHER_INTERPRETER") == "same":
        return None
    import importlib.util
    import subprocess

    v = sys.version_info
    cand = f"/usr/bin/python{v[0]}.{v[1]}"
    if not os.access(cand, os.X_OK) or os.path.realpath(cand) == os.path.realpath(sys.executable):
        return None
    try:
        out = subprocess.run([cand, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return cand if out.split() == [str(v[0]), str(v[1]), importlib.util.MAGIC_NUMBER.hex()] else None


def site_packages() -> list[str]:
    """The writing interpreter's site-packages directories (those that exist)."""
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def text(python: str, path: str, module: str, site: list[str] | None = None) -> str:
    return HEAD.format(python=python, path=path) + (SITE.format(site=site) if site else "") + TAIL.format(module=module)


def write(dest: str) -> list[str]:
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(dest, exist_ok=True)
    own = os.path.realpath(sys.executable)
    fast = system_python()
    site = site_packages() if fast else None
    written = []
    for name, module in LAUNCHERS.items():
        path = os.path.join(dest, name)
        body = text(fast, pkg_parent, module, site) if fast and name in HOT else text(own, pkg_parent, module)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else "bin"):
        print(p)
