"""containerd-shim-rune-v2 [-namespace NS] [-address A] [-publish-binary P] [-id ID] [-bundle B] [-debug] start|delete

The runtime v2 shim for containerd (runtime type io.containerd.rune.v2); containerd runs it, users do not. See
docs/shim.md.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from inclavare.shim import manager

    argv = sys.argv[1:] if argv is None else argv
    try:
        f = manager.parse_flags(argv)
    except SystemExit as e:
        sys.stderr.write(f"containerd-shim-rune-v2: {e}\n")
        return 1
    if f.action == "version":
        from inclavare import __version__
        from inclavare.about import location

        sys.stdout.write(f"containerd-shim-rune-v2:\n  Version: {__version__}\n  Runtime: io.containerd.rune.v2\n"
                         f"  From: {location()}\n")
        return 0
    if f.action == "start":
        return manager.start(f)
    if f.action == "delete":
        return manager.delete(f)
    sys.stderr.write((__doc__ or "").strip() + "\n")
    return 0 if f.action == "help" else 1
