"""Device access rules: v1 devices.allow / devices.deny lines, and the cgroup v2 eBPF device program.

OCI rules are applied in order and the last one that matches a device wins, as on v1 where each rule is a write
(a rule of type "a" with no numbers resets everything before it). The eBPF program checks the rules in reverse and
returns at the first match; no match denies.
"""

from __future__ import annotations

import os

from inclavare.errors import RuneError

from .files import Item
from .values import PREFIX, array, boolean, integer, mapping, string

FIELD = PREFIX + "devices"

# runc's default allowed devices (specconv.AllowedDevices), appended after the config's own rules.
DEFAULT_ALLOWED: tuple[dict, ...] = (
    {"allow": True, "type": "c", "major": None, "minor": None, "access": "m"},
    {"allow": True, "type": "b", "major": None, "minor": None, "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},    # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},    # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},    # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},    # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},    # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},    # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "minor": None, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},    # /dev/ptmx
)


def runc_rules(resources_devices: list | None, linux_devices: list | None = None) -> list[dict]:
    """The rule list runc would apply: the config's rules, an allow rule per linux.devices node, then the defaults."""
    rules = list(resources_devices or [])
    for dev in linux_devices or []:
        if isinstance(dev, dict) and dev.get("type") in ("c", "b", "u"):
            rules.append({"allow": True, "type": "c" if dev["type"] == "u" else dev["type"],
                          "major": dev.get("major"), "minor": dev.get("minor"), "access": "rwm"})
    rules.extend(DEFAULT_ALLOWED)
    return rules


class Rule:
    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type_: str, major: int, minor: int, access: str) -> None:
        self.allow, self.type, self.major, self.minor, self.access = allow, type_, major, minor, access

    def line(self) -> str:
        """The v1 devices.allow / devices.deny line."""
        if self.type == "a" and self.major == -1 and self.minor == -1 and self.access == "rwm":
            return "a"
        major = "*" if self.major == -1 else str(self.major)
        minor = "*" if self.minor == -1 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


def parse(rules: object) -> list[Rule]:
    out = []
    for i, entry in enumerate(array(rules, FIELD)):
        field = f"{FIELD}[{i}]"
        entry = mapping(entry, field)
        allow = boolean(entry.get("allow"), field + ".allow")
        type_ = string(entry.get("type") or "a", field + ".type")
        if type_ not in ("a", "b", "c"):
            raise RuneError(f'{field}.type: must be "a", "b" or "c", got {type_!r}')
        numbers = []
        for key in ("major", "minor"):
            value = entry.get(key)
            number = -1 if value is None else integer(value, f"{field}.{key}")
            if number < -1 or number > 0xFFFFFFFF:
                raise RuneError(f"{field}.{key}: must be a device number or -1 for any, got {number}")
            numbers.append(number)
        access = string(entry.get("access") or "rwm", field + ".access")
        if not access or any(c not in "rwm" for c in access) or len(set(access)) != len(access):
            raise RuneError(f"{field}.access: must be a combination of r, w and m, got {access!r}")
        access = "".join(c for c in "rwm" if c in access)
        out.append(Rule(allow, type_, numbers[0], numbers[1], access))
    return out


def v1_items(rules: list[Rule]) -> list[Item]:
    """Deny everything first (a new v1 cgroup inherits its parent's list, often `a *:* rwm`), then one write per
    rule, in order, to devices.allow or devices.deny. The v1 controller cannot deny part of an allowed wildcard:
    such a rule list is refused, as runc refuses it, rather than applied as something else."""
    for i, r in enumerate(rules):
        if r.allow:
            continue
        for j in range(i):
            w = rules[j]
            if w.line() == "a":
                continue  # allowing everything switches the controller to deny-listing: exceptions work there
            wildcard = w.type == "a" or w.major == -1 or w.minor == -1
            covers = (w.type in ("a", r.type) and w.major in (-1, r.major) and w.minor in (-1, r.minor)
                      and set(w.access) & set(r.access))
            if w.allow and wildcard and covers and not (r.type == "a" or r.major == -1 and r.minor == -1):
                raise RuneError(f"{FIELD}[{i}]: the cgroup v1 devices controller cannot deny {r.line()!r} inside "
                                f"the wildcard allowed by {FIELD}[{j}] ({w.line()!r})")
    return [Item("devices", "devices.deny", "a", FIELD)] + [
        Item("devices", "devices.allow" if r.allow else "devices.deny", r.line(), FIELD) for r in rules]


# --- cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program -------------------------------------------------------------

# struct bpf_cgroup_dev_ctx { u32 access_type; /* (access << 16) | type */ u32 major; u32 minor; }
_TYPE = {"b": 1, "c": 2}                  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}        # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# Opcodes (linux/bpf_common.h, linux/bpf.h).
_LDX_W = 0x61       # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_AND32_K = 0x54     # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74     # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X = 0xBC     # BPF_ALU | BPF_MOV | BPF_X
_MOV64_K = 0xB7     # BPF_ALU64 | BPF_MOV | BPF_K
_JNE32_K = 0x56     # BPF_JMP32 | BPF_JNE | BPF_K
_JNE32_X = 0x5E     # BPF_JMP32 | BPF_JNE | BPF_X
_JEQ32_K = 0x16     # BPF_JMP32 | BPF_JEQ | BPF_K
_EXIT = 0x95        # BPF_JMP | BPF_EXIT


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    if imm >= 1 << 31:
        imm -= 1 << 32  # the 32-bit compares see the same bits
    return bytes((code, dst | (src << 4))) + off.to_bytes(2, "little", signed=True) + imm.to_bytes(4, "little",
                                                                                                     signed=True)


def program(rules: list[Rule]) -> bytes:
    """The eBPF instructions: r2 = type, r3 = access, r4 = major, r5 = minor; one block per rule, last rule first."""
    code = [
        _insn(_LDX_W, 2, 1, 0), _insn(_AND32_K, 2, imm=0xFFFF),
        _insn(_LDX_W, 3, 1, 0), _insn(_RSH32_K, 3, imm=16),
        _insn(_LDX_W, 4, 1, 4),
        _insn(_LDX_W, 5, 1, 8),
    ]
    for rule in reversed(rules):
        # Each check jumps over the rest of the block when it does not match: (opcode, dst, src, imm).
        checks: list[tuple[int, int, int, int]] = []
        if rule.type != "a":
            checks.append((_JNE32_K, 2, 0, _TYPE[rule.type]))
        if rule.access != "rwm":
            mask = sum(_ACCESS[c] for c in rule.access)
            # r1 = r3 & mask; an allow rule matches only if every requested access bit is in its mask, a deny rule
            # as soon as one is (a request for rw is denied by a rule that denies w)
            checks.append((_MOV32_X, 1, 3, 0))
            checks.append((_AND32_K, 1, 0, mask))
            checks.append((_JNE32_X, 1, 3, 0) if rule.allow else (_JEQ32_K, 1, 0, 0))
        if rule.major != -1:
            checks.append((_JNE32_K, 4, 0, rule.major))
        if rule.minor != -1:
            checks.append((_JNE32_K, 5, 0, rule.minor))
        block_len = len(checks) + 2
        for i, (op, dst, src, imm) in enumerate(checks):
            jump = op in (_JNE32_K, _JNE32_X, _JEQ32_K)
            code.append(_insn(op, dst, src, block_len - i - 1 if jump else 0, imm))
        code.append(_insn(_MOV64_K, 0, imm=1 if rule.allow else 0))
        code.append(_insn(_EXIT))
        if not checks:
            return b"".join(code)  # matches everything: the rules before it can never decide
    code.append(_insn(_MOV64_K, 0, imm=0))
    code.append(_insn(_EXIT))
    return b"".join(code)


def attach(cgroup_dir: str, rules: list[Rule]) -> None:
    """Load the device program for `rules` and attach it to the cgroup2 directory, replacing programs attached
    there before (attach the new one first, then detach the old, so there is no moment without a filter)."""
    from . import bpf  # ctypes, loaded only here

    insns = program(rules)
    try:
        prog_fd = bpf.prog_load(insns)
    except OSError as err:
        raise RuneError(f"{FIELD}: the kernel refused the eBPF device program ({os.strerror(err.errno)}); "
                        f"{bpf.last_log()}".rstrip("; ")) from None
    try:
        try:
            cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise RuneError(f"{FIELD}: cannot open the cgroup directory {cgroup_dir} ({err.strerror})") from None
        try:
            old = bpf.query_device_progs(cg_fd)
            try:
                bpf.prog_attach(cg_fd, prog_fd)
            except OSError as err:
                raise RuneError(f"{FIELD}: cannot attach the eBPF device program to {cgroup_dir} "
                                f"({os.strerror(err.errno)})") from None
            for prog_id in old:
                bpf.detach_by_id(cg_fd, prog_id)
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)
