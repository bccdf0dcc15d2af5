"""verdict: the admin CLI of verdictd, over its local admin socket (as the original's `verdict` client).

    verdict [--socket PATH | --config FILE] status
    verdict ... list-secrets
    verdict ... set-secret REPO/TYPE/TAG (--file F | --value TEXT | -) [--policy NAME]
    verdict ... delete-secret REPO/TYPE/TAG
    verdict ... list-policies | get-policy NAME
    verdict ... set-policy NAME [--rego FILE] [--reference FILE]
    verdict ... set-reference NAME FILE
    verdict ... delete-policy NAME
    verdict ... reload
Exit status 0 on success, 1 with verdictd's sentence on stderr.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_SOCKET = "/run/verdictd/admin.sock"


def _file(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SystemExit(f"verdict: cannot read {path}: {e.strerror}") from None


def _json_file(path: str) -> dict:
    try:
        obj = json.loads(_file(path))
    except ValueError as e:
        raise SystemExit(f"verdict: {path} is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SystemExit(f"verdict: {path} must hold a JSON object of reference values")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    from inclavare.cli.usage import Parser

    p = Parser(prog="verdict", description="administer verdictd through its admin socket")
    from inclavare.about import add_version_flag

    add_version_flag(p, "verdict")
    p.add_argument("--socket", help=f"verdictd's admin socket ({DEFAULT_SOCKET})")
    p.add_argument("--config", help="take the admin socket from this verdictd config")
    p.add_argument("--json", action="store_true", help="print verdictd's JSON answer")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("status")
    sub.add_parser("list-secrets")
    s = sub.add_parser("set-secret")
    s.add_argument("path")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--file")
    g.add_argument("--value")
    g.add_argument("--stdin", action="store_true")
    s.add_argument("--policy", default="default")
    sub.add_parser("delete-secret").add_argument("path")
    sub.add_parser("list-policies")
    sub.add_parser("get-policy").add_argument("name")
    s = sub.add_parser("set-policy")
    s.add_argument("name")
    s.add_argument("--rego", help="a Rego module (package policy); default: the default module")
    s.add_argument("--reference", help="a JSON file of reference values")
    s = sub.add_parser("set-reference")
    s.add_argument("name")
    s.add_argument("file")
    sub.add_parser("delete-policy").add_argument("name")
    sub.add_parser("reload")
    args = p.parse_args(argv)

    sock = args.socket
    if not sock and args.config:
        import inclavare.tee  # noqa: F401
        from inclavare.errors import RuneError
        from inclavare.kbs import config

        try:
            sock = str(config.load(args.config).admin_socket)
        except RuneError as e:
            print(f"verdict: {e}", file=sys.stderr)
            return 1
    sock = sock or DEFAULT_SOCKET
    c = args.cmd
    if c == "set-secret":
        value = args.value.encode() if args.value is not None else _file("-" if args.stdin else args.file)
        req = {"op": "set_secret", "path": args.path, "value": base64.b64encode(value).decode(), "policy": args.policy}
    elif c == "set-policy":
        req = {"op": "set_policy", "name": args.name,
               "rego": _file(args.rego).decode() if args.rego else None,
               "reference": _json_file(args.reference) if args.reference else {}}
    elif c == "set-reference":
        req = {"op": "set_reference", "name": args.name, "reference": _json_file(args.file)}
    elif c in ("delete-secret",):
        req = {"op": "delete_secret", "path": args.path}
    elif c in ("get-policy", "delete-policy"):
        req = {"op": c.replace("-", "_"), "name": args.name}
    else:
        req = {"op": c.replace("-", "_")}
    from inclavare.kbs.admin import request

    try:
        resp = request(sock, req)
    except OSError as e:
        print(f"verdict: cannot reach verdictd at {sock}: {e.strerror or e}", file=sys.stderr)
        return 1
    if not resp.get("ok"):
        print(f"verdict: {resp.get('error')}", file=sys.stderr)
        return 1
    if args.json or c in ("get-policy",):
        print(json.dumps({k: v for k, v in resp.items() if k != "ok"}, indent=2))
    elif c == "status":
        for k in ("pid", "kbs", "attested_tls", "tls_spki_sha256", "secrets", "policies"):
            v = resp.get(k)
            print(f"{k} {' '.join(v) if isinstance(v, list) else v}")
    elif c == "list-secrets":
        for s in resp["secrets"]:
            print(f"{s['path']}\tpolicy={s['policy']}\t{s['size']} bytes")
    elif c == "list-policies":
        print("\n".join(resp["policies"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
