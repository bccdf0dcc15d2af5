"""Checks of linux.resources values as JSON gives them; each failure is one sentence naming the field."""

from __future__ import annotations

from inclavare.errors import RuneError, shown

PREFIX = "linux.resources."


def _json(value: object) -> str:
    """A value as JSON spells it (null, true), for "got ..."."""
    if value is None or value is True or value is False:
        return {None: "null", True: "true", False: "false"}[value]
    return shown(value)


def bad(field: str, what: str, value: object) -> RuneError:
    if value is None:
        return RuneError(f"{field}: is required ({what})")
    return RuneError(f"{field}: must be {what}, got {_json(value)}")


def out_of_range(field: str, value: object, allowed: str) -> RuneError:
    return RuneError(f"{field}: must be {allowed}, got {_json(value)}")


def integer(value: object, field: str) -> int:
    if type(value) is not int:
        if type(value) is float and value.is_integer():
            return int(value)
        raise bad(field, "an integer", value)
    return value


def unsigned(value: object, field: str) -> int:
    number = integer(value, field)
    if number < 0:
        raise bad(field, "a non-negative integer", value)
    return number


def boolean(value: object, field: str) -> bool:
    if type(value) is not bool:
        raise bad(field, "true or false", value)
    return value


def string(value: object, field: str) -> str:
    if type(value) is not str:
        raise bad(field, "a string", value)
    return value


def mapping(value: object, field: str) -> dict:
    if type(value) is not dict:
        raise bad(field, "an object", value)
    return value


def array(value: object, field: str) -> list:
    if type(value) is not list:
        raise bad(field, "an array", value)
    return value


def device_number(entry: dict, field: str) -> str:
    """'major:minor' of a blockIO device entry."""
    major = unsigned(entry.get("major"), field + ".major")
    minor = unsigned(entry.get("minor"), field + ".minor")
    return f"{major}:{minor}"
