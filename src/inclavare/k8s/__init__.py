"""Kubernetes integration: the SGX device plugin (`deviceplugin`), containerd's configuration for the node installer
(`containerd_config`), and a small client of the Kubernetes API (`apiserver`).

Nothing here is on rune's hot path: `rune create/start/run/delete` never import this package. Its third-party
packages (grpcio, protobuf, tomlkit, PyYAML) are hidden by the launchers' -I -S; importing this package adds the
standard site directories once when they are not otherwise visible, as inclavare.tee does for cryptography.
"""

import importlib.util
import sys


def _site_packages() -> None:
    if sys.flags.no_site and any(importlib.util.find_spec(m) is None for m in ("grpc", "tomlkit", "yaml")):
        import site

        site.main()


_site_packages()
