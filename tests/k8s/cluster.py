"""A real one-node Kubernetes cluster for the tests and bench/k8s.py, started privately and stopped by PID.

What runs, all built from the Kubernetes project's own Go modules by `make kube` and cached under build/:
etcd (Debian's etcd-server package, unpacked), kube-apiserver, kube-controller-manager, kube-scheduler, and the
kubelet, which talks CRI to containerd 1.6 (Debian's, started here on private sockets and directories with the
runtime handlers a test asks for). Pods choose their runtime through a RuntimeClass exactly as on a cluster; the
scheduler places them by the node's resources (the device plugin's among them) and RuntimeClass node selectors;
the controller manager gives namespaces their service accounts and runs the DaemonSet and Deployment controllers.

What is special about this node, and why:
- The whole cluster lives in a network namespace of its own, a test host made here, whose only interface is its
  loopback, carrying the node's address too (NODE_IP, from the documentation range: the kubelet refuses a
  127.x node address, and the API server reaches the kubelet at the node's address for logs and exec). Nothing listens
  on the machine's own network, ports never collide with anyone's, and no packet leaves that namespace. Daemons
  enter it with nsenter --net only, so they share the machine's mount namespace (the kubelet's volumes must be
  seen by containerd).
- Every pod uses the host network, which is that namespace. The CRI plugin needs a CNI configuration to report NetworkReady (without it the
  node stays NotReady); the one written here names only the loopback plugin, which is never called for a
  host-network pod. No bridge, no address and no traffic leave this machine.
- The kubelet's device-plugin directory is fixed by the kubelet at /var/lib/kubelet/device-plugins (it ignores
  --root-dir there): only one of these clusters runs at a time on a machine, under a lock of its own.
- The kubelet insists on some kernel settings (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1)
  and would write them to the shared host. It runs in a mount namespace of its own in which those /proc/sys files
  are bind-mounted read-only from files holding the values it expects (protectKernelDefaults: it only checks);
  its root directory is a shared mount, so the volumes it mounts there are seen by containerd and the containers.
- cgroups: the pods' QoS hierarchy lives under a cgroup root of its own, removed at the end.
- No image is pulled: the busybox and pause images are built locally and imported into containerd.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from tests.engines import daemons as d
from tests.k8s.pki import PKI

REPO = d.REPO
NAMESPACE = "k8s.io"  # containerd's namespace for CRI
LOCK = "/run/lock/inclavare-test-kubelet.lock"
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
           "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000"}
CGROUP = Path("/sys/fs/cgroup")
NODE_IP = "192.0.2.10"  # RFC 5737 TEST-NET-1, only ever on the loopback inside the cluster's namespace


# ---- the binaries ------------------------------------------------------------------------------------------------


def _go_mod_version(gomod: Path, module: str) -> str:
    m = re.search(rf"^\s*{re.escape(module)} (v\S+)", gomod.read_text(), re.M)
    if not m:
        raise RuntimeError(f"{gomod}: no version of {module}")
    return m.group(1)


def _sum(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Tools:
    """Where `make kube` puts the binaries (the same paths as the Makefile's)."""

    def __init__(self) -> None:
        self.kube_version = _go_mod_version(REPO / "tools/kubernetes/go.mod", "k8s.io/kubernetes")
        self.crictl_version = _go_mod_version(REPO / "tools/cri-tools/go.mod", "sigs.k8s.io/cri-tools")
        kube = REPO / "build/kubernetes" / f"{self.kube_version}-{_sum(REPO / 'tools/kubernetes/go.sum')}"
        self.apiserver = kube / "kube-apiserver"
        self.controller_manager = kube / "kube-controller-manager"
        self.scheduler = kube / "kube-scheduler"
        self.kubelet = kube / "kubelet"
        self.kubectl = kube / "kubectl"
        self.crictl = (REPO / "build/cri-tools" / f"{self.crictl_version}-{_sum(REPO / 'tools/cri-tools/go.sum')}"
                       / "crictl")
        self.etcd = REPO / "build/etcd/etcd"

    def all(self) -> list[Path]:
        return [self.apiserver, self.controller_manager, self.scheduler, self.kubelet, self.kubectl, self.crictl,
                self.etcd]


def ensure_tools() -> tuple[Tools | None, str]:
    """Build what is missing (`make kube`; minutes on a fresh machine, nothing once cached); (tools, why not)."""
    if os.geteuid() != 0:
        return None, "a kubelet needs root"
    if not shutil.which("go"):
        return None, "Go is not installed: the kubelet is built from its Go module"
    p = subprocess.run(["make", "-s", "kube"], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"make kube failed:\n{(p.stdout + p.stderr)[-3000:]}")
    tools = Tools()
    missing = [str(t) for t in tools.all() if not t.exists()]
    if missing:
        raise RuntimeError(f"make kube did not build {missing}")
    return tools, ""


# ---- processes ---------------------------------------------------------------------------------------------------


class Proc:
    """One daemon of ours: started with its log in base, stopped by its PID."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.base = base
        self.log = base / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.wrap: list[str] = []

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.wrap, *cmd], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=env)
        atexit.register(self.stop)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check, timeout: float = 90) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            return check()

        d.wait_for(ready, timeout, self.name, self.log)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is not None:
            d.stop_pid(self.proc.pid, timeout=timeout)
            self.proc = None


# ---- containerd with the CRI runtime handlers of a test ----------------------------------------------------------


class Containerd(d.Containerd):
    """containerd 1.6 for a kubelet. handlers: CRI runtime handler name -> {runtime_type, options...}; `runc` is
    the engine tests' (runc with Root <base>/cri-runc)."""

    def __init__(self, base: Path, handlers: dict[str, dict]) -> None:
        # containerd 1.6 resolves io.containerd.rune.v2 to containerd-shim-rune-v2 on its PATH (it takes no
        # runtime_path for the sandbox): this tree's bin/ first
        env = dict(os.environ, PATH=f"{REPO / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
        super().__init__(base, env=env)
        self.handlers = handlers

    def config(self) -> str:
        """The engine tests' configuration (its handler `runc` included), and the handlers of this cluster."""
        lines = [super().config().rstrip("\n")]
        for name, h in self.handlers.items():
            if name == "runc":
                continue
            p = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]'
            lines += [f"    {p}", f'      runtime_type = "{h["runtime_type"]}"']
            if h.get("pod_annotations"):
                lines.append(f"      pod_annotations = {json.dumps(h['pod_annotations'])}")
            if h.get("options"):
                lines.append(f"      [{p[1:-1]}.options]")
                lines += [f"        {k} = {json.dumps(v)}" for k, v in h["options"].items()]
        return "\n".join(lines) + "\n"

    def start(self) -> Containerd:
        conf = self.base / "cni" / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (self.base / "cni" / "bin").mkdir(exist_ok=True)
        # only so that the runtime reports NetworkReady: every pod here is a host-network pod, never set up by CNI
        (conf / "10-hostnetwork-only.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": "hostnetwork-only", "plugins": [{"type": "loopback"}]}))
        super().start()
        return self


def runc_handler(base: Path, name: str, binary: str) -> dict:
    """A handler of containerd's runc shim that calls binary (runc, or rune as a drop-in) with a root of its own."""
    return {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": binary, "Root": str(base / f"cri-{name}")}}


def shim_handler(config_path: str) -> dict:
    """A handler of containerd-shim-rune-v2 (as `rune install containerd` writes it), found on containerd's PATH."""
    return {"runtime_type": "io.containerd.rune.v2", "pod_annotations": ["enclave.*"],
            "options": {"ConfigPath": config_path}}


# ---- the control plane -------------------------------------------------------------------------------------------


class Cluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and one kubelet, all under base."""

    def __init__(self, base: Path, tools: Tools, handlers: dict[str, dict]) -> None:
        self.base = base
        self.tools = tools
        self.node = f"rune-k8s-{uuid.uuid4().hex[:6]}"
        self.pki = PKI(base / "pki")
        self.containerd = Containerd(base / "containerd", handlers)
        self.etcd = Proc("etcd", base)
        self.apiserver = Proc("kube-apiserver", base)
        self.controller_manager = Proc("kube-controller-manager", base)
        self.scheduler = Proc("kube-scheduler", base)
        self.kubelet = Proc("kubelet", base)
        self.kubelet_root = base / "kubelet"
        self.cgroup_root = f"rune-k8s-{uuid.uuid4().hex[:8]}"
        self.netns = f"rune-k8s-{uuid.uuid4().hex[:8]}"
        self.wrap = ["nsenter", f"--net=/run/netns/{self.netns}", "--"]
        for p in (self.containerd, self.etcd, self.apiserver, self.controller_manager, self.scheduler, self.kubelet):
            p.wrap = self.wrap
        self.api_port = 6443
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.admin = self.pki.kubeconfig("admin", self.server, "rune-test-admin", ("system:masters",))
        self._lock: int | None = None
        self._shared_root = False
        self._netns_made = False
        self._made_dirs: list[Path] = []
        self.runtime_roots: dict[str, Path] = {}  # handler -> the runtime's state directory for namespace k8s.io

    # -- start and stop --

    def start(self) -> Cluster:
        self._lock = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # one test kubelet per machine: the device-plugin dir is fixed
        atexit.register(self.stop)
        self._make_netns()
        self.containerd.start()
        self._start_etcd()
        self._start_apiserver()
        self._start_controllers()
        self.start_kubelet()
        self.wait_node_ready()
        # the service account controller gives each namespace its "default" account, which pods need
        d.wait_for(lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0, 60,
                   "the default service account", self.controller_manager.log)
        return self

    def _make_netns(self) -> None:
        d.run(["ip", "netns", "add", self.netns])
        self._netns_made = True
        ip = ["ip", "-n", self.netns]
        d.run([*ip, "addr", "add", f"{NODE_IP}/32", "dev", "lo"])
        d.run([*ip, "link", "set", "lo", "up"])

    def _start_etcd(self) -> None:
        self.etcd_url = "http://127.0.0.1:2379"
        peer_url = "http://127.0.0.1:2380"
        self.etcd.spawn([str(self.tools.etcd), "--name", "test", "--data-dir", str(self.base / "etcd"),
                         "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                         "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                         "--initial-cluster", f"test={peer_url}", "--log-level", "warn"])

    def _start_apiserver(self) -> None:
        p = self.pki
        crt, key = p.issue("apiserver", "kube-apiserver", server=True,
                           hosts=("127.0.0.1", NODE_IP, "localhost", "kubernetes", "kubernetes.default", "10.96.0.1"))
        kcrt, kkey = p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        self.apiserver.spawn([
            str(self.tools.apiserver), "--etcd-servers", self.etcd_url, "--bind-address", "127.0.0.1",
            "--advertise-address", NODE_IP, "--secure-port", str(self.api_port),
            "--tls-cert-file", str(crt), "--tls-private-key-file", str(key), "--client-ca-file", str(p.ca),
            "--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", str(p.sa_pub),
            "--service-account-signing-key-file", str(p.sa_key), "--service-cluster-ip-range", "10.96.0.0/24",
            "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
            "--kubelet-client-certificate", str(kcrt), "--kubelet-client-key", str(kkey),
            "--kubelet-certificate-authority", str(p.ca), "--kubelet-preferred-address-types", "InternalIP",
            "--allow-privileged=true", "--profiling=false", "--endpoint-reconciler-type", "none"])
        self.apiserver.wait_ready(lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 120)

    def _start_controllers(self) -> None:
        p = self.pki
        cm = p.kubeconfig("controller-manager", self.server, "system:kube-controller-manager")
        self.controller_manager.spawn([
            str(self.tools.controller_manager), "--kubeconfig", str(cm), "--authentication-kubeconfig", str(cm),
            "--authorization-kubeconfig", str(cm), "--bind-address", "127.0.0.1", "--secure-port", "10257",
            "--leader-elect=false", "--use-service-account-credentials", "--root-ca-file", str(p.ca),
            "--service-account-private-key-file", str(p.sa_key), "--controllers", "*,-nodeipam,-service-lb-controller"])
        sched = p.kubeconfig("scheduler", self.server, "system:kube-scheduler")
        self.scheduler.spawn([
            str(self.tools.scheduler), "--kubeconfig", str(sched), "--authentication-kubeconfig", str(sched),
            "--authorization-kubeconfig", str(sched), "--bind-address", "127.0.0.1", "--secure-port", "10259",
            "--leader-elect=false"])

    def _kubelet_config(self) -> Path:
        crt, key = self.pki.issue("kubelet-serving", self.node, server=True, hosts=(NODE_IP, "127.0.0.1", self.node))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0, "healthzPort": 0,
            "tlsCertFile": str(crt), "tlsPrivateKeyFile": str(key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.pki.ca)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd.sock}",
            "cgroupDriver": "cgroupfs", "cgroupRoot": "/" + self.cgroup_root, "cgroupsPerQOS": True,
            "failSwapOn": False, "protectKernelDefaults": True, "oomScoreAdj": 0,
            "podLogsDir": str(self.base / "pod-logs"), "staticPodPath": "", "resolvConf": "/etc/resolv.conf",
            # this node's disk and memory are other people's too: evict only when nearly nothing is left
            "evictionHard": {"memory.available": "64Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "syncFrequency": "5s", "fileCheckFrequency": "5s", "nodeStatusUpdateFrequency": "5s",
            "serializeImagePulls": False, "failCgroupV1": False,
        }
        path = self.base / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def _prepare_kubelet_host(self) -> None:
        """The cgroup root, the shared root directory and the sysctl files the kubelet's namespace shows."""
        for hierarchy in CGROUP.iterdir():
            if hierarchy.is_symlink() or not hierarchy.is_dir():
                continue
            cg = hierarchy / self.cgroup_root
            cg.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):  # a new v1 cpuset is empty: give it the parent's
                if (cg / f).exists() and not (cg / f).read_text().strip():
                    (cg / f).write_text((hierarchy / f).read_text())
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        if not self._shared_root:
            d.run(["mount", "--bind", str(self.kubelet_root), str(self.kubelet_root)])
            d.run(["mount", "--make-shared", str(self.kubelet_root)])
            self._shared_root = True
        sysctl = self.base / "sysctl"
        sysctl.mkdir(exist_ok=True)
        for name, value in SYSCTLS.items():
            (sysctl / name.replace("/", ".")).write_text(value + "\n")
        if not DEVICE_PLUGINS.is_dir():
            self._made_dirs = [p for p in (DEVICE_PLUGINS.parent, DEVICE_PLUGINS) if not p.exists()]
            DEVICE_PLUGINS.mkdir(parents=True)

    def start_kubelet(self) -> None:
        self._prepare_kubelet_host()
        kubeconfig = self.pki.kubeconfig("kubelet", self.server, f"system:node:{self.node}", ("system:nodes",))
        binds = " && ".join(f"mount --bind -o ro {self.base}/sysctl/{n.replace('/', '.')} /proc/sys/{n}"
                            for n in SYSCTLS)
        # --propagation unchanged keeps the root directory's shared mount shared with the host's
        self.kubelet.spawn(["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c",
                            f'{binds} && exec "$@"', "kubelet",
                            str(self.tools.kubelet), "--config", str(self._kubelet_config()),
                            "--kubeconfig", str(kubeconfig), "--root-dir", str(self.kubelet_root),
                            "--hostname-override", self.node, "--node-ip", NODE_IP, "--v", "2"])

    def stop_kubelet(self) -> None:
        self.kubelet.stop(timeout=30)

    def stop(self) -> None:
        if self._lock is None:
            return
        try:
            self._delete_all_pods()
        finally:
            self.kubelet.stop(timeout=30)
            self.scheduler.stop()
            self.controller_manager.stop()
            self.apiserver.stop()
            self.etcd.stop()
            self.containerd.stop()
            d.unmount_under(self.kubelet_root)
            if self._shared_root:
                subprocess.run(["umount", "-l", str(self.kubelet_root)], capture_output=True)
                self._shared_root = False
            self._remove_cgroups()
            self._remove_kubelet_files()
            if self._netns_made:
                subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
                self._netns_made = False
            os.close(self._lock)
            self._lock = None

    def _delete_all_pods(self) -> None:
        if not (self.apiserver.alive() and self.kubelet.alive()):
            return
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period", "1", "--timeout", "60s",
                     check=False, timeout=90)

    def _remove_kubelet_files(self) -> None:
        """What our kubelet left in the fixed device-plugin directory (its socket and checkpoint)."""
        for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
            try:
                (DEVICE_PLUGINS / name).unlink()
            except FileNotFoundError:
                pass
        for p in reversed(self._made_dirs):
            try:
                p.rmdir()
            except OSError:
                pass

    def _remove_cgroups(self) -> None:
        """Kill what is still in the cgroup root of ours (containers whose shim was stopped mid-way), remove it."""
        import signal

        for _ in range(50):
            pids = {int(pid) for h in CGROUP.iterdir() if not h.is_symlink() and (h / self.cgroup_root).is_dir()
                    for f in (h / self.cgroup_root).rglob("cgroup.procs") for pid in f.read_text().split()}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for hierarchy in CGROUP.iterdir():
            top = hierarchy / self.cgroup_root
            if hierarchy.is_symlink() or not top.is_dir():
                continue
            for cg in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    cg.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass

    # -- the API --

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [*self.wrap, str(self.tools.kubectl), "--kubeconfig", str(self.admin), *args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def apply(self, objects: dict | list[dict] | str) -> None:
        text = objects if isinstance(objects, str) else json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects if isinstance(objects, list) else [objects]})
        self.kubectl("apply", "-f", "-", input=text)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)

    def node_object(self) -> dict:
        return json.loads(self.kubectl("get", "node", self.node, "-o", "json").stdout)

    def wait_node_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            if not self.kubelet.alive():
                raise RuntimeError(f"the kubelet exited:\n{self.kubelet.log.read_text()[-3000:]}")
            p = self.kubectl("get", "node", self.node, "-o", "json", check=False)
            if p.returncode != 0:
                return False
            conds = json.loads(p.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        d.wait_for(ready, timeout, f"node {self.node}", self.kubelet.log)

    def wait_pod(self, name: str, until, timeout: float = 120, namespace: str = "default") -> dict:
        """Poll the pod until until(pod) is true; the pod. A pod that can never get there fails with its status."""
        deadline = time.monotonic() + timeout
        pod: dict = {}
        while time.monotonic() < deadline:
            p = self.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
            if p.returncode == 0:
                pod = json.loads(p.stdout)
                if until(pod):
                    return pod
            time.sleep(0.1)
        events = self.events(name, namespace)
        raise AssertionError(f"pod {name}: timed out; status {json.dumps(pod.get('status'), indent=1)}\n{events}")

    def events(self, name: str, namespace: str = "default") -> str:
        return self.kubectl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
                            check=False).stdout

    def wait_event(self, name: str, text: str, timeout: float = 60, namespace: str = "default") -> str:
        """The events of object name, once one of them contains text."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(name, namespace)
            if text in events:
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"no event of {name} says {text!r}:\n{events}")
            time.sleep(0.2)

    def crictl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        ep = f"unix://{self.containerd.sock}"
        return d.run([*self.wrap, str(self.tools.crictl), "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s",
                      *args], check=check, timeout=timeout)


# ---- pods --------------------------------------------------------------------------------------------------------


def running(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and all(
        c.get("ready") for c in pod["status"].get("containerStatuses", [{}]))


def phase(*phases: str):
    return lambda pod: pod.get("status", {}).get("phase") in phases


def pod(name: str, command: list[str], runtime_class: str | None = None, image: str = d.IMAGE, env: dict | None = None,
        resources: dict | None = None, **spec) -> dict:
    """A host-network pod of one container from a local image (never pulled)."""
    container = {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if resources:
        container["resources"] = resources
    body = {"hostNetwork": True, "dnsPolicy": "Default", "terminationGracePeriodSeconds": 2,
            "containers": [container], **spec}
    if runtime_class:
        body["runtimeClassName"] = runtime_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": body}


def runtime_class(name: str, handler: str, node_selector: dict | None = None) -> dict:
    rc = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}
    if node_selector:
        rc["scheduling"] = {"nodeSelector": node_selector}
    return rc
