"""The trusted-execution core: SGX formats and algorithms (`sgx`) and the software TEE (`sim`).

Nothing here is imported by rune's plain-container hot path. The launchers start Python with -I -S (no site), which
hides third-party packages such as `cryptography`; enclave work is off the hot path, so importing this package adds
the standard site directories once when `cryptography` is not otherwise visible.
"""

import importlib.util
import sys


def _site_packages_for_crypto() -> None:
    if sys.flags.no_site and importlib.util.find_spec("cryptography") is None:
        import site

        site.main()


_site_packages_for_crypto()
