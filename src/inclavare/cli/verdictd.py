"""verdictd --config FILE: the verifier and key broker, in the foreground (see inclavare.kbs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import inclavare.tee  # noqa: F401  (site-packages under the -I -S launcher)
    from inclavare.cli.usage import Parser

    p = Parser(prog="verdictd", description="remote attestation verifier and key broker (KBS)")
    from inclavare.about import add_version_flag

    add_version_flag(p, "verdictd")
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration file")
    p.add_argument("--check", action="store_true", help="load the configuration, key and records, then exit")
    args = p.parse_args(argv)
    try:
        from inclavare.kbs import daemon
    except ImportError as e:
        print(f"verdictd: a Python package is missing ({e.name}); install it with 'pip install inclavare[attest]'",
              file=sys.stderr)
        return 1
    if args.check:
        from inclavare.errors import RuneError
        from inclavare.kbs import config
        from inclavare.kbs.store import Store, load_key

        try:
            c = config.load(args.config)
            daemon.build_verifier(c)
            Store(c.state_dir, load_key(c.key_file, create=False)).load()
        except (RuneError, OSError) as e:
            print(f"verdictd: {e}", file=sys.stderr)
            return 1
        print(f"verdictd: {args.config} OK")
        return 0
    return daemon.main_run(args.config)


if __name__ == "__main__":
    sys.exit(main())
