"""The little of the Kubernetes API the node agents need: read a node, patch its status.

Credentials as client-go finds them: a kubeconfig file (its current context: server, certificate authority, client
certificate and key or a bearer token, inline `-data` or as files), else the pod's service account
(KUBERNETES_SERVICE_HOST/PORT, /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}). HTTPS only, the
server's certificate always verified.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
from urllib.parse import urlsplit

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(Exception):
    """The API server could not be reached or refused; str() is one sentence."""


def _escape(name: str) -> str:
    """A JSON pointer token (RFC 6901): sgx.intel.com/epc -> sgx.intel.com~1epc."""
    return name.replace("~", "~0").replace("/", "~1")


class ApiClient:
    def __init__(self, server: str, context: ssl.SSLContext, token: str | None = None) -> None:
        u = urlsplit(server)
        if u.scheme != "https" or not u.hostname:
            raise ApiError(f"the API server address {server!r} is not an https:// URL")
        self.host, self.port = u.hostname, u.port or 443
        self.context = context
        self.token = token

    @classmethod
    def from_kubeconfig(cls, path: str) -> ApiClient:
        import yaml

        try:
            with open(path) as f:
                config = yaml.safe_load(f)
            ctx_name = config["current-context"]
            ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
            cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
            user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        except (OSError, yaml.YAMLError, KeyError, StopIteration, TypeError) as e:
            raise ApiError(f"kubeconfig {path}: cannot read its current context ({e})") from None
        base = os.path.dirname(os.path.abspath(path))

        def data(obj: dict, key: str) -> bytes | None:
            if obj.get(f"{key}-data"):
                return base64.b64decode(obj[f"{key}-data"])
            if obj.get(key):
                with open(os.path.join(base, obj[key]), "rb") as f:
                    return f.read()
            return None

        context = ssl.create_default_context()
        ca = data(cluster, "certificate-authority")
        if ca:
            context.load_verify_locations(cadata=ca.decode())
        cert, key = data(user, "client-certificate"), data(user, "client-key")
        if cert and key:
            with tempfile.TemporaryDirectory() as tmp:  # ssl loads a certificate chain from files only
                c, k = os.path.join(tmp, "c"), os.path.join(tmp, "k")
                for p, blob in ((c, cert), (k, key)):
                    with open(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                        f.write(blob)
                context.load_cert_chain(c, k)
        token = user.get("token")
        return cls(cluster["server"], context, token)

    @classmethod
    def in_cluster(cls) -> ApiClient:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ApiError("not in a pod (KUBERNETES_SERVICE_HOST is not set) and no --kubeconfig given")
        try:
            with open(f"{SERVICE_ACCOUNT}/token") as f:
                token = f.read().strip()
        except OSError as e:
            raise ApiError(f"the service account token {SERVICE_ACCOUNT}/token: {e.strerror}") from None
        context = ssl.create_default_context(cafile=f"{SERVICE_ACCOUNT}/ca.crt")
        return cls(f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}", context, token)

    def request(self, method: str, path: str, body: object = None,
                content_type: str = "application/json") -> dict:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            raise ApiError(f"the API server at {self.host}:{self.port} is not reachable: {e}") from None
        finally:
            conn.close()
        if resp.status >= 300:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise ApiError(f"{method} {path}: {resp.status} {message}")
        return json.loads(text) if text else {}

    def node(self, name: str) -> dict:
        return self.request("GET", f"/api/v1/nodes/{name}")

    def set_node_extended_resource(self, node: str, resource: str, quantity: str) -> None:
        """Publish an extended resource in the node's status capacity (the kubelet copies it to allocatable)."""
        r = _escape(resource)
        patch = [{"op": "add", "path": f"/status/capacity/{r}", "value": quantity}]
        self.request("PATCH", f"/api/v1/nodes/{node}/status", patch, "application/json-patch+json")
