"""Write the command launchers (rune, sgx-tools, containerd-shim-rune-v2, rune-signing-server, verdictd,
verdict, rune-device-plugin, epm) into a directory.

A pip console script starts the interpreter with `site`, which on some hosts imports third-party .pth hooks at every
start (tens of milliseconds). rune is on the hot path of every container start, so its launcher runs the interpreter
with -I -S and puts this package's directory on sys.path itself. The launchers name the interpreter and the package
by absolute path, so engines can call them with a minimal environment.
"""

import os
import sys

TEMPLATE = """#!{python} -IS
import sys
sys.path.insert(0, {path!r})
from {module} import main
code = main()
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(code or 0)  # interpreter finalization (module teardown, GC) is pure overhead for a CLI
"""

LAUNCHERS = {"rune": "inclavare.cli.rune", "sgx-tools": "inclavare.cli.sgx_tools",
             "containerd-shim-rune-v2": "inclavare.cli.shim", "rune-signing-server": "inclavare.cli.signing_server",
             "verdictd": "inclavare.cli.verdictd", "verdict": "inclavare.cli.verdict",
             "rune-device-plugin": "inclavare.cli.device_plugin", "epm": "inclavare.cli.epm"}


def write(dest: str) -> list[str]:
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(dest, exist_ok=True)
    written = []
    for name, module in LAUNCHERS.items():
        path = os.path.join(dest, name)
        text = TEMPLATE.format(python=os.path.realpath(sys.executable), path=pkg_parent, module=module)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(sys.argv[1] if len(sys.argv) > 1 else "bin"):
        print(p)
