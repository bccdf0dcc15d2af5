"""What makes simulated evidence unmistakable, defined once for the sim (which sets it) and every verifier (which
refuses it unless its policy names the simulated root explicitly).

A sim quote carries all three:
- QE vendor id SIM_QE_VENDOR_ID (ASCII "INCLAVARE-SIM-QE") instead of Intel's QE vendor id;
- header user_data starting with SIM_USER_DATA_PREFIX (ASCII "SIMULATED");
- a PCK-like leaf certificate whose subject CN says SIMULATED and which carries the CRITICAL extension
  SIM_EXTENSION_OID, so that a generic X.509 path validator that does not know it must reject the chain.
"""

SIM_QE_VENDOR_ID = b"INCLAVARE-SIM-QE"
SIM_USER_DATA_PREFIX = b"SIMULATED"
# A UUID-derived OID (ITU-T X.667, arc 2.25): needs no registration and names nothing else.
SIM_EXTENSION_OID = "2.25.258476436622640427785733744416357451827"
SIM_EXTENSION_VALUE = b"inclavare sim TEE: software protection only, not SGX hardware"
SIM_CN_MARK = "SIMULATED"

assert len(SIM_QE_VENDOR_ID) == 16
