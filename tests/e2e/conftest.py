"""The engine tests' private daemons (containerd, dockerd, containerd with containerd-shim-rune-v2), for the whole
journeys that run through an engine."""

from tests.engines.conftest import containerd, dockerd, engine_base, image, shim_containerd  # noqa: F401
