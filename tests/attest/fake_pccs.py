"""A PCCS on the loopback for tests: Intel's PCS v4 API (/sgx/certification/v4/pckcrl, tcb, qe/identity, rootcacrl)
serving one collateral (dcap-qvl's JSON layout), recording the paths asked for. Stopped when the block ends."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any


class FakePccs:
    def __init__(self, collateral: dict[str, Any]) -> None:
        self.c = collateral
        self.paths: list[str] = []

    def __enter__(self) -> FakePccs:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                fake.paths.append(self.path)
                c = fake.c
                path = urllib.parse.urlsplit(self.path).path
                quote = urllib.parse.quote
                if path.endswith("/pckcrl"):
                    self._send(bytes.fromhex(c["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": quote(c["pck_crl_issuer_chain"])})
                elif path.endswith("/tcb"):
                    body = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
                    self._send(body.encode(), {"TCB-Info-Issuer-Chain": quote(c["tcb_info_issuer_chain"])})
                elif path.endswith("/qe/identity"):
                    body = '{"enclaveIdentity":' + c["qe_identity"] + ',"signature":"' + c["qe_identity_signature"] + '"}'
                    self._send(body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": quote(c["qe_identity_issuer_chain"])})
                elif path.endswith("/rootcacrl"):
                    self._send(c["root_ca_crl"].encode(), {})  # a PCCS answers the root CA CRL in hex
                else:
                    self.send_error(404)

            def _send(self, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        json.dumps(self.paths)
