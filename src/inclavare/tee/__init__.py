"""The trusted-execution core: SGX formats and algorithms (`sgx`) and the software TEE (`sim`).

Nothing here is imported by rune's plain-container hot path. The launchers start Python with -I -S (no site), which
hides third-party packages such as `cryptography`; enclave work is off the hot path, so importing this package makes
the standard site-packages directories visible, on demand: the first import that nothing on sys.path satisfies adds
them (without running their .pth files, which third-party packages such as `cryptography` do not need) and is tried
again. So a process that needs none of them (a sim enclave's init-runelet) never pays for them, and one that does
(the sim launch check) pays only for what it imports.
"""

import sys


class _SitePackagesOnDemand:
    """The last meta path finder: consulted only for a top-level module no other finder found."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if path is not None or cls not in sys.meta_path:
            return None
        sys.meta_path.remove(cls)
        import site

        for d in [*site.getsitepackages(), site.getusersitepackages()]:
            if d not in sys.path:
                sys.path.append(d)
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(name, None, target)


if sys.flags.no_site and _SitePackagesOnDemand not in sys.meta_path:
    sys.meta_path.append(_SitePackagesOnDemand)
