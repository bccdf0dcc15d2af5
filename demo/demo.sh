#!/usr/bin/env bash
# make demo: the main job end to end on this machine.
#   1. a plain container through rune's lifecycle: create, state, start, state, delete (as engines drive runc)
#   2. the TEE core: the MRENCLAVE of a real SGX enclave (known answer), and a real SGX quote next to a sim one
#   3. an enclave container (when the enclave runtime is present): signed for the `sim` TEE, run, exec'd into,
#      its identity and a quote read from inside, and a tampered copy refused at launch; an image signed once with
#      sgx-tools sign-image through Docker and containerd; an ordinary image turned into a signed enclave by
#      containerd-shim-rune-v2 (demo/shim.py)
#   4. remote attestation: verdictd with a secret and a policy, an enclave container that receives its secret,
#      a tampered image refused, simulated and debug evidence refused by the default policy
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNE="$REPO/bin/rune"
SGX_TOOLS="$REPO/bin/sgx-tools"
SHARED="$REPO/../shared"
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/rune-demo.XXXXXX)
ROOT="$WORK/state"
trap 'for c in $("$RUNE" --root "$ROOT" list -q 2>/dev/null); do "$RUNE" --root "$ROOT" delete -f "$c"; done; rm -rf "$WORK"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "a busybox bundle (rootfs from busybox-static, config.json from 'rune spec')"
"$PY" -c "import sys; sys.path.insert(0, 'src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/bundle', ['sh', '-c', 'echo hello from \$(hostname), pid \$\$; sleep 2; echo bye'])"
ls "$WORK/bundle" "$WORK/bundle/rootfs"

step "the lifecycle of a plain container"
show "$RUNE" --root "$ROOT" create --bundle "$WORK/bundle" --pid-file "$WORK/pid" demo
echo "init pid (blocked before execve): $(cat "$WORK/pid")"
show "$RUNE" --root "$ROOT" state demo
show "$RUNE" --root "$ROOT" start demo
show "$RUNE" --root "$ROOT" state demo
show "$RUNE" --root "$ROOT" list
sleep 2.5
show "$RUNE" --root "$ROOT" state demo
show "$RUNE" --root "$ROOT" delete demo
echo "left in $ROOT: $(ls "$ROOT" | wc -l) containers"

step "foreground run returns the container's exit status"
"$PY" -c "import sys; sys.path.insert(0, 'src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/exit3', ['sh', '-c', 'echo exiting with 3; exit 3'], rootfs='$WORK/bundle/rootfs')"
set +e; "$RUNE" --root "$ROOT" run --bundle "$WORK/exit3" demo-exit; echo "exit status: $?"; set -e

if [ -d "$SHARED/vectors/enarx-sgx" ]; then
  step "SGX measurement: MRENCLAVE of a real enclave equals its SIGSTRUCT's enclave_hash"
  show "$SGX_TOOLS" measure --flat "$SHARED/vectors/enarx-sgx/encl.bin" --enclave-size 0x8000 --ssa-frame-size 1 --tcs-pages 0
  "$SGX_TOOLS" dump --json "$SHARED/vectors/enarx-sgx/encl.ss" | "$PY" -c "import json,sys; print('enclave_hash', json.load(sys.stdin)['enclave_hash'])"
  step "a real SGX quote (dcap-qvl vector): its fields, then DCAP verification with its collateral (dcap-qvl)"
  "$SGX_TOOLS" dump "$SHARED/vectors/dcap-qvl/sgx_quote" | head -20
  echo "# inside its collateral's validity window; the default policy refuses its TCB status:"
  show "$SGX_TOOLS" verify-quote --quote "$SHARED/vectors/dcap-qvl/sgx_quote" \
    --collateral "$SHARED/vectors/dcap-qvl/sgx_quote_collateral.json" --now 2025-06-27T00:00:00Z || true
  echo "# the same quote at today's date: its collateral has expired"
  show "$SGX_TOOLS" verify-quote --quote "$SHARED/vectors/dcap-qvl/sgx_quote" \
    --collateral "$SHARED/vectors/dcap-qvl/sgx_quote_collateral.json" || true
fi

if [ -x demo/enclave.sh ]; then
  bash demo/enclave.sh "$WORK" "$ROOT"
  "$PY" demo/engines.py
  "$PY" demo/shim.py
fi
if [ -x demo/attest.sh ]; then
  bash demo/attest.sh "$WORK" "$ROOT"
fi
step "done"
