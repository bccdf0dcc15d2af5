#!/usr/bin/env bash
# The attestation part of `make demo` (called by demo/demo.sh with its work directory and rune root):
# sign an image, start verdictd with a secret and a policy, run the enclave container that proves it received the
# secret, then a tampered image refused, and simulated and debug evidence refused by the default policy.
set -euo pipefail
WORK=$1
ROOT=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNE="$REPO/bin/rune"
SGX_TOOLS="$REPO/bin/sgx-tools"
VERDICTD="$REPO/bin/verdictd"
PY=${PYTHON:-python3}
export INCLAVARE_SIM_DIR="$WORK/sim"
VD="$WORK/verdictd"
VERDICT=("$REPO/bin/verdict" --socket "$VD/admin.sock")
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
mkdir -p "$VD"
VPID=""
trap '[ -n "$VPID" ] && kill "$VPID" 2>/dev/null; wait 2>/dev/null || true' EXIT

step "remote attestation: an enclave image signed for the sim TEE whose payload reads a secret from /run/secrets"
[ -f "$WORK/enclave.pem" ] || "$SGX_TOOLS" gen-key "$WORK/enclave.pem" >/dev/null
"$PY" -c "import sys; sys.path.insert(0, '$REPO/src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/app', ['sh', '-c', 'echo the enclave got its database password: \$(cat /run/secrets/db-password); \
ls -ln /run/secrets | tail -n +2'])"
MR=$("$SGX_TOOLS" sign-bundle --key "$WORK/enclave.pem" "$WORK/app" | awk '/^mr_enclave/ {print $2}')
echo "mr_enclave $MR"
"$SGX_TOOLS" gen-qe-target-info --sim --targetinfo "$WORK/qe.ti"   # the sim platform, for verdictd's sim root

step "verdictd: the key broker, with a secret and the policy that may receive it"
cat > "$VD/verdictd.toml" <<TOML
state_dir = "state"
admin_socket = "admin.sock"
audit_log = "audit.log"
[kbs]
listen = "127.0.0.1:0"
[attested_tls]
listen = ["unix:verdictd.sock"]
[attestation]
sim_roots = ["$INCLAVARE_SIM_DIR/root_ca.pem"]
TOML
cat "$VD/verdictd.toml"
"$VERDICTD" --config "$VD/verdictd.toml" 2>"$VD/verdictd.err" &
VPID=$!
for _ in $(seq 200); do "${VERDICT[@]}" status >/dev/null 2>&1 && break; sleep 0.05; done
show "${VERDICT[@]}" status
printf '{"allow_simulated": true, "mr_enclave": ["%s"]}\n' "$MR" > "$WORK/app-policy.json"
echo "# the policy: reference values for the default Rego policy ($(cat "$WORK/app-policy.json"))"
show "${VERDICT[@]}" set-policy app --reference "$WORK/app-policy.json"
show "${VERDICT[@]}" set-secret app/db/password --value "correct horse battery staple" --policy app
PIN=$("${VERDICT[@]}" status | awk '/^tls_spki_sha256/ {print $2}')
"$PY" - "$WORK/app/config.json" "$VD/verdictd.sock" "$PIN" <<'PY'
import json, sys
path, sock, pin = sys.argv[1:]
c = json.load(open(path))
c["process"]["env"] += ["ENCLAVE_SECRETS=app/db/password=db-password", f"ENCLAVE_SECRETS_BROKER=unix:{sock}",
                        f"ENCLAVE_SECRETS_BROKER_SHA256={pin}"]
c["process"]["user"] = {"uid": 1000, "gid": 1000}
json.dump(c, open(path, "w"), indent="\t")
PY

step "run it: the init-runelet attests to verdictd with the enclave's own quote, then the payload starts"
show "$RUNE" --root "$ROOT" run --bundle "$WORK/app" demo-secret
tail -1 "$VD/audit.log"

step "the same image with one changed file: refused at launch; re-signed, refused by verdictd's policy"
cp -a "$WORK/app" "$WORK/app-tampered"
echo "evil:x:0:0::/:/bin/sh" >> "$WORK/app-tampered/rootfs/etc/passwd"
set +e
"$RUNE" --root "$ROOT" run --bundle "$WORK/app-tampered" demo-tampered; echo "rune run exit code: $?"
"$PY" - "$WORK/app-tampered/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
keep = [e for e in c["process"]["env"] if e.startswith("ENCLAVE_SECRETS")]
c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("ENCLAVE_")]
json.dump(c, open(sys.argv[1], "w"))
open(sys.argv[1] + ".secrets", "w").write("\n".join(keep))
PY
"$SGX_TOOLS" sign-bundle --key "$WORK/enclave.pem" "$WORK/app-tampered" | head -1
"$PY" -c "import json,sys; p='$WORK/app-tampered/config.json'; c=json.load(open(p)); \
c['process']['env'] += open(p + '.secrets').read().split(); json.dump(c, open(p, 'w'))"
"$RUNE" --root "$ROOT" run --bundle "$WORK/app-tampered" demo-tampered; echo "rune run exit code: $?"
set -e

step "simulated and debug evidence, refused by the default policy"
"$PY" -c "import sys; sys.path.insert(0, '$REPO/src'); from inclavare.oci.busybox import make_bundle; \
make_bundle('$WORK/dbg', ['true'])"
"$SGX_TOOLS" sign-bundle --key "$WORK/enclave.pem" --debug "$WORK/dbg" >/dev/null
"$SGX_TOOLS" gen-report --rootfs "$WORK/dbg/rootfs" --targetinfo "$WORK/qe.ti" --report "$WORK/dbg.report"
"$SGX_TOOLS" gen-quote --sim --report "$WORK/dbg.report" --quote "$WORK/dbg.quote"
"$SGX_TOOLS" gen-report --rootfs "$WORK/app/rootfs" --targetinfo "$WORK/qe.ti" --report "$WORK/app.report"
"$SGX_TOOLS" gen-quote --sim --report "$WORK/app.report" --quote "$WORK/app.quote"
echo "# a sim quote of the signed image: its signatures verify against the sim root, the default policy refuses it"
show "$SGX_TOOLS" verify-quote --sim --quote "$WORK/app.quote" || true
echo "# a debug enclave's sim quote, with a policy that does allow simulated evidence: refused by rule debug"
echo '{"allow_simulated": true}' > "$WORK/allow-sim.json"
show "$SGX_TOOLS" verify-quote --sim --quote "$WORK/dbg.quote" --policy "$WORK/allow-sim.json" || true
