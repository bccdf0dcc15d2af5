"""What `rune create` adds for an enclave container, on the host side, before the container's processes exist.

runtime/create.py calls `prepare` only when config.json names an enclave type (a plain dict lookup there keeps this
package off the plain-container path), then `attach` once the init's Launch exists:
  - prepare: the enclave configuration (config.detect), the intelSgx host probe with its devices, cgroup rules and
    host directories, and the ENCLAVE_* variables stripped from process.env;
  - attach: state["enclave"] for state.json, and the init-runelet plugged into the init's seams (pre_pivot,
    pre_ready, executor).
"""

from __future__ import annotations

import os

from inclavare.enclave import config as enclave_config
from inclavare.enclave.config import INTEL_SGX, EnclaveConfig, user_namespace
from inclavare.enclave.runelet import Runelet


class Prepared:
    def __init__(self, cfg: EnclaveConfig, config: dict) -> None:
        self.cfg = cfg
        self.config = config
        self.merge: tuple[str, str | None] | None = None  # (state dir, sim dir): see created

    def attach(self, ctx, state: dict, state_dir: str) -> None:  # noqa: ANN001 - runtime.init.Launch
        sim_dir = os.environ.get("INCLAVARE_SIM_DIR") or None
        if self.cfg.type == "sim" and os.path.exists(os.path.join(ctx.rootfs, ".inclavare", "enclave", "manifest.json")):
            # a signed sim enclave's root is read-only whatever root.readonly says: renaming a measured file's
            # directory (or adding a file next to it) after the launch check would bypass the measurement;
            # payloads write to the tmpfs mounts (/dev/shm) instead
            self.config.setdefault("root", {})["readonly"] = True
        state["enclave"] = dict(self.cfg.record(), agent="agent.sock", sim_dir=sim_dir)
        from inclavare.enclave import (
            sim_runtime,  # light: what the launch check needs is imported by the runelet
        )

        signed = self.cfg.type == "sim" and sim_runtime.is_signed(ctx.rootfs, self.config)
        runelet = Runelet(self.cfg, state_dir, self.config, sim_dir, signed)
        if signed and user_namespace(self.config):
            self.merge = (state_dir, sim_dir)
        runelet.rootfs = ctx.rootfs
        ctx.pre_namespaces = runelet.prepare_host
        ctx.pre_pivot = runelet.load
        ctx.pre_ready = runelet.init
        ctx.executor = runelet

    def created(self) -> None:
        """Once the container is created, on the host: a launch in a user namespace could not write the sim
        measurement cache (the platform directory is out of its reach); what it learnt is merged here."""
        if self.merge is not None:
            from inclavare.enclave import sim_runtime

            try:
                sim_runtime.merge_pending(*self.merge)
            except Exception as e:  # noqa: BLE001 - a cache is never needed: the container is created
                from inclavare.enclave import epm_client

                epm_client.debug(f"sim launch in a user namespace: the measurement cache is not updated ({e})")


def prepare(config: dict) -> Prepared | None:
    """None when config.json names no enclave type (rune then behaves as runc); RuneError for a bad setting."""
    cfg = enclave_config.detect(config)
    if cfg is None:
        return None
    if cfg.type == INTEL_SGX:
        from inclavare.enclave import probe

        probe.apply(config, probe.probe_sgx())
    enclave_config.strip_env(config)
    return Prepared(cfg, config)
