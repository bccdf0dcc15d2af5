#!/usr/bin/env bash
# The enclave part of `make demo` (called by demo/demo.sh with its work directory and rune root):
# a bundle signed for the `sim` TEE, run, exec'd into, its identity and a quote read from inside the enclave through
# /dev/attestation, and a copy with one changed byte refused at launch. Then the reference C PAL.
set -euo pipefail
WORK=$1
ROOT=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNE="$REPO/bin/rune"
SGX_TOOLS="$REPO/bin/sgx-tools"
PY=${PYTHON:-python3}
export INCLAVARE_SIM_DIR="$WORK/sim"   # the demo's own simulated platform, not the host's
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "an enclave image signed for the sim TEE (RSA-3072, e=3, as SGX signs)"
show "$SGX_TOOLS" gen-key "$WORK/enclave.pem"
"$PY" -c "import sys; sys.path.insert(0, 'src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/enc', ['sh', '-c', 'printf demo-nonce | dd of=/dev/attestation/user_report_data 2>/dev/null; \
cat /dev/attestation/quote > /dev/shm/quote; echo enclave ready; sleep 300'])"
show "$SGX_TOOLS" sign-bundle --key "$WORK/enclave.pem" "$WORK/enc"

step "run it: the init-runelet launches the payload in the sim enclave after the launch check"
show "$RUNE" --root "$ROOT" run -d --bundle "$WORK/enc" demo-enclave
for _ in $(seq 100); do "$RUNE" --root "$ROOT" exec demo-enclave test -s /dev/shm/quote 2>/dev/null && break; sleep 0.1; done
set +e
"$RUNE" --root "$ROOT" exec demo-enclave sh -c 'echo "inside the enclave: $(cat /dev/attestation/attestation_type) attestation"; exit 3'
echo "exec exit code: $?"
set -e

step "the enclave's identity and a quote over its own report_data, read from inside through /dev/attestation"
"$RUNE" --root "$ROOT" exec demo-enclave cat /dev/shm/quote > "$WORK/quote.bin"
"$SGX_TOOLS" dump "$WORK/quote.bin" | grep -E "^ {4}(vendor_id|user_data|mr_enclave|mr_signer|isv_prod_id|isv_svn|report_data):|simulated" || true
show "$SGX_TOOLS" verify-quote --quote "$WORK/quote.bin" --sim || true
show "$RUNE" --root "$ROOT" delete -f demo-enclave

step "a copy with one byte of a trusted file changed is refused at launch"
cp -a "$WORK/enc" "$WORK/enc-tampered"
printf x >> "$WORK/enc-tampered/rootfs/etc/passwd"
set +e
"$RUNE" --root "$ROOT" run --bundle "$WORK/enc-tampered" demo-tampered
echo "rune run exit code: $?"
set -e

step "the reference C PAL (liberpal-skeleton v2) runs an ordinary bundle as an enclave container"
"$PY" -c "import sys; sys.path.insert(0, 'src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/pal', ['sh', '-c', 'echo hello through the PAL API; exit 7'])"
"$PY" - "$WORK/pal/config.json" "$REPO/build/pal/liberpal-skeleton-v2.so" <<'PY'
import json, sys
path, pal = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["env"] += ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={pal}"]
json.dump(c, open(path, "w"), indent="\t")
PY
set +e
"$RUNE" --root "$ROOT" run --bundle "$WORK/pal" demo-pal
echo "exit code: $?"
set -e
