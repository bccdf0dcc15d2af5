"""The launch check's measurement cache (inclavare.tee.sim.measure_cache), attacked: with the cache warm, a trusted
file changed in every way we could think of - its content with size and mtime restored, a file renamed over it, a
hard link swapped in, a bind mount over it, truncated and rewritten, chmod, chown, a symlink swapped in - is refused
at the next launch, and an unchanged one is not read again."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inclavare.errors import RuneError
from inclavare.tee.sim import bundle, launch_check, measure_cache, platform

TARGET = "bin/app"


@pytest.fixture
def rootfs(tmp_path: Path, sim_dir: Path, signing_key_pem: Path, make_bundle) -> Path:  # noqa: ANN001
    b = make_bundle(tmp_path)
    bundle.sign_bundle(b, signing_key_pem)
    platform.load_keys()  # the platform directory, where the cache lives
    settled()
    return b / "rootfs"


def settled() -> None:
    """Files changed until now are older than the cache's margin (measure_cache.MARGIN_NS): a launch may cache them."""
    time.sleep(measure_cache.MARGIN_NS * 2 / 1e9)


def launch(rootfs: Path) -> measure_cache.MeasurementCache:
    measure_cache._mounts.clear()  # as in each launch's own process: the mounts' ids taken at its start
    cache = measure_cache.open_cache(None)
    launch_check(rootfs, cache=cache)
    cache.save()
    return cache


def warm(rootfs: Path) -> None:
    first = launch(rootfs)
    assert first.added >= 3 and first.hits == 0
    again = launch(rootfs)
    assert again.hits == first.added and again.added == 0  # every trusted file came from the cache


def _same_times(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _lookalike(path: Path, dest: Path, index: int) -> os.stat_result:
    """dest: path's bytes with one bit flipped at index, its mode and times; returns path's stat."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[index] ^= 1
    dest.write_bytes(data)
    os.chmod(dest, st.st_mode & 0o7777)
    _same_times(dest, st)
    return st


def content_with_mtime_restored(path: Path, tmp: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    _same_times(path, st)


def renamed_over(path: Path, tmp: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    new = path.with_name(".new")
    new.write_bytes(data)
    os.chmod(new, st.st_mode & 0o7777)
    _same_times(new, st)
    os.rename(new, path)


def hard_link_swapped_in(path: Path, tmp: Path) -> None:
    other = tmp / "outside"
    _lookalike(path, other, 0)
    link = path.with_name(".link")
    os.link(other, link)
    os.rename(link, path)
    other.unlink()  # one name again: only the content differs


def hard_link_added(path: Path, tmp: Path) -> None:
    os.link(path, tmp / "another-name")


def truncated_and_rewritten(path: Path, tmp: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    os.truncate(path, 0)
    with open(path, "r+b") as f:
        f.write(data)
    _same_times(path, st)


def chmod(path: Path, tmp: Path) -> None:
    os.chmod(path, 0o4755)


def chown(path: Path, tmp: Path) -> None:
    os.chown(path, 1000, 1000)


def symlink_swapped_in(path: Path, tmp: Path) -> None:
    copy = tmp / "copy"
    copy.write_bytes(path.read_bytes())
    link = path.with_name(".sym")
    os.symlink(str(copy), link)
    os.rename(link, path)


MUTATIONS = [content_with_mtime_restored, renamed_over, hard_link_swapped_in, hard_link_added,
             truncated_and_rewritten, chmod, chown, symlink_swapped_in]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=[m.__name__ for m in MUTATIONS])
def test_a_changed_file_is_refused_with_the_cache_warm(rootfs: Path, tmp_path: Path, mutate) -> None:  # noqa: ANN001
    warm(rootfs)
    mutate(rootfs / TARGET, tmp_path)
    with pytest.raises(RuneError, match="/bin/app"):
        launch(rootfs)


def test_a_bind_mount_over_a_trusted_file_is_refused(rootfs: Path, tmp_path: Path) -> None:
    from inclavare.linux import syscalls

    warm(rootfs)
    target = rootfs / TARGET
    other = tmp_path / "over"
    _lookalike(target, other, 7)
    syscalls.mount(str(other), str(target), None, syscalls.MS_BIND)
    try:
        with pytest.raises(RuneError, match="content of the trusted file /bin/app"):
            launch(rootfs)
    finally:
        syscalls.umount2(str(target), syscalls.MNT_DETACH)
    launch(rootfs)  # unmounted: the signed file again


def test_the_same_bytes_written_again_are_hashed_again_and_accepted(rootfs: Path) -> None:
    warm(rootfs)
    target = rootfs / TARGET
    target.write_bytes(target.read_bytes())
    cache = launch(rootfs)
    # a miss (ctime moved), hashed, the same digest: accepted, but not remembered while its ctime is within the
    # margin (a second write in the same tick of the coarse clock would not move it)
    assert cache.added == 0 and cache.hits == 2
    cache = launch(rootfs)
    assert cache.added == 0 and cache.hits == 2  # hashed again
    settled()
    assert launch(rootfs).added == 1  # now remembered
    assert launch(rootfs).hits == 3


def _prime_shared_mapping(path: Path) -> tuple[int, mmap.mmap]:
    """A writable shared mapping of `path` whose first page has had its write fault (dirty, writable)."""
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED)
    m[0:1] = m[0:1]  # the write fault: ctime moves now, and not at the next writes to the page while it is dirty
    return fd, m


def test_a_file_changed_through_a_shared_mapping_after_it_was_measured_is_refused(rootfs: Path) -> None:
    """A review's attack: a page already dirty and writable in a shared mapping takes writes without a fault, which
    alone moves ctime; the cache writes a file's pages back (write-protecting them) before it takes the key it
    remembers, so that the write after the measurement faults, moves ctime, and is seen."""
    target = rootfs / TARGET
    fd, m = _prime_shared_mapping(target)
    try:
        settled()
        first = launch(rootfs)  # measures the genuine bytes and remembers them
        assert first.added == 3
        ctime = target.stat().st_ctime_ns
        m[0:4] = b"HACK"
        assert target.stat().st_ctime_ns != ctime  # the write faulted: the page had been written back
        with pytest.raises(RuneError, match="content of the trusted file /bin/app changed since signing"):
            launch(rootfs)
    finally:
        m.close()
        os.close(fd)


@pytest.mark.parametrize("change", ["owner", "group-writable", "others-writable"])
def test_a_file_someone_but_root_may_write_is_hashed_at_every_launch(tmp_path: Path, sim_dir: Path,
                                                                  signing_key_pem: Path, make_bundle,  # noqa: ANN001
                                                                  change: str) -> None:
    """Whoever may write a file can change it through a shared mapping without moving its ctime (above): only files
    that root alone may write are cached. As the review did it, as the file's unprivileged owner: the tampered
    bytes are refused at the next launch."""
    b = make_bundle(tmp_path)
    target = b / "rootfs" / TARGET
    if change == "owner":
        os.chown(target, 65534, 65534)
    else:
        target.chmod(target.stat().st_mode | (0o020 if change == "group-writable" else 0o002))
    bundle.sign_bundle(b, signing_key_pem)
    platform.load_keys()
    fd, m = _prime_shared_mapping(target)
    try:
        settled()
        assert launch(b / "rootfs").added == 2  # the other two
        again = launch(b / "rootfs")
        assert again.hits == 2 and again.added == 0
        m[0:4] = b"HACK"
        with pytest.raises(RuneError, match="content of the trusted file /bin/app changed since signing"):
            launch(b / "rootfs")
    finally:
        m.close()
        os.close(fd)


def test_only_a_settled_root_only_unchanged_file_is_recordable(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5000)
    fd = os.open(f, os.O_RDONLY)
    try:
        since = measure_cache.settle(fd)
        assert since is not None
        st = os.fstat(fd)
        assert not measure_cache.recordable(st, since)  # just written: within the margin
        settled()
        since = measure_cache.settle(fd)
        assert measure_cache.recordable(st, since)
        assert not measure_cache.recordable(st, None)  # not written back: never
        os.chmod(f, 0o664)
        assert not measure_cache.recordable(os.fstat(fd), since + 10**9)
        os.chmod(f, 0o644)
        os.chown(f, 1, 0)
        assert not measure_cache.recordable(os.fstat(fd), since + 10**9)
    finally:
        os.close(fd)


def test_files_on_filesystems_outside_the_list_are_hashed_every_time(rootfs: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure_cache, "LOCAL_FILESYSTEMS", {})
    assert launch(rootfs).added == 0 and launch(rootfs).hits == 0


def test_the_cache_can_be_turned_off(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(measure_cache.ENV_DISABLE, "0")
    assert launch(rootfs).added == 0 and launch(rootfs).hits == 0


def test_the_local_filesystem_is_recognised(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert measure_cache.fs_type(fd) in measure_cache.LOCAL_FILESYSTEMS
    finally:
        os.close(fd)


@pytest.mark.parametrize("junk", [b"", b"{", b"[]", b'{"version": 2, "entries": {}}', b'{"version": 1, "entries": 5}',
                                  b'{"version": 1, "entries": {"k": 1}}', b'{"version": 1, "entries": {"k": "ab"}}',
                                  b'{"version": 1, "entries": {"k": ["a"]}}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(rootfs: Path, sim_dir: Path, junk: bytes) -> None:
    path = Path(launch(rootfs).path)
    path.write_bytes(junk)
    assert launch(rootfs).added >= 3
    assert launch(rootfs).hits >= 3


def test_the_cache_file_is_private_to_root(rootfs: Path, sim_dir: Path) -> None:
    path = Path(launch(rootfs).path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert path.parent == sim_dir / measure_cache.IMAGES


def test_each_signed_image_has_its_own_cache(rootfs: Path, sim_dir: Path, tmp_path: Path, signing_key_pem: Path,
                                             make_bundle) -> None:  # noqa: ANN001
    """A launch reads its own image's digests (measurements/<MRENCLAVE>.json), not every image's."""
    other = make_bundle(tmp_path / "other")
    (other / "rootfs" / "etc" / "other.conf").write_text("another image\n")
    bundle.sign_bundle(other, signing_key_pem)
    first, second = launch(rootfs), launch(other / "rootfs")
    assert first.path != second.path and second.hits == 0
    mine = measure_cache.jsonlite.loads(Path(first.path).read_bytes())["entries"]
    theirs = measure_cache.jsonlite.loads(Path(second.path).read_bytes())["entries"]
    assert mine and theirs and not set(mine) & set(theirs)
    assert launch(rootfs).hits == first.added


def test_the_manifest_measurement_is_kept_under_the_manifest_bytes(rootfs: Path) -> None:
    """The image's cache keeps the MRENCLAVE of the very manifest bytes that name it (their SHA-256): a launch of
    the same bytes does not measure the manifest again."""
    import hashlib

    first = launch(rootfs)
    manifest = rootfs / ".inclavare" / "enclave" / "manifest.json"
    assert Path(first.path).stem == hashlib.sha256(manifest.read_bytes()).hexdigest()
    again = measure_cache.open_cache(None)
    again.select(Path(first.path).stem)
    assert again.mr_enclave() == launch_check(rootfs).mr_enclave


@pytest.mark.parametrize("change", ["a key added to the enclave", "a trusted file's record edited",
                                    "the same document re-serialised"])
def test_a_changed_manifest_is_measured_again(rootfs: Path, change: str) -> None:
    """With the measurement of the signed manifest cached, other manifest bytes are another cache: measured again,
    and refused unless they measure the same (JSON written another way does)."""
    import json

    warm(rootfs)
    manifest = rootfs / ".inclavare" / "enclave" / "manifest.json"
    doc = json.loads(manifest.read_bytes())
    if change == "a key added to the enclave":
        doc["enclave"]["note"] = "added after signing"
    elif change == "a trusted file's record edited":
        doc["enclave"]["trusted_files"]["/" + TARGET]["mode"] ^= 0o4000
    manifest.write_text(json.dumps(doc, indent=3))
    if change == "the same document re-serialised":
        cache = launch(rootfs)
        assert cache.added >= 3 and cache.mr_enclave() is not None  # another cache, measured, accepted
        return
    with pytest.raises(RuneError, match="manifest .* changed since signing"):
        launch(rootfs)


# ---- overlayfs: each container its own mount over the same layers ------------------------------------------------
def _overlay(lower: Path, base: Path, name: str, extra: str = "", upper_on_tmpfs: bool = False) -> Path:
    """An overlayfs mount at base/name over `lower`, as an engine makes one per container (absolute paths)."""
    from inclavare.linux import syscalls

    top = base / f"{name}-layers"
    top.mkdir()
    if upper_on_tmpfs:
        syscalls.mount("tmpfs", str(top), "tmpfs", 0)
    (top / "upper").mkdir()
    (top / "work").mkdir()
    merged = base / name
    merged.mkdir()
    opts = f"lowerdir={lower},upperdir={top / 'upper'},workdir={top / 'work'}" + extra
    syscalls.mount("overlay", str(merged), "overlay", 0, opts)
    return merged


@pytest.fixture
def overlays(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    from inclavare.linux import syscalls

    made: list[Path] = []

    def make(lower: Path, name: str, extra: str = "", upper_on_tmpfs: bool = False) -> Path:
        merged = _overlay(lower, tmp_path, name, extra, upper_on_tmpfs)
        made.append(merged)
        if upper_on_tmpfs:
            made.append(tmp_path / f"{name}-layers")
        return merged

    yield make
    for m in reversed(made):
        syscalls.umount2(str(m), syscalls.MNT_DETACH)


def test_a_second_containers_overlay_finds_the_first_ones_measurements(rootfs: Path, overlays) -> None:  # noqa: ANN001
    first = launch(overlays(rootfs, "c1"))
    assert first.added >= 3 and first.hits == 0
    second = launch(overlays(rootfs, "c2"))
    assert second.hits == first.added and second.added == 0
    assert launch(rootfs).hits == first.added  # the layer's own files: the same inodes, the same keys


@pytest.mark.parametrize("mutate", MUTATIONS, ids=[m.__name__ for m in MUTATIONS])
def test_a_layer_file_changed_after_another_container_measured_it_is_refused(rootfs: Path, tmp_path: Path, overlays,
                                                                             mutate) -> None:  # noqa: ANN001
    launch(overlays(rootfs, "c1"))
    mutate(rootfs / TARGET, tmp_path)  # in the image layer itself, under every container's overlay
    with pytest.raises(RuneError, match="/bin/app"):
        launch(overlays(rootfs, "c2"))


def test_a_file_changed_in_a_containers_upper_layer_is_refused(rootfs: Path, tmp_path: Path, overlays) -> None:  # noqa: ANN001
    c1 = overlays(rootfs, "c1")
    launch(c1)
    content_with_mtime_restored(c1 / TARGET, tmp_path)  # a copy-up: a new inode in c1's upper layer
    with pytest.raises(RuneError, match="content of the trusted file /bin/app"):
        launch(c1)
    assert launch(overlays(rootfs, "c2")).added == 0  # the layer's file is unchanged: c2 still finds it


def test_an_overlay_with_a_layer_on_tmpfs_is_never_cached(rootfs: Path, overlays) -> None:  # noqa: ANN001
    """tmpfs has no write-back: a page written through a shared mapping stays writable and its later writes never
    move ctime (measure_cache.LOCAL_FILESYSTEMS), so no file an overlay may serve from it is cached."""
    c1 = overlays(rootfs, "c1", upper_on_tmpfs=True)
    assert launch(c1).added == 0
    assert launch(c1).hits == 0


def test_an_overlay_with_metacopy_is_never_cached(rootfs: Path, overlays) -> None:  # noqa: ANN001
    """With metacopy a copied-up inode serves a lower inode's bytes, whose change does not move its ctime."""
    c1 = overlays(rootfs, "c1", ",metacopy=on")
    assert launch(c1).added == 0 and launch(c1).hits == 0


def test_the_overlay_device_is_read_from_the_mount_options(tmp_path: Path, overlays) -> None:  # noqa: ANN001
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("x")
    layers_dev = lower.stat().st_dev
    c1, c2 = overlays(lower, "c1"), overlays(lower, "c2")
    known: dict = {}
    for m in (c1, c2):
        st = (m / "f").stat()
        assert st.st_dev != layers_dev
        assert measure_cache.key_device(known, str(m / "f"), st) == f"{layers_dev}@{mount_identity(lower)}"
    (c1 / "g").write_text("new")  # a file in c1's upper layer: every file of c1 on its own device from then on
    st = (c1 / "f").stat()
    assert measure_cache.key_device({}, str(c1 / "f"), st) == f"{st.st_dev}@{mount_identity(c1)}"


def mount_identity(path: Path) -> str:
    return measure_cache.mount_of(path.stat().st_dev)


def test_a_filesystem_image_changed_offline_and_mounted_again_on_the_same_device_is_hashed(rootfs: Path,
                                                                                          tmp_path: Path) -> None:
    """A review: a loop-mounted ext4 image replaced by one changed offline (data blocks only) came back on the same
    device number with the inode numbers, times and sizes its writer chose, and every cached key hit. The key names
    the mount (the smallest unique mount id of the device, never reused while the system runs): a filesystem
    mounted again is another, and its files are hashed."""
    import shutil
    import subprocess

    from inclavare.linux import syscalls

    if not (shutil.which("mkfs.ext4") and shutil.which("losetup")):
        pytest.skip("needs mkfs.ext4 and losetup (e2fsprogs, util-linux) to make the image")
    img, mnt = tmp_path / "rootfs.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(img), "16M"], check=True)
    genuine = (rootfs / TARGET).read_bytes()

    def attached() -> str:
        dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                             text=True).stdout.strip()
        syscalls.mount(dev, str(mnt), "ext4", 0)
        return dev

    dev = attached()
    try:
        st_dev = (mnt / TARGET).stat().st_dev
        settled()
        first = launch(mnt)
        assert first.added >= 3 and launch(mnt).hits == first.added
    finally:
        syscalls.umount2(str(mnt), 0)
        subprocess.run(["losetup", "-d", dev], check=True)
    data = bytearray(img.read_bytes())
    at = data.find(genuine)
    assert at > 0
    data[at + 4:at + 12] = b"TAMPERED"  # the file's data block only: its inode, times and size stay as they were
    img.write_bytes(data)
    again = attached()
    try:
        if (mnt / TARGET).stat().st_dev != st_dev:
            pytest.skip(f"the image came back on another loop device ({again}): nothing to show")
        assert (mnt / TARGET).read_bytes()[4:12] == b"TAMPERED"
        with pytest.raises(RuneError, match="content of the trusted file /bin/app changed since signing"):
            launch(mnt)
    finally:
        syscalls.umount2(str(mnt), 0)
        subprocess.run(["losetup", "-d", again], check=True)


def test_a_loop_device_whose_backing_file_a_user_may_write_is_never_cached(rootfs: Path, tmp_path: Path) -> None:
    """A review: with the image mounted, its user-owned backing file was written (and the page cache dropped), the
    file under the mount changed, its key did not. Files of such a device are hashed at every launch."""
    import shutil
    import subprocess

    from inclavare.linux import syscalls

    if not (shutil.which("mkfs.ext4") and shutil.which("losetup")):
        pytest.skip("needs mkfs.ext4 and losetup (e2fsprogs, util-linux) to make the image")
    img, mnt = tmp_path / "rootfs.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs), str(img), "16M"], check=True)
    os.chown(img, 65534, 65534)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        syscalls.mount(dev, str(mnt), "ext4", 0)
        try:
            assert not measure_cache.device_trusted((mnt / TARGET).stat().st_dev)
            settled()
            assert launch(mnt).added == 0 and launch(mnt).hits == 0
            os.chown(img, 0, 0)  # root's alone now: cached
            assert measure_cache.device_trusted((mnt / TARGET).stat().st_dev)
            assert launch(mnt).added >= 3
        finally:
            syscalls.umount2(str(mnt), 0)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def test_an_overlay_whose_layer_is_named_through_a_symlink_is_not_cached(rootfs: Path, tmp_path: Path,
                                                                         overlays) -> None:  # noqa: ANN001
    """A review re-pointed a symlink on the way to a layer after the mount: the overlay served the old layer, the key
    and the write-back went by the new one. A layer reached through a symlink or a directory that someone but root
    may change leaves the overlay's files uncached; a symlink in root's directories (Podman's layer links) does not."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    (theirs / "layers").symlink_to(rootfs)
    settled()
    assert launch(overlays(theirs / "layers", "c1")).added == 0
    (tmp_path / "layers").symlink_to(rootfs)  # in root's directory
    assert launch(overlays(tmp_path / "layers", "c0")).added >= 3
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chown(open_dir, 65534, 65534)
    import shutil

    shutil.copytree(rootfs, open_dir / "layer", symlinks=True)
    settled()
    assert launch(overlays(open_dir / "layer", "c2")).added == 0


def test_without_unique_mount_ids_the_key_names_the_boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A kernel before 6.8 has no STATX_MNT_ID_UNIQUE: the cache still works, keyed by this boot beside st_dev (a
    device mounted again, changed while it was not, is then not told apart: docs)."""
    from inclavare.linux import syscalls

    monkeypatch.setattr(syscalls, "mount_id_unique", lambda fd: None)
    measure_cache._mounts.clear()
    try:
        dev = tmp_path.stat().st_dev
        assert measure_cache.mount_of(dev) == measure_cache._boot_id()
    finally:
        measure_cache._mounts.clear()


def test_a_layer_file_changed_through_a_shared_mapping_after_an_overlay_launch_is_refused(rootfs: Path,
                                                                                         overlays) -> None:  # noqa: ANN001
    """A review: through the overlay, the write-back reached nothing (the pages are the layer file's), so a dirty
    mapping of the layer file kept taking writes unseen, and the key the overlay launch recorded is the layer's own:
    a new container's overlay and the layer itself took the tampered bytes. settle writes back the layer file."""
    target = rootfs / TARGET
    fd, m = _prime_shared_mapping(target)
    try:
        c1 = overlays(rootfs, "c1")
        settled()
        assert launch(c1).added == 3
        ctime = target.stat().st_ctime_ns
        m[0:4] = b"HACK"
        assert target.stat().st_ctime_ns != ctime  # written back through the layer: the write faulted
        for where in (overlays(rootfs, "c2"), rootfs):
            with pytest.raises(RuneError, match="content of the trusted file /bin/app changed since signing"):
                launch(where)
    finally:
        m.close()
        os.close(fd)


def test_an_overlay_whose_options_have_escaped_characters_is_not_cached(rootfs: Path, tmp_path: Path,
                                                                        overlays) -> None:  # noqa: ANN001
    """mountinfo escapes a space in a layer path (\\040); options the parser does not read could hide metacopy."""
    import shutil

    lower = tmp_path / "a layer" / "rootfs"
    shutil.copytree(rootfs, lower, symlinks=True)
    c1 = overlays(lower, "c1")
    assert launch(c1).added == 0 and launch(c1).hits == 0


def test_copies_up_made_in_one_clock_tick_by_two_containers_do_not_share_a_key(rootfs: Path, overlays) -> None:  # noqa: ANN001
    """overlayfs keeps a copied-up file's st_ino (its lower origin's) and gives it the upper inode's ctime: two
    containers rewriting one file in the same tick (mtime restored) would have one layers-device key for different
    bytes. A file of a mount's upper layer is keyed by the mount's own st_dev."""
    st = (rootfs / TARGET).stat()
    good = (rootfs / TARGET).read_bytes()
    bad = bytearray(good)
    bad[100] ^= 0xFF
    for attempt in range(10):  # the two copies' ctimes in one clock tick: no stat between the changes
        c1, c2 = overlays(rootfs, f"a{attempt}"), overlays(rootfs, f"b{attempt}")
        with open(c1 / TARGET, "r+b") as f:
            f.write(good)
        with open(c2 / TARGET, "r+b") as f:
            f.write(bytes(bad))
        os.utime(c1 / TARGET, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.utime(c2 / TARGET, ns=(st.st_atime_ns, st.st_mtime_ns))
        s1, s2 = (c1 / TARGET).stat(), (c2 / TARGET).stat()
        if s1.st_ctime_ns == s2.st_ctime_ns:
            break
    assert (s1.st_ino, s1.st_ctime_ns, s1.st_size, s1.st_mtime_ns) == (s2.st_ino, s2.st_ctime_ns, s2.st_size,
                                                                        s2.st_mtime_ns) and s1.st_ino == st.st_ino
    settled()
    first = launch(c1)
    assert first.added == 2  # the copied-up file: its real inode (the upper layer's) is not the one it reports
    with pytest.raises(RuneError, match="content of the trusted file /bin/app"):
        launch(c2)
    assert launch(c1).hits == first.added  # c1's own mount is still warm


def test_an_upper_layer_with_directories_only_shares_the_layers_device(rootfs: Path, overlays) -> None:  # noqa: ANN001
    c1 = overlays(rootfs, "c1")
    (c1 / "etc" / "new-dir").mkdir()  # a copy-up of /etc: directories only in the upper layer
    first = launch(overlays(rootfs, "c0"))
    assert launch(c1).hits == first.added and first.added >= 3


@pytest.mark.parametrize("option", [",index=on", ",index=on,nfs_export=on"])
def test_an_overlay_with_the_inode_index_keeps_its_own_keys(rootfs: Path, overlays, option: str) -> None:  # noqa: ANN001
    """With the index, a lower hard link's other name can be served from a copied-up inode that no upper entry
    names (found by review): such a mount is never keyed by its layers' device."""
    first = launch(overlays(rootfs, "c1", option))
    assert first.added >= 3
    assert launch(overlays(rootfs, "c2", option)).hits == 0


def test_a_bind_of_an_overlay_subdirectory_stacked_on_it_shares_nothing_once_a_file_is_copied_up(
        tmp_path: Path, rootfs: Path, overlays) -> None:  # noqa: ANN001
    """The layer holds the rootfs in a subdirectory; each container's overlay has that subdirectory bound over its
    mount point (found by review: a path-based look at the upper layer mapped its files wrongly). A copy-up in either
    makes the mount keep its own st_dev, whatever path its files are reached by."""
    import shutil

    from inclavare.linux import syscalls

    layer = tmp_path / "layer"
    shutil.copytree(rootfs, layer / "rootfs", symlinks=True)
    st = (layer / "rootfs" / TARGET).stat()
    good = (layer / "rootfs" / TARGET).read_bytes()
    bad = bytearray(good)
    bad[100] ^= 0xFF
    mounts = []
    try:
        for name in ("c1", "c2"):
            m = overlays(layer, name)
            syscalls.mount(str(m / "rootfs"), str(m), None, syscalls.MS_BIND)
            mounts.append(m)
        for m, data in zip(mounts, (good, bytes(bad)), strict=True):
            with open(m / TARGET, "r+b") as f:
                f.write(data)
            os.utime(m / TARGET, ns=(st.st_atime_ns, st.st_mtime_ns))
        settled()
        assert launch(mounts[0]).added == 0  # a subdirectory bound: settle cannot find the layer files, none cached
        with pytest.raises(RuneError, match="content of the trusted file /bin/app"):
            launch(mounts[1])
    finally:
        for m in mounts:
            syscalls.umount2(str(m), syscalls.MNT_DETACH)


def test_layers_on_a_filesystem_outside_the_shared_list_keep_their_own_keys(tmp_path: Path, rootfs: Path,
                                                                            overlays) -> None:  # noqa: ANN001
    """Only ext2/3/4 and XFS layers share keys across overlay mounts: a review found that Btrfs subvolumes (each its
    own inode numbers) made two lower layers' different files share a key (they keep their mount's own st_dev).
    Layers on a tmpfs, here: never cached at all (a write through a shared mapping of a tmpfs file never moves its
    ctime, measure_cache.LOCAL_FILESYSTEMS)."""
    import shutil

    from inclavare.linux import syscalls

    t = tmp_path / "t"
    t.mkdir()
    syscalls.mount("tmpfs", str(t), "tmpfs", 0)
    try:
        shutil.copytree(rootfs, t / "lower", symlinks=True)
        assert measure_cache.fs_type(os.open(t, os.O_RDONLY | os.O_CLOEXEC)) not in \
            measure_cache.SHARED_LAYER_FILESYSTEMS
        made = []
        for name in ("c1", "c2"):
            for sub in ("u", "w", "m"):
                (t / f"{name}-{sub}").mkdir()
            syscalls.mount("overlay", str(t / f"{name}-m"), "overlay", 0,
                           f"lowerdir={t / 'lower'},upperdir={t / f'{name}-u'},workdir={t / f'{name}-w'}")
            made.append(t / f"{name}-m")
        settled()
        assert launch(made[0]).added == 0 and launch(made[0]).hits == 0
        assert launch(made[1]).hits == 0
    finally:
        for m in ("c2-m", "c1-m"):
            if os.path.ismount(t / m):
                syscalls.umount2(str(t / m), syscalls.MNT_DETACH)
        syscalls.umount2(str(t), syscalls.MNT_DETACH)
