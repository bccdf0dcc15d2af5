"""sgx-tools: SGX and sim enclave tooling (measure, sign, dump, quotes, launch tokens, bundle signing).

Not on rune's hot path, so argparse is used. Exit status 0 on success, 1 with one sentence on stderr on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "sgx-tools"


def _int(text: str) -> int:
    return int(text, 0)


def _hex(size: int | None = None):  # noqa: ANN202
    def parse(text: str) -> bytes:
        data = bytes.fromhex(text.removeprefix("0x"))
        if size is not None and len(data) != size:
            raise argparse.ArgumentTypeError(f"expected {size} bytes ({2 * size} hex digits), got {len(data)}")
        return data

    return parse


def _pages(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo, 0), int(hi or lo, 0) + 1))
    return out


def _read(path: str) -> bytes:
    from inclavare.errors import RuneError

    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise RuneError(f"cannot read {path}: {e.strerror}") from None


def _write(path: str, data: bytes) -> None:
    from inclavare.errors import RuneError

    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise RuneError(f"cannot write {path}: {e.strerror}") from None


def _add_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flat", metavar="IMAGE", help="a flat enclave image loaded at offset 0")
    p.add_argument("--enclave-size", type=_int, metavar="SIZE", help="ECREATE enclave size (power of two)")
    p.add_argument("--ssa-frame-size", type=_int, default=1, metavar="N", help="SSA frame size in pages (1)")
    p.add_argument("--tcs-pages", type=_pages, default=[0], metavar="LIST",
                   help="page numbers that are TCS pages, e.g. 0 or 0,4-5 (0); the others are REG R|W|X")


def _flat_mrenclave(args: argparse.Namespace) -> bytes:
    from inclavare.errors import RuneError
    from inclavare.tee.sgx import measure

    if args.enclave_size is None:
        raise RuneError("--flat needs --enclave-size")
    return measure.measure_flat(_read(args.flat), args.enclave_size, args.ssa_frame_size, args.tcs_pages)


def cmd_measure(args: argparse.Namespace) -> int:
    from inclavare.errors import RuneError

    if args.flat:
        print(_flat_mrenclave(args).hex())
        return 0
    if args.rootfs:
        from inclavare.tee.sim import image
        from inclavare.tee.sim.launch import read_signed_image

        config, _sig, _ = read_signed_image(args.rootfs)
        print(image.measure_config(config)[0].hex())
        return 0
    raise RuneError("measure needs --flat IMAGE (SGX flat image) or --rootfs ROOTFS (signed sim enclave image)")


def cmd_sign(args: argparse.Namespace) -> int:
    from inclavare.errors import RuneError
    from inclavare.tee.sgx import sigstruct as ss
    from inclavare.tee.sim.bundle import load_key

    if args.base:
        base = ss.parse(_read(args.base))
    else:  # defaults: a 64-bit enclave, every attribute flag enforced, dated today
        import datetime

        from inclavare.tee.sgx.attributes import Attributes

        base = ss.Sigstruct(date=ss.bcd_date(datetime.date.today()), attributes=Attributes().to_bytes(),
                            attribute_mask=Attributes(0xFFFFFFFFFFFFFFFF, 0).to_bytes(), misc_mask=0xFFFFFFFF)
    if args.flat:
        enclave_hash = _flat_mrenclave(args)
    elif args.enclave_hash is not None:
        enclave_hash = args.enclave_hash
    elif args.base:
        enclave_hash = base.enclave_hash
    else:
        raise RuneError("sign needs --enclave-hash HEX, --flat IMAGE or --from SIGSTRUCT")
    changes: dict[str, object] = {"enclave_hash": enclave_hash}
    for name in ("type", "module_vendor", "date", "hw_version", "misc_select", "misc_mask", "attributes",
                 "attribute_mask", "isv_prod_id", "isv_svn", "isv_family_id", "isvext_prod_id"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.debug:
        from inclavare.tee.sgx.attributes import DEBUG, Attributes

        a = Attributes.from_bytes(changes.get("attributes", base.attributes))  # type: ignore[arg-type]
        changes["attributes"] = Attributes(a.flags | DEBUG, a.xfrm).to_bytes()
    signed = ss.sign(base.replace(**changes), load_key(args.key))
    _write(args.out, signed.to_bytes())
    print(f"enclave_hash {signed.enclave_hash.hex()}\nmr_signer {signed.mr_signer.hex()}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    from inclavare.tee.sgx import dump

    kind, obj = dump.identify(_read(args.file))
    if args.json:
        print(json.dumps(dump.to_json(kind, obj), indent=2))
    else:
        print(dump.to_text(kind, obj))
    return 0


def cmd_gen_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from inclavare.tee.sgx import sigstruct as ss

    key = ss.generate_signing_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    from inclavare.errors import RuneError

    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RuneError(f"{args.out} exists already: gen-key never overwrites a key; remove it or name another "
                        f"file") from None
    except OSError as e:
        raise RuneError(f"the key file {args.out} cannot be created: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    print(f"mr_signer {ss.mr_signer(key.public_key().public_numbers().n.to_bytes(384, 'little')).hex()}")
    return 0


def _sign_options(args: argparse.Namespace) -> dict:
    return {"debug": args.debug, "isv_prod_id": args.isv_prod_id, "isv_svn": args.isv_svn,
            "entrypoints": args.entrypoint or (), "fixed_args": args.fixed_args, "extra_env": args.env or (),
            "untrusted_env": args.untrusted_env or (), "untrusted_paths": args.untrusted_path or ()}


def _print_signed(s) -> None:  # noqa: ANN001 - manifest.SignedEnclave
    print(f"mr_enclave {s.mr_enclave.hex()}\nmr_signer {s.mr_signer.hex()}\n"
          f"entrypoints {' '.join(e.path for e in s.config.entrypoints)}\ntrusted_files {len(s.config.trusted_files)}")


def cmd_sign_bundle(args: argparse.Namespace) -> int:
    from inclavare.tee.sim.bundle import sign_bundle

    _print_signed(sign_bundle(args.bundle, _signer(args), trusted=args.trusted, **_sign_options(args)))
    return 0


def cmd_sign_image(args: argparse.Namespace) -> int:
    from inclavare.tee.sim.image_signing import sign_image

    _print_signed(sign_image(args.source, args.dest, _signer(args), **_sign_options(args)))
    return 0


def _signer(args: argparse.Namespace):  # noqa: ANN202 - manifest.Signer
    from inclavare.tee.sim import manifest

    return manifest.key_signer(args.key)


def _aesm(args: argparse.Namespace):  # noqa: ANN202
    from inclavare.tee.sgx.aesm import AesmClient

    return AesmClient(args.aesmd_socket)


def cmd_gen_qe_target_info(args: argparse.Namespace) -> int:
    if args.sim:
        from inclavare.tee.sim import qe
        from inclavare.tee.sim.platform import load_platform

        load_platform(args.sim_dir)
        ti = qe.qe_target_info().to_bytes()
    elif args.quote_type == "ecdsa":
        ti, _ = _aesm(args).ecdsa_target_info()
    else:
        ti, _gid = _aesm(args).init_quote()
    _write(args.targetinfo, ti)
    return 0


def cmd_gen_report(args: argparse.Namespace) -> int:
    from inclavare.tee.sgx.report import TargetInfo
    from inclavare.tee.sim import launch_check

    enclave = launch_check(args.rootfs, sim_dir=args.sim_dir)
    target = TargetInfo.from_bytes(_read(args.targetinfo), strict=False)
    _write(args.report, enclave.ereport(target, args.report_data).to_bytes())
    return 0


def cmd_gen_quote(args: argparse.Namespace) -> int:
    from inclavare.errors import RuneError

    report = _read(args.report)
    if len(report) != 432:
        raise RuneError(f"the REPORT {args.report} is {len(report)} bytes, a REPORT is 432")
    if args.sim:
        from inclavare.tee.sim import qe
        from inclavare.tee.sim.platform import load_platform

        quote = qe.gen_quote(load_platform(args.sim_dir), report)
    elif args.quote_type == "ecdsa":
        quote = _aesm(args).ecdsa_quote(report)
    else:
        if args.spid is None:
            raise RuneError("an EPID quote needs --spid (32 hex digits)")
        quote = _aesm(args).get_quote(report, 1 if args.quote_type == "epidLinkable" else 0, args.spid)
    _write(args.quote, quote)
    return 0


def _has_flc() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " sgx_lc" in line for line in f)
    except OSError:
        return False


def cmd_gen_token(args: argparse.Namespace) -> int:
    from inclavare.errors import RuneError
    from inclavare.tee.sgx import sigstruct as ss
    from inclavare.tee.sgx.einittoken import EInitToken

    if _has_flc():
        raise RuneError("this CPU has Flexible Launch Control (sgx_lc): enclaves need no launch token here")
    sig = ss.parse(_read(args.signature))
    token = _aesm(args).get_launch_token(sig.enclave_hash, sig.modulus, sig.attributes)
    EInitToken.from_bytes(token, strict=False)  # refuses a token of the wrong size
    _write(args.token, token)
    return 0


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO 8601 date-time (UTC when it names no zone)."""
    import datetime

    try:
        return int(text)
    except ValueError:
        pass
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
    return int((t if t.tzinfo else t.replace(tzinfo=datetime.UTC)).timestamp())


def cmd_verify_quote(args: argparse.Namespace) -> int:
    from inclavare.attest import policy as pol
    from inclavare.attest.collateral import Collateral
    from inclavare.attest.errors import VerificationError
    from inclavare.attest.verifier import Verifier

    roots = [_read(p) for p in args.sim_root or ()]
    if args.sim:
        from inclavare.tee.sim.platform import load_platform

        roots.append(load_platform(args.sim_dir, create=False).root_ca_pem)
    from inclavare.attest.sim import load_roots

    try:
        policy = pol.load(args.policy) if args.policy else pol.Policy.default()
        collateral = Collateral.from_file(args.collateral) if args.collateral else None
        verifier = Verifier(pccs_url=args.pccs, sim_roots=load_roots(roots), cache_size=0)
        claims = verifier.verify(_read(args.quote), now=args.now, collateral=collateral)
    except (VerificationError, pol.PolicyError) as e:
        from inclavare.errors import RuneError

        raise RuneError(f"{args.quote}: {e}") from None
    verdict = policy.appraise(claims)
    if args.json:
        print(json.dumps({"claims": claims.as_input(), "verdict": verdict.as_dict()}, indent=2))
    else:
        print(claims.summary())
        print(f"verdict {'ACCEPTED' if verdict.allowed else 'REFUSED'} by policy {verdict.policy}")
        for v in verdict.violations:
            print(f"  rule {v['rule']}: {v['msg']}")
    if not verdict.allowed:
        print(f"{PROG}: {args.quote}: {verdict.reason()}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from inclavare.cli.usage import Parser
    from inclavare.tee.sgx.aesm import DEFAULT_SOCKET

    parser = Parser(prog=PROG, description="SGX and sim enclave tools")
    from inclavare.about import add_version_flag

    add_version_flag(parser, PROG)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:  # noqa: ANN001
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    def sim_opts(p: argparse.ArgumentParser, switch: bool = True) -> None:
        if switch:
            p.add_argument("--sim", action="store_true", help="use the sim (SIMULATED) platform instead of aesmd")
        p.add_argument("--sim-dir", help="sim platform state directory ($INCLAVARE_SIM_DIR, /var/lib/inclavare/sim)")

    def signing_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--entrypoint", action="append", metavar="PROGRAM",
                       help="another program that may be started as the container's process (repeatable)")
        p.add_argument("--fixed-args", action="store_true",
                       help="fix the whole argv of the default entry point (default: arguments are free)")
        p.add_argument("--env", action="append", metavar="NAME=VALUE", help="another measured default (repeatable)")
        p.add_argument("--untrusted-env", action="append", metavar="NAME",
                       help="a variable the engine or user may set (NAME or NAME*; repeatable; HOSTNAME, TERM, HOME "
                            "and container always are)")
        p.add_argument("--untrusted-path", action="append", metavar="PATH",
                       help="a path outside the measurement, such as a cache or a volume's mount point (repeatable)")
        p.add_argument("--debug", action="store_true", help="sign a DEBUG enclave")
        p.add_argument("--isv-prod-id", type=_int, default=0)
        p.add_argument("--isv-svn", type=_int, default=0)

    def aesm_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--aesmd-socket", default=DEFAULT_SOCKET, help=f"aesmd socket ({DEFAULT_SOCKET})")
        p.add_argument("--quote-type", default="ecdsa", choices=["ecdsa", "epidUnlinkable", "epidLinkable"])

    p = add("measure", cmd_measure, "print the MRENCLAVE (hex) of a flat SGX image or of a signed sim enclave image")
    _add_layout(p)
    p.add_argument("--rootfs", help="a rootfs signed with sign-bundle: measure its sim enclave image")

    p = add("sign", cmd_sign, "write a SIGSTRUCT signed with an RSA-3072 e=3 key")
    p.add_argument("--key", required=True, help="PEM signing key (RSA-3072, exponent 3)")
    p.add_argument("--out", required=True, help="where to write the 1808-byte SIGSTRUCT")
    p.add_argument("--from", dest="base", metavar="SIGSTRUCT", help="take every field not given from this SIGSTRUCT")
    p.add_argument("--enclave-hash", type=_hex(32), help="MRENCLAVE (hex) instead of measuring --flat")
    _add_layout(p)
    p.add_argument("--date", type=lambda t: int(t, 16), help="date as YYYYMMDD (stored BCD)")
    p.add_argument("--vendor", dest="module_vendor", type=_int)
    p.add_argument("--type", type=_int)
    p.add_argument("--hw-version", type=_int)
    p.add_argument("--misc-select", type=_int)
    p.add_argument("--misc-mask", type=_int)
    p.add_argument("--attributes", type=_hex(16), help="16 bytes hex: flags u64 LE || xfrm u64 LE")
    p.add_argument("--attribute-mask", type=_hex(16))
    p.add_argument("--debug", action="store_true", help="set the DEBUG attribute")
    p.add_argument("--isv-prod-id", type=_int)
    p.add_argument("--isv-svn", type=_int)
    p.add_argument("--isv-family-id", type=_hex(16))
    p.add_argument("--isvext-prod-id", type=_hex(16))

    p = add("dump", cmd_dump, "recognise a quote, SIGSTRUCT, REPORT, TARGETINFO or EINITTOKEN and print its fields")
    p.add_argument("--json", action="store_true", help="JSON output (Intel field names, bytes as lowercase hex)")
    p.add_argument("file")

    p = add("gen-key", cmd_gen_key, "generate an enclave signing key (RSA-3072, exponent 3), mode 0600")
    p.add_argument("out")

    p = add("sign-bundle", cmd_sign_bundle, "turn an OCI bundle into a signed sim enclave bundle")
    p.add_argument("--key", required=True, help="PEM signing key (RSA-3072, exponent 3)")
    p.add_argument("--trusted", action="append", metavar="PATH",
                   help="a trusted file or directory in the rootfs (repeatable; default: the whole rootfs)")
    signing_opts(p)
    p.add_argument("bundle")

    p = add("sign-image", cmd_sign_image, "sign a container image as a sim enclave image (the signature travels in "
                                          "an added layer)")
    p.add_argument("--key", required=True, help="PEM signing key (RSA-3072, exponent 3)")
    signing_opts(p)
    p.add_argument("source", help="oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], a path, or "
                                  "another skopeo transport")
    p.add_argument("dest", help="where to write the signed image (same format as the source unless a transport is "
                                "given; :REF names it)")

    p = add("gen-qe-target-info", cmd_gen_qe_target_info, "write the quoting enclave's TARGETINFO (512 bytes)")
    p.add_argument("--targetinfo", required=True)
    aesm_opts(p)
    sim_opts(p)

    p = add("gen-report", cmd_gen_report, "sim: launch-check a signed rootfs and write its REPORT for a TARGETINFO")
    p.add_argument("--rootfs", required=True)
    p.add_argument("--targetinfo", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--report-data", type=_hex(), default=b"", help="up to 64 bytes hex")
    sim_opts(p, switch=False)

    p = add("gen-quote", cmd_gen_quote, "quote a REPORT (432 bytes) made for the quoting enclave")
    p.add_argument("--report", required=True)
    p.add_argument("--quote", required=True)
    p.add_argument("--spid", type=_hex(16), help="EPID service provider id (32 hex digits)")
    aesm_opts(p)
    sim_opts(p)

    p = add("gen-token", cmd_gen_token, "get an EINITTOKEN from aesmd for a SIGSTRUCT (legacy, non-FLC hosts)")
    p.add_argument("--signature", required=True, help="the enclave's SIGSTRUCT")
    p.add_argument("--token", required=True)
    p.add_argument("--aesmd-socket", default=DEFAULT_SOCKET)

    p = add("verify-quote", cmd_verify_quote, "verify a quote (SGX v3, TDX v4/v5, sim) and appraise it with a policy")
    p.add_argument("--quote", required=True)
    p.add_argument("--collateral", metavar="FILE", help="DCAP collateral in dcap-qvl's JSON layout")
    p.add_argument("--pccs", metavar="URL", help="fetch the collateral from this PCCS / Intel PCS base URL "
                   "(e.g. https://api.trustedservices.intel.com)")
    p.add_argument("--now", type=parse_time, metavar="T", help="verification time: Unix seconds or ISO 8601 (the clock)")
    p.add_argument("--policy", metavar="FILE", help="a .rego module or .json reference values (the default policy)")
    p.add_argument("--json", action="store_true", help="claims and verdict as JSON")
    p.add_argument("--sim-root", action="append", metavar="PEM",
                   help="a simulated root CA that sim evidence may chain to (repeatable)")
    p.add_argument("--sim", action="store_true", help="name the local sim platform's root CA (as --sim-root)")
    sim_opts(p, switch=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import inclavare.tee  # noqa: F401  (makes site-packages visible under the -I -S launcher)

    parser = build_parser()
    args = parser.parse_args(argv)
    from inclavare.errors import RuneError
    from inclavare.tee.sgx.aesm import AesmError

    try:
        return int(args.func(args))
    except (RuneError, AesmError, ValueError) as e:
        if args.verbose:
            raise
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"{PROG}: a Python package is missing ({e.name}); install it with 'pip install inclavare[attest]'",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
