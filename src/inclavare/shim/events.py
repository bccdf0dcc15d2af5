"""Events to containerd, in the order they happen: one thread publishes a queue of events with ttrpc
`containerd.services.events.ttrpc.v1.Events/Forward` on $TTRPC_ADDRESS (reconnecting when containerd restarts), or,
without that address, through the publish binary (`containerd --address A publish --topic T --namespace N`, the
event's Any on stdin). Each event is tried 5 times with a growing pause, as runc's shim does.
"""

from __future__ import annotations

import _queue
import os
import time

from inclavare.shim import api, sync
from inclavare.shim.protobuf import Message
from inclavare.shim.ttrpc import Client

TYPE_CHECKING = False  # collections.abc would cost the shim a millisecond at every start
if TYPE_CHECKING:
    from collections.abc import Callable

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
ATTEMPTS = 5


class Publisher:
    def __init__(self, namespace: str, ttrpc_address: str, publish_binary: str, address: str,
                 spawn: Callable | None, log: Callable[[str], None]) -> None:
        self.namespace = namespace
        self.ttrpc_address = ttrpc_address.removeprefix("unix://")
        self.publish_binary = publish_binary
        self.address = address
        self.spawn = spawn
        self.log = log
        self.queue: _queue.SimpleQueue = _queue.SimpleQueue()
        self.client: Client | None = None
        self.pending = 0
        self.lock = sync.Lock()
        self.idle = sync.Event()
        self.idle.set()
        sync.spawn(self._run)

    def publish(self, event: Message) -> None:
        with self.lock:
            self.pending += 1
            self.idle.clear()
        self.queue.put((event, time.time_ns()))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was sent (or given up)."""
        deadline = time.monotonic() + timeout
        while not self.idle.wait(0.05):
            if time.monotonic() > deadline:
                return False
        return True

    def _run(self) -> None:
        while True:
            event, stamp = self.queue.get()
            for attempt in range(ATTEMPTS):
                try:
                    self._send(event, stamp)
                    break
                except OSError as e:
                    if self.client is not None:
                        self.client.close()
                        self.client = None
                    if attempt == ATTEMPTS - 1:
                        self.log(f"failed to publish {event.TOPIC} after {ATTEMPTS} attempts: {e}")
                    else:
                        time.sleep(0.1 * 2 ** attempt)
                except Exception as e:  # noqa: BLE001 - a refused event is logged, the next one is tried
                    self.log(f"containerd refused the {event.TOPIC} event: {e}")
                    break
            with self.lock:
                self.pending -= 1
                if not self.pending:
                    self.idle.set()

    def _send(self, event: Message, stamp: int) -> None:
        any_ = api.event_any(event)
        if self.ttrpc_address:
            if self.client is None:
                self.client = Client(self.ttrpc_address, timeout=10)
            env = api.Envelope(timestamp=api.Timestamp.from_ns(stamp), namespace=self.namespace,
                               topic=event.TOPIC, event=any_)
            self.client.call(EVENTS_SERVICE, "Forward", api.ForwardRequest(envelope=env).encode())
            return
        self._publish_binary(event.TOPIC, any_.encode())

    def _publish_binary(self, topic: str, data: bytes) -> None:
        if not self.publish_binary or self.spawn is None:
            raise OSError("neither TTRPC_ADDRESS nor -publish-binary is known")
        r, w = os.pipe()
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        try:
            cmd = self.spawn([self.publish_binary, "--address", self.address, "publish", "--topic", topic,
                              "--namespace", self.namespace], (r, null, null))
        finally:
            os.close(r)
            os.close(null)
        try:
            os.write(w, data)
        finally:
            os.close(w)
        status = cmd.wait(30)
        if status:
            raise OSError(f"{self.publish_binary} publish exited with {status}")
