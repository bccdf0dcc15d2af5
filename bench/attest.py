#!/usr/bin/env python3
"""Attestation costs, measured side by side in one run.

1. Verifications per second on one core (the process pinned to one CPU), on the same real quote with the same
   collateral and verification time (../shared/vectors/dcap-qvl/sgx_quote, now=1751000000):
   - dcap-qvl alone: `dcap_qvl.verify(quote, collateral, now)`;
   - inclavare.attest cold: every check each time (the project's parser and pre-checks, the quote's root
     certificate, dcap-qvl with full collateral), the platform verdict cache off;
   - inclavare.attest warm: the platform verdict cache on (the quote's own ISV signature checked each time; see
     inclavare/attest/sgx_dcap.py for what the cache may skip);
   plus the default policy's appraisal and a sim quote's verification. Each is run --rounds times for --seconds;
   medians, and ratios against dcap-qvl.
2. Secret provisioning on enclave start: `rune run` of a signed sim enclave running /bin/true, with ENCLAVE_SECRETS
   (one secret from a local verdictd over attested TLS) and without, taking turns, --runs runs each; medians,
   p25-p75 and the difference.

    python3 bench/attest.py [--rounds N] [--seconds S] [--runs N] [--json FILE]   (root for part 2; `make launchers`)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))
VECTORS = os.path.join(REPO, "..", "shared", "vectors", "dcap-qvl")
NOW = 1751000000


def rate(fn, seconds: float) -> float:  # noqa: ANN001
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(50):
            fn()
        n += 50
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def verification(rounds: int, seconds: float) -> dict[str, float]:
    import dcap_qvl

    from inclavare.attest.collateral import Collateral
    from inclavare.attest.policy import Policy
    from inclavare.attest.verifier import Verifier

    raw = open(os.path.join(VECTORS, "sgx_quote"), "rb").read()
    cpath = os.path.join(VECTORS, "sgx_quote_collateral.json")
    coll = Collateral.from_file(cpath)
    qvl = dcap_qvl.QuoteCollateralV3.from_json(open(cpath).read())
    cold = Verifier([coll], cache_size=0)
    warm = Verifier([coll])
    claims = warm.verify(raw, now=NOW)
    policy = Policy.default({"tcb_status": ["ConfigurationAndSWHardeningNeeded"]})
    assert policy.appraise(claims).allowed
    cases = {
        "dcap-qvl alone": lambda: dcap_qvl.verify(raw, qvl, NOW),
        "inclavare.attest cold (no cache)": lambda: cold.verify(raw, now=NOW),
        "inclavare.attest warm (platform cache)": lambda: warm.verify(raw, now=NOW),
        "default policy appraisal (regopy)": lambda: policy.appraise(claims),
    }
    sim = _sim_quote()
    if sim:
        sv = Verifier(sim_roots=[sim[1]])
        cases["sim quote verification"] = lambda: sv.verify(sim[0])
    out: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():  # the cases take turns, round after round
            out[name].append(rate(fn, seconds))
    return {k: statistics.median(v) for k, v in out.items()}


def _sim_quote():  # noqa: ANN202
    try:
        from cryptography import x509

        from inclavare.oci.busybox import make_bundle
        from inclavare.tee.sgx.sigstruct import generate_signing_key
        from inclavare.tee.sim import bundle, launch_check
        from inclavare.tee.sim.platform import load_platform
    except ImportError:
        return None
    from cryptography.hazmat.primitives import serialization

    d = tempfile.mkdtemp(prefix="bench-attest-sim-")
    try:
        key = os.path.join(d, "k.pem")
        with open(key, "wb") as f:
            f.write(generate_signing_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        make_bundle(os.path.join(d, "b"), ["true"])
        bundle.sign_bundle(os.path.join(d, "b"), key)
        enc = launch_check(os.path.join(d, "b", "rootfs"), sim_dir=os.path.join(d, "sim"))
        q = enc.quote(b"bench")
        return q, x509.load_pem_x509_certificate(load_platform(os.path.join(d, "sim")).root_ca_pem)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def provisioning(runs: int) -> dict[str, dict[str, float]]:
    from inclavare.oci.busybox import make_bundle

    rune, sgx_tools = os.path.join(REPO, "bin", "rune"), os.path.join(REPO, "bin", "sgx-tools")
    work = tempfile.mkdtemp(prefix="bench-provision-")
    env = dict(os.environ, INCLAVARE_SIM_DIR=os.path.join(work, "sim"))
    vd = None
    try:
        subprocess.run([sgx_tools, "gen-key", os.path.join(work, "k.pem")], check=True, capture_output=True)
        make_bundle(os.path.join(work, "b"), ["true"])
        subprocess.run([sgx_tools, "sign-bundle", "--key", os.path.join(work, "k.pem"), os.path.join(work, "b")],
                       check=True, capture_output=True, env=env)
        subprocess.run([sgx_tools, "gen-qe-target-info", "--sim", "--targetinfo", os.path.join(work, "ti")], check=True,
                       env=env, capture_output=True)
        with open(os.path.join(work, "vd.toml"), "w") as f:
            f.write('state_dir = "state"\nadmin_socket = "admin.sock"\naudit_log = "audit.log"\n[kbs]\nlisten = ""\n'
                    '[attested_tls]\nlisten = ["unix:ratls.sock"]\n[attestation]\nsim_roots = ["sim/root_ca.pem"]\n')
        vd = subprocess.Popen([os.path.join(REPO, "bin", "verdictd"), "--config", os.path.join(work, "vd.toml")],
                              stderr=subprocess.DEVNULL, cwd=work)
        verdict = [os.path.join(REPO, "bin", "verdict"), "--socket", os.path.join(work, "admin.sock")]
        for _ in range(300):
            if subprocess.run([*verdict, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        with open(os.path.join(work, "ref.json"), "w") as f:
            json.dump({"allow_simulated": True}, f)
        subprocess.run([*verdict, "set-policy", "sim", "--reference", os.path.join(work, "ref.json")], check=True)
        subprocess.run([*verdict, "set-secret", "bench/key/one", "--value", "x" * 64, "--policy", "sim"], check=True)
        shutil.copytree(os.path.join(work, "b"), os.path.join(work, "s"), symlinks=True)
        cfg = os.path.join(work, "s", "config.json")
        c = json.load(open(cfg))
        c["process"]["env"] += ["ENCLAVE_SECRETS=bench/key/one", f"ENCLAVE_SECRETS_BROKER=unix:{work}/ratls.sock"]
        json.dump(c, open(cfg, "w"))
        root = os.path.join(work, "root")
        times: dict[str, list[float]] = {"without secrets": [], "with one secret": []}
        for i in range(runs + 2):
            for name, b in (("without secrets", "b"), ("with one secret", "s")):
                t = time.perf_counter()
                p = subprocess.run([rune, "--root", root, "run", "--bundle", os.path.join(work, b), f"bench-{b}-{i}"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
                dt = time.perf_counter() - t
                if p.returncode:
                    raise SystemExit(f"rune run ({name}) failed: {p.stderr.decode(errors='replace').strip()}")
                if i >= 2:  # two warm-up rounds
                    times[name].append(dt * 1000)
        return {k: {"median_ms": statistics.median(v), "p25_ms": pct(v, 0.25), "p75_ms": pct(v, 0.75)}
                for k, v in times.items()}
    finally:
        if vd is not None:
            os.kill(vd.pid, signal.SIGTERM)
            vd.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-provisioning", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})  # one core
    res: dict[str, object] = {"verifications_per_second": verification(a.rounds, a.seconds), "cpu": cpu}
    v = res["verifications_per_second"]
    base = v["dcap-qvl alone"]
    print(f"verifications per second on CPU {cpu}, medians of {a.rounds} rounds of {a.seconds:g} s (same quote, "
          "collateral and time):")
    for k, x in v.items():
        ratio = f"  ({x / base:.2f} x dcap-qvl)" if "inclavare.attest" in k else ""
        print(f"  {k:42s} {x:9.0f}/s{ratio}")
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    if not a.no_provisioning:
        if os.geteuid() != 0:
            print("secret provisioning: skipped (needs root)")
        else:
            p = provisioning(a.runs)
            res["provisioning"] = p
            w, s = p["without secrets"], p["with one secret"]
            print(f"rune run of a signed sim enclave (/bin/true), {a.runs} runs each, taking turns:")
            for k, x in p.items():
                print(f"  {k:20s} median {x['median_ms']:7.1f} ms  p25-p75 {x['p25_ms']:.1f}-{x['p75_ms']:.1f}")
            print(f"  secret provisioning adds {s['median_ms'] - w['median_ms']:.1f} ms (medians)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
