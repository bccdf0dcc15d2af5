"""Restarting a systemd unit through systemd's D-Bus API (org.freedesktop.systemd1.Manager.RestartUnit), with
jeepney on the system bus ($DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket): what `systemctl restart`
does, without systemctl, so that it also works from the node installer's container with the bus socket mounted."""

from __future__ import annotations

from inclavare.errors import RuneError

SYSTEMD = ("/org/freedesktop/systemd1", "org.freedesktop.systemd1", "org.freedesktop.systemd1.Manager")


def restart_unit(unit: str, timeout: float = 30) -> str:
    """Queue a restart of unit (mode "replace"); the job's object path."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import DBusErrorResponse

    path, bus_name, interface = SYSTEMD
    msg = new_method_call(DBusAddress(path, bus_name=bus_name, interface=interface), "RestartUnit", "ss",
                          (unit, "replace"))
    try:
        with open_dbus_connection(bus="SYSTEM") as conn:
            reply = conn.send_and_get_reply(msg, timeout=timeout)
    except DBusErrorResponse as e:
        raise RuneError(f"systemd refused to restart {unit}: {e.name}: {' '.join(map(str, e.data))}") from None
    except (OSError, TimeoutError) as e:
        raise RuneError(f"systemd's D-Bus API is not reachable to restart {unit} ({e}); restart containerd "
                        "yourself") from None
    if reply.header.message_type.name == "error":
        raise RuneError(f"systemd refused to restart {unit}: {reply.body}")
    return str(reply.body[0])
