"""rune-signing-server --private-key FILE [--public-key FILE] [--listen HOST:PORT]: the enclave signing server of the
shim's [signature] server_address (see docs/shim.md)."""

from __future__ import annotations

import sys

from inclavare.errors import RuneError


def main(argv: list[str] | None = None) -> int:
    from inclavare.cli.usage import Parser

    ap = Parser(prog="rune-signing-server", description=(__doc__ or "").split(":")[1].strip())
    from inclavare.about import add_version_flag

    add_version_flag(ap, "rune-signing-server")
    ap.add_argument("--private-key", required=True, help="the owner's RSA-3072 (exponent 3) enclave signing key, PEM")
    ap.add_argument("--public-key", default="", help="its public half (checked against the private key)")
    ap.add_argument("--listen", default="127.0.0.1:9080", help="HOST:PORT to serve on (default 127.0.0.1:9080)")
    args = ap.parse_args(argv)
    import inclavare.tee  # noqa: F401 - makes cryptography visible to the isolated launcher
    from inclavare.shim.signing_server import serve

    try:
        httpd = serve(args.private_key, args.public_key, args.listen)
    except RuneError as e:
        sys.stderr.write(f"rune-signing-server: {e}\n")
        return 1
    host, port = httpd.server_address[:2]
    sys.stderr.write(f"rune-signing-server: serving on http://{host}:{port}\n")
    sys.stderr.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
