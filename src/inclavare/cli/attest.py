"""rune attest [--isRA] [--quote-type ecdsa] [--spid S] [--subscription-key K] [--reportFile FILE] ID

Prints the REPORT (and with --isRA the quote) as JSON; with --reportFile FILE it writes the raw REPORT, or with --isRA
the raw quote, to FILE (a host path) instead. Under an engine, pass the engine's --root (docs/engines.md lists them)."""

from __future__ import annotations

from inclavare.cli import args as a

FLAGS = {"isRA": (a.BOOL, "is_ra"), "quote-type": (a.STR, "quote_type"), "spid": (a.STR, "spid"),
         "subscription-key": (a.STR, "subscription_key"), "reportFile": (a.STR, "report_file")}  # fmt: skip


def main(g, cmd: str, argv: list[str]) -> int:
    p = a.parse(cmd, argv, FLAGS)
    cid = a.need_id(cmd, p)
    import json

    from inclavare.enclave.attest import attest
    from inclavare.errors import RuneError
    from inclavare.runtime.store import Container
    from inclavare.tee.sgx import dump

    container = Container(g.root, cid)
    state = container.read()
    if state is None:
        raise RuneError(f"container {cid!r} does not exist in {g.root}; for a container an engine runs, pass the "
                        f"engine's root with --root (Docker: <exec-root>/runtime-runc/moby, containerd: "
                        f"/run/containerd/runc/<namespace>, Podman: /run/rune)")
    out = attest(container.dir, state, bool(p.is_ra), p.quote_type or "")
    if p.report_file:
        data = out["quote"] if out["quote"] is not None else out["report"]
        try:
            with open(p.report_file, "wb") as f:
                f.write(data)
        except OSError as e:
            raise RuneError(f"--reportFile {p.report_file}: cannot write: {e.strerror}") from None
        return 0
    doc = {"report": dump.to_json(*dump.identify(out["report"]))}
    if out["quote"] is not None:
        doc["quote"] = dump.to_json(*dump.identify(out["quote"]))
    print(json.dumps(doc, indent=1))
    return 0
