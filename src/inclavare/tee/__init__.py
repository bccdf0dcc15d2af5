"""The trusted-execution core: SGX formats and algorithms (`sgx`) and the software TEE (`sim`).

Nothing here is imported by rune's plain-container hot path. The launchers start Python with -I -S (no site), which
hides third-party packages such as `cryptography`; enclave work is off the hot path, so importing this package makes
the standard site-packages directories visible, on demand: the first import that nothing on sys.path satisfies adds
them (without running their .pth files, which third-party packages such as `cryptography` do not need) and is tried
again. So a process that needs none of them (a sim enclave's init-runelet) never pays for them, and one that does
(the sim launch check) pays only for what it imports.
"""

import sys

# names the standard library tries and expects to miss on Linux (copy's Jython `org.python.core`, which dataclasses
# reaches; Windows modules): importing site for them would cost every enclave start
_NEVER_THIRD_PARTY = frozenset({"org", "_winapi", "nt", "winreg", "msvcrt", "_overlapped", "_winreg"})


class _SitePackagesOnDemand:
    """The last meta path finder: consulted only for a top-level module no other finder found."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if path is not None or cls not in sys.meta_path or name in _NEVER_THIRD_PARTY:
            return None
        sys.meta_path.remove(cls)
        import site

        for d in [*site.getsitepackages(), site.getusersitepackages()]:
            if d not in sys.path:
                sys.path.append(d)
        # importlib.machinery's PathFinder, without importing importlib (and warnings) for it
        from _frozen_importlib_external import PathFinder

        return PathFinder.find_spec(name, None, target)


if sys.flags.no_site and _SitePackagesOnDemand not in sys.meta_path:
    sys.meta_path.append(_SitePackagesOnDemand)
