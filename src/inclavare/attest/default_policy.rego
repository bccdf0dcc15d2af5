# The default appraisal policy of inclavare.attest (package policy, rego.v1).
#
# input: the verified claims (inclavare.attest.claims); data.reference: the reference values
#   mr_enclave, mr_signer, mr_td: lists of lowercase hex; empty: any (as the original's sgxPolicy.rego)
#   isv_prod_id, isv_svn: the minimum product id and ISV SVN (0), as sgxPolicy.rego's productId and svn
#   tcb_status: the TCB statuses accepted (["UpToDate", "SWHardeningNeeded"])
#   rejected_advisories: advisory ids refused even under an accepted status ([])
#   allow_debug: false; allow_simulated: false (sim evidence is never accepted unless this is true)
#   sim_roots: when allow_simulated, the SHA-256 (hex) of the sim root keys accepted ([]: any root the verifier named)
# Every failed rule adds {"rule", "msg"} to violations; allow is true when there is none.
package policy

import rego.v1

ref := object.union({
	"mr_enclave": [], "mr_signer": [], "mr_td": [], "isv_prod_id": 0, "isv_svn": 0,
	"tcb_status": ["UpToDate", "SWHardeningNeeded"], "rejected_advisories": [],
	"allow_debug": false, "allow_simulated": false, "sim_roots": [],
}, data.reference)

default allow := false

allow if count(violations) == 0

violations contains {"rule": "simulated", "msg": "simulated evidence (inclavare sim TEE) is not accepted: the reference values do not set allow_simulated"} if {
	input.simulated
	not ref.allow_simulated
}

violations contains {"rule": "sim_root", "msg": sprintf("the simulated root %s is not among the accepted sim_roots", [input.sim_root])} if {
	input.simulated
	count(ref.sim_roots) > 0
	not input.sim_root in ref.sim_roots
}

violations contains {"rule": "debug", "msg": "the enclave runs in debug mode (its memory is readable by the host): debug enclaves are not accepted"} if {
	input.debug
	not ref.allow_debug
}

violations contains {"rule": "tcb_status", "msg": sprintf("TCB status %s is not among the accepted statuses %v", [input.tcb_status, ref.tcb_status])} if {
	not input.simulated
	not input.tcb_status in ref.tcb_status
}

violations contains {"rule": "advisory", "msg": sprintf("advisory %s is refused", [id])} if {
	some id in input.advisory_ids
	id in ref.rejected_advisories
}

violations contains {"rule": "mr_enclave", "msg": sprintf("mr_enclave %s is not among the reference values", [input.mr_enclave])} if {
	input.tee == "sgx"
	count(ref.mr_enclave) > 0
	not input.mr_enclave in ref.mr_enclave
}

violations contains {"rule": "mr_signer", "msg": sprintf("mr_signer %s is not among the reference values", [input.mr_signer])} if {
	input.tee == "sgx"
	count(ref.mr_signer) > 0
	not input.mr_signer in ref.mr_signer
}

violations contains {"rule": "isv_prod_id", "msg": sprintf("isv_prod_id %d is below the reference %d", [input.isv_prod_id, ref.isv_prod_id])} if {
	input.tee == "sgx"
	input.isv_prod_id < ref.isv_prod_id
}

violations contains {"rule": "isv_svn", "msg": sprintf("isv_svn %d is below the minimum %d", [input.isv_svn, ref.isv_svn])} if {
	input.tee == "sgx"
	input.isv_svn < ref.isv_svn
}

violations contains {"rule": "mr_td", "msg": sprintf("mr_td %s is not among the reference values", [input.mr_td])} if {
	input.tee == "tdx"
	count(ref.mr_td) > 0
	not input.mr_td in ref.mr_td
}
