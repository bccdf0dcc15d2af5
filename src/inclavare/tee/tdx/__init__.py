"""Intel TDX evidence formats: TD reports and quotes v4/v5 (parse only; verification is inclavare.attest.tdx)."""
