"""Reading and writing cgroupfs files, with errors that name the config field, the file and the errno text."""

from __future__ import annotations

import errno
import os

from inclavare.errors import RuneError


class Item:
    """One planned write: `value` into `file` of the `ctrl` controller's directory, on behalf of `field`.

    `optional` items are skipped when the file does not exist; `fallback` is written instead when it does not.
    """

    __slots__ = ("ctrl", "file", "value", "field", "optional", "fallback")

    def __init__(self, ctrl: str, file: str, value: str, field: str, optional: bool = False,
                 fallback: Item | None = None) -> None:
        self.ctrl = ctrl
        self.file = file
        self.value = value
        self.field = field
        self.optional = optional
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"Item({self.ctrl!r}, {self.file!r}, {self.value!r}, {self.field!r})"


def read(path: str) -> str:
    """The file's content without its trailing newline."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if len(data) == 65536:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return data.decode().rstrip("\n")


def read_or(path: str, default: str = "") -> str:
    try:
        return read(path)
    except OSError:
        return default


def write_raw(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write(directory: str, item: Item) -> None:
    """Write one item into `directory`; raise RuneError naming the field, the file and the errno text."""
    path = directory + "/" + item.file
    try:
        write_raw(path, item.value)
    except FileNotFoundError:
        if item.fallback is not None:
            write(directory, item.fallback)
            return
        if item.optional:
            return
        if not os.path.isdir(directory):
            raise RuneError(f"{item.field}: the cgroup directory {directory} does not exist") from None
        raise RuneError(f"{item.field}: {path} does not exist (the {item.ctrl} controller or this feature "
                        f"is not available in this cgroup)") from None
    except OSError as err:
        raise refused(item, path, err) from None


def refused(item: Item, path: str, err: OSError) -> RuneError:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return RuneError(f"{item.field}: the kernel refused {item.value!r} in {path} ({reason})")


def apply(dirs: dict[str, str], items: list[Item]) -> None:
    """Write `items` in order, each into dirs[item.ctrl].

    A write refused with EINVAL is retried once after the others: the kernel checks some pairs against each other
    (memory.limit_in_bytes <= memory.memsw.limit_in_bytes, cpu quota/period against the parent), so the order that
    works depends on the current values.
    """
    deferred: list[tuple[str, Item]] = []
    for item in items:
        directory = dirs[item.ctrl]
        try:
            write_raw(directory + "/" + item.file, item.value)
        except FileNotFoundError:
            write(directory, item)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise refused(item, directory + "/" + item.file, err) from None
            deferred.append((directory, item))
    for directory, item in deferred:
        write(directory, item)
