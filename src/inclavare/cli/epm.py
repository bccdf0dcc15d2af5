"""epm --config FILE: the enclave pool manager's bundle caches and pool of pre-initialised enclaves on a Unix socket, in
the foreground (inclavare.epm)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from inclavare.cli.usage import Parser

    p = Parser(prog="epm", description="the enclave pool manager: bundle caches and pre-initialised enclaves for rune")
    from inclavare.about import add_version_flag

    add_version_flag(p, "epm")
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML (.toml) or JSON (.json) configuration")
    p.add_argument("--check", action="store_true", help="load the configuration, then exit")
    args = p.parse_args(argv)
    from inclavare.epm import daemon

    if args.check:
        import sys

        from inclavare.epm import config

        try:
            daemon.check(config.load(args.config))
        except (config.ConfigError, RuntimeError) as e:
            print(f"epm: {e}", file=sys.stderr)
            return 1
        print(f"epm: {args.config} OK")
        return 0
    return daemon.main_run(args.config)


if __name__ == "__main__":
    raise SystemExit(main())
