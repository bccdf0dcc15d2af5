"""The enclave manifest's environment policy, with nothing but the standard library's builtins: what the launch
check applies to the container's process and the init-runelet to every `rune exec`.

The payload gets the measured defaults, then the untrusted names the caller sets; a measured default given another
value, or a name that is neither a default nor untrusted (NAME, or NAME* for a prefix), is refused naming the
variable. ENCLAVE_* are rune's variables and are dropped.
"""

from __future__ import annotations

from inclavare.errors import RuneError

HINT = "re-sign the image with 'sgx-tools sign-image' (or the bundle with 'sgx-tools sign-bundle')"


def allowed(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def apply(defaults: dict[str, str], untrusted_names: tuple[str, ...] | list[str], env: object,
          where: str = "process.env") -> list[str]:
    items = [e for e in env or () if isinstance(e, str)] if isinstance(env, (list, tuple)) else []
    untrusted: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if name.startswith("ENCLAVE_"):
            continue
        if not eq or not name:
            raise RuneError(f"the {where} entry {item!r} is not NAME=VALUE")
        if name in defaults:
            if value != defaults[name]:
                raise RuneError(f"the environment variable {name} ({where}) overrides the enclave's measured "
                                f"default {name}={defaults[name]}; drop it, or {HINT} and --env {name}=...")
        elif allowed(name, untrusted_names):
            untrusted[name] = value
        else:
            raise RuneError(f"the environment variable {name} ({where}) is not allowed by the enclave manifest (it is "
                            f"neither a measured default nor an untrusted name); drop it, or {HINT} and "
                            f"--untrusted-env {name}")
    return [f"{k}={v}" for k, v in defaults.items()] + [f"{k}={v}" for k, v in untrusted.items()]
