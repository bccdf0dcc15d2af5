"""Re-execute this rune command from an interpreter executable that no one can change through it.

An enclave container with a PAL library has, as PID 1 for its whole life, rune's init-runelet: the interpreter,
with the enclave runtime's C code loaded. Such code may fork and exec the container's programs itself (the
reference PAL does), and a program `#!/proc/self/exe` would then run the runelet's executable in the container
(CVE-2019-5736). rune cannot put its exec trampoline between the PAL and execve, so before anything of such a
container exists, `rune create` re-executes itself, as runc re-executes itself from a sealed clone, from either

- the interpreter seen through a read-only overlayfs mount that is attached nowhere (fsopen/fsmount: the
  interpreter's directory over rune's root; runc 1.2's zero-copy way): no write, truncation or chmod can go through
  it, and it costs no copy (the pages are the host file's, shared); or, where that cannot be made (no overlayfs, no
  new mount API, no privilege),
- a sealed memfd copy of the interpreter (6.8 MB for Debian's python3.11, per container).

The runelet and everything it forks then have one of these as /proc/self/exe. The re-execution costs one
interpreter start (rune's own command, run again).
"""

from __future__ import annotations

import os
import sys

NAME = "rune-interpreter"
_F_ADD_SEALS = 1033
_F_GET_SEALS = 1034
_EBUSY = 16
_SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL, SHRINK, GROW, WRITE


def is_sealed() -> bool:
    """True when this process runs from the sealed copy or through a read-only overlayfs."""
    try:
        fd = os.open("/proc/self/exe", os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return protected(fd)
    finally:
        os.close(fd)


def protected(fd: int) -> bool:
    """The executable open at `fd` cannot be changed through it: rune's sealed memfd copy (all four seals), or a
    file on a read-only overlayfs mount (overlayfs so that no bind mount of a writable filesystem passes)."""
    import fcntl

    try:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{NAME}"):
            r = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)  # seals are not read through O_PATH
            try:
                return fcntl.fcntl(r, _F_GET_SEALS) & _SEALS == _SEALS
            finally:
                os.close(r)
        from inclavare.linux import syscalls

        return syscalls.fstatfs_type(fd) == syscalls.OVERLAYFS_SUPER_MAGIC and bool(
            os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def overlay_exe(exe: str, lower: str) -> int | None:
    """An O_PATH fd of `exe` through a new read-only overlayfs mount attached nowhere, or None where it cannot be
    made. Its lower layers: exe's directory on top, then `lower`, any other directory (overlayfs without an upper
    layer wants two; a name the top layer has, exe's, is never looked up below it)."""
    from inclavare.linux import syscalls

    d, name = os.path.split(exe)
    try:
        ctx = syscalls.fsopen("overlay")
    except OSError:
        return None  # no overlayfs or no new mount API here, or no privilege for it
    try:
        def esc(p: str) -> str:
            return p.replace("\\", "\\\\").replace(":", "\\:")

        syscalls.fsconfig_string(ctx, "lowerdir", f"{esc(d)}:{esc(lower)}")
        try:
            syscalls.fsconfig_string(ctx, "xino", "off")  # not needed; spares the kernel log a line
        except OSError:
            pass
        syscalls.fsconfig_create(ctx)
        mnt = syscalls.fsmount(ctx, syscalls.MOUNT_ATTR_RDONLY | syscalls.MOUNT_ATTR_NOSUID | syscalls.MOUNT_ATTR_NODEV)
    except OSError:
        return None
    finally:
        os.close(ctx)
    try:
        return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=mnt)
    except OSError:
        return None
    finally:
        os.close(mnt)  # the exec'd process's executable keeps the mount


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


def reexec_early(bundle: str, module: str, root: str) -> bytes | None:
    """`rune create` and `rune run`, right after their arguments are parsed: when the bundle's config.json names an
    enclave runtime library (ENCLAVE_RUNTIME_PATH in process.env, or the enclave.runtime.path annotation, beside an
    enclave type), re-execute (reexec) now, before the create path's imports, which the second
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
        reexec(module, root)
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


def reexec(module: str, root: str) -> None:
    """Run this command again, same pid, arguments, environment and fds, from the interpreter through a read-only
    overlayfs (rune's `root` its second layer, as runc's is, or /tmp before the root exists) or else from the sealed
    copy; never returns."""
    boot = (f"import sys; sys.path[:] = {sys.path!r}; sys.argv = {sys.argv!r}\n"
            f"from {module} import main\ncode = main()\nsys.stdout.flush(); sys.stderr.flush()\n"
            "import os; os._exit(code or 0)\n")
    exe = os.path.realpath(sys.executable)
    fd = overlay_exe(exe, root if os.path.isdir(root) else "/tmp")
    if fd is None:
        fd = sealed_copy()
    # the -X options go on (-X importtime shows the imports of the command that does the work)
    xopts = [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
    # argv[0] is the interpreter's own path, from which it finds its standard library as it did the first time
    os.execve(fd, [exe, "-I", "-S", *xopts, "-c", boot], os.environ)
