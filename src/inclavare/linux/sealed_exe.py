"""Re-execute this rune command from a sealed memfd copy of its interpreter.

An enclave container with a PAL library has, as PID 1 for its whole life, rune's init-runelet: the interpreter,
with the enclave runtime's C code loaded. Such code may fork and exec the container's programs itself (the
reference PAL does), and a program `#!/proc/self/exe` would then run the runelet's executable in the container
(CVE-2019-5736). rune cannot put its exec trampoline between the PAL and execve, so before anything of such a
container exists, `rune create` re-executes itself from a sealed copy of the interpreter, as runc re-executes
itself from a sealed clone: the runelet and everything it forks then have a memfd as /proc/self/exe, which no
write, truncation or chmod can change. The copy costs one interpreter start (rune's own command, run again).
"""

from __future__ import annotations

import os
import sys

NAME = "rune-interpreter"
_F_ADD_SEALS = 1033
_EBUSY = 16
_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL, SHRINK, GROW, WRITE


def is_sealed() -> bool:
    """True when this process runs from the sealed copy."""
    try:
        return os.readlink("/proc/self/exe").startswith(f"/memfd:{NAME}")
    except OSError:
        return False


def sealed_copy() -> int:
    """A close-on-exec fd of a sealed memfd holding the interpreter's executable. Sealing fails with EBUSY while the
    kernel still finds a page of the copy referenced (it waits for that, then gives up); seen once in about 2,000
    runs here: a fresh copy is made and sealed again, twice at most, then the error names the copy."""
    exe = os.path.realpath(sys.executable)
    for attempt in range(3):
        try:
            return _copy_and_seal(exe)
        except OSError as e:
            if e.errno != _EBUSY:
                raise
            if attempt == 2:
                raise OSError(e.errno, f"cannot seal the memfd copy of the interpreter {exe} that an enclave runtime "
                              f"library runs from: {e.strerror}") from None
    raise AssertionError("unreachable")


def _copy_and_seal(exe: str) -> int:
    import fcntl

    src = os.open(exe, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.memfd_create(NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            size = os.fstat(src).st_size
            done = 0
            while done < size:
                n = os.sendfile(fd, src, done, size - done)
                if n == 0:
                    raise OSError(5, f"{exe} was shortened while it was copied")
                done += n
            os.fchmod(fd, 0o555)
            fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(src)
    return fd


def reexec_early(bundle: str, module: str) -> bytes | None:
    """`rune create` and `rune run`, right after their arguments are parsed: when the bundle's config.json names an
    enclave runtime library (ENCLAVE_RUNTIME_PATH in process.env, or the enclave.runtime.path annotation, beside an
    enclave type), re-execute from the sealed copy now, before the create path's imports, which the second
    interpreter would only make again. This only peeks: a config.json that cannot be read or parsed, or a setting
    that turns out wrong, is left to the create path, which says what is wrong (from the sealed copy or not), and
    whatever this misses the create path re-executes for as before. Returns the bytes it read, which the create path
    parses instead of reading the file again (None: it could not read them, and the create path says why)."""
    from inclavare.oci import jsonlite

    try:
        raw = jsonlite.read_file(os.path.join(bundle, "config.json"), 8 << 20)  # oci.config.MAX_BYTES
    except (OSError, ValueError):
        return None
    if b"ENCLAVE_RUNTIME_PATH" not in raw and b"enclave.runtime.path" not in raw:
        return raw  # a plain container (or an escaped spelling, which the create path catches): no parse
    if is_sealed():
        return raw
    try:
        config = jsonlite.loads(raw)
    except ValueError:
        return raw
    if _names_runtime_library(config):
        reexec(module)
    return raw


def _names_runtime_library(config: object) -> bool:
    """inclavare.enclave.config's rules for the type and the runtime path, without importing it: process.env
    first, then the annotations; a value of one character counts as empty."""
    if not isinstance(config, dict):
        return False
    process = config.get("process")
    env = process.get("env") if isinstance(process, dict) else None
    values: dict[str, str] = {}
    for e in env if isinstance(env, list) else ():
        if isinstance(e, str):
            k, _, v = e.partition("=")
            values[k] = v
    annotations = config.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}

    def setting(var: str, annotation: str) -> bool:
        v = values.get(var)
        if isinstance(v, str) and len(v) > 1:
            return True
        a = annotations.get(annotation)
        return isinstance(a, str) and len(a) > 1

    return setting("ENCLAVE_TYPE", "enclave.type") and setting("ENCLAVE_RUNTIME_PATH", "enclave.runtime.path")


def reexec(module: str) -> None:
    """Run this command again, same pid, arguments, environment and fds, from the sealed copy; never returns."""
    boot = (f"import sys; sys.path[:] = {sys.path!r}; sys.argv = {sys.argv!r}\n"
            f"from {module} import main\ncode = main()\nsys.stdout.flush(); sys.stderr.flush()\n"
            "import os; os._exit(code or 0)\n")
    fd = sealed_copy()
    # the -X options go on (-X importtime shows the imports of the command that does the work)
    xopts = [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
    # argv[0] is the interpreter's own path, from which it finds its standard library as it did the first time
    os.execve(fd, [os.path.realpath(sys.executable), "-I", "-S", *xopts, "-c", boot], os.environ)
