"""A real, API-only Kubernetes control plane for the integration tests.

etcd (Debian's `etcd`, package etcd-server) and the upstream kube-apiserver and
kube-controller-manager (v1.32, from the archive in ../shared/k8s, checked
against its SHA256SUMS and unpacked once into a cache outside the repository)
on free loopback ports, with a PKI made here. No kubelet and no scheduler: pods
stay Pending unless a test writes their status, as the sandbox tests do. The
controller-manager runs only what an API-only cluster needs: the garbage
collector (owner references), namespace deletion, and the ServiceAccount
controller (a pod can only be created where the `default` ServiceAccount
exists). It is what `kubectl` talks to on a real cluster: CEL rules in the CRDs,
structural schemas and pruning, defaulting, real 409/422 bodies.

    with ControlPlane(workdir) as cp:
        cp.kubeconfig(path, namespace), cp.url, cp.ssl_context(), cp.request(...)

Every process gets its own session and dies with the process that started it
(PR_SET_PDEATHSIG), so neither Ctrl-C nor a killed pytest leaves one behind.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import fcntl
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers import REPO_ROOT

K8S_VERSION = "v1.32.0-beta.0"
SHARED_K8S = Path(os.environ.get("ASCEND_MLOPS_K8S_DIR", REPO_ROOT.parent / "shared" / "k8s"))
ARCHIVE = SHARED_K8S / f"bin-{K8S_VERSION}-linux-amd64.tar.xz"
CACHE = Path(os.environ.get("ASCEND_MLOPS_APISERVER_CACHE", "/var/tmp/ascend-mlops-apiserver"))
BINARIES = ("kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.96.0.0/16"
# The controllers an API-only cluster needs (no nodes: no scheduler, ReplicaSet, Deployment, Job or HPA
# controller, so what a test writes into a Deployment's or an HPA's status stays as it wrote it).
CONTROLLERS = ("garbagecollector", "namespace", "serviceaccount", "serviceaccount-token")
START_TIMEOUT = 90.0


class Unavailable(Exception):
    """What this machine lacks to run the control plane (the archive, etcd)."""


# --------------------------------------------------------------------------- binaries
def etcd_binary() -> Path:
    found = shutil.which("etcd")
    if found is None:
        raise Unavailable("no etcd on PATH (Debian package etcd-server)")
    return Path(found)


def expected_sha256(archive: Path) -> str:
    sums = archive.parent / "SHA256SUMS"
    if not sums.is_file():
        raise Unavailable(f"no {sums} to check {archive.name} against")
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == archive.name:
            return parts[0]
    raise Unavailable(f"{sums} has no line for {archive.name}")


def binaries(archive: Path = ARCHIVE, cache: Path = CACHE) -> Path:
    """The directory holding kube-apiserver and kube-controller-manager from `archive`, unpacked once."""
    if not archive.is_file():
        raise Unavailable(f"no Kubernetes binaries archive at {archive}")
    want = expected_sha256(archive)
    target = cache / f"{K8S_VERSION}-{want[:16]}"
    stamp = target / ".unpacked"
    if stamp.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session unpacking the same archive
        if stamp.is_file():
            return target
        digest = hashlib.sha256()
        with archive.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != want:
            raise AssertionError(f"SHA256 of {archive} is {digest.hexdigest()}, SHA256SUMS says {want}")
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
        try:
            with tarfile.open(archive, "r:xz") as tar:
                for member in tar:
                    if member.name in BINARIES and member.isfile():
                        tar.extract(member, staging, filter="data")
            for name in BINARIES:
                if not (staging / name).is_file():
                    raise AssertionError(f"{archive} has no {name}")
                (staging / name).chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)  # a half-made one (no stamp)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        stamp.write_text(f"{K8S_VERSION} from {archive} (sha256 {want})\n")
    return target


# --------------------------------------------------------------------------- PKI
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class PKI:
    """A CA, the apiserver's serving certificate, client certificates and the ServiceAccount key pair."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        self._not_before, self._not_after = now, now + datetime.timedelta(days=2)
        self._ca_key = _key()
        self._ca = (
            x509.CertificateBuilder()
            .subject_name(_name("ascend-mlops-test-ca"))
            .issuer_name(_name("ascend-mlops-test-ca"))
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = directory / "ca.crt"
        self.ca.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        sans: list[x509.GeneralName] = [
            x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        ]
        sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1"))]
        self.apiserver = self._sign("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
        self.admin = self._sign("admin", _name("kubernetes-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
        self.controller_manager = self._sign(
            "controller-manager", _name("system:kube-controller-manager"), ExtendedKeyUsageOID.CLIENT_AUTH
        )
        sa_key = _key()
        self.sa_key = directory / "sa.key"
        _write_key(self.sa_key, sa_key)
        self.sa_pub = directory / "sa.pub"
        self.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _sign(
        self, name: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None = None
    ) -> tuple[Path, Path]:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        crt, keyfile = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(keyfile, key)
        return crt, keyfile


def kubeconfig_text(server: str, ca: Path, cert: Path, key: Path, user: str, namespace: str | None = None) -> str:
    context: dict[str, str] = {"cluster": "ascend-mlops-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ascend-mlops-test", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode()}}],
        "contexts": [{"name": f"{user}@ascend-mlops-test", "context": context}],
        "current-context": f"{user}@ascend-mlops-test",
    }
    return yaml.safe_dump(config, sort_keys=False)


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # between fork and exec: only a system call
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LONGRUNNING = re.compile(r"^apiserver_longrunning_requests\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


DATA_PREFIX = "ascend-mlops-etcd-"


def _sweep_stale_data_dirs(base: Path) -> None:
    """etcd data dirs of sessions that were killed (their owner lock is free): on tmpfs they hold memory."""
    for directory in base.glob(f"{DATA_PREFIX}*"):
        owner = directory / ".owner"
        try:
            with owner.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            continue  # in use by a running session (or not ours to remove)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class ControlPlane:
    """etcd, kube-apiserver and kube-controller-manager on loopback; `start()`, then `stop()` kills all three."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None, etcd: Path | None = None) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir or binaries()
        self.etcd = etcd or etcd_binary()
        self.logs = workdir / "logs"
        self.port = 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.pki: PKI | None = None
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self._etcd_data: Path | None = None
        self._owner: IO[str] | None = None  # flock'ed while the data dir is in use
        self.started_in = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self, crds: Sequence[dict[str, Any]] = ()) -> None:
        """Up and ready (the `crds` Established before the controllers start), or nothing left running."""
        began = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = pki = PKI(self.workdir / "pki")
            etcd_port, peer_port, self.port, kcm_port = free_port(), free_port(), free_port(), free_port()
            # tmpfs when there is one: etcd fsyncs every write, which is most of its cost on a disk.
            shm = Path("/dev/shm")
            base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
            _sweep_stale_data_dirs(base)
            self._etcd_data = Path(tempfile.mkdtemp(prefix=DATA_PREFIX, dir=base))
            self._owner = (self._etcd_data / ".owner").open("w")
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            peer_url = f"http://127.0.0.1:{peer_port}"
            self._spawn("etcd", [
                str(self.etcd), "--name=test", f"--data-dir={self._etcd_data / 'etcd'}",
                f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}", "--initial-cluster-state=new",
                "--logger=zap", "--log-outputs=stderr", "--log-level=warn",
            ])
            self._spawn("kube-apiserver", [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.apiserver[0]}", f"--tls-private-key-file={pki.apiserver[1]}",
                f"--client-ca-file={pki.ca}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # 127.0.0.1 is no valid Endpoints address: the default reconciler would complain every 10 s.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true", "--profiling=false", "--v=0",
            ])
            self.admin_kubeconfig.write_text(kubeconfig_text(self.url, pki.ca, *pki.admin, user="admin"))
            self._wait("kube-apiserver", lambda: self._get_raw("/readyz") == "ok", "kube-apiserver /readyz ok")
            for crd in crds:
                self.apply(crd)
            for crd in crds:
                self.wait_established(crd["metadata"]["name"])
            kcm_kubeconfig = self.workdir / "controller-manager.kubeconfig"
            kcm_kubeconfig.write_text(kubeconfig_text(self.url, pki.ca, *pki.controller_manager, user="system:kube-controller-manager"))
            self._spawn("kube-controller-manager", [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}", f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca}",
                "--use-service-account-credentials=true",
                f"--controllers={','.join(CONTROLLERS)}", "--leader-elect=false",
                "--profiling=false", "--v=0",
            ])
            self._wait(
                "kube-controller-manager",
                lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                "the ServiceAccount default/default (the controller-manager is running)",
            )
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM in reverse order, SIGKILL whatever is left after 10 s; the etcd data goes."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self.processes.clear()
        if self._etcd_data is not None:
            shutil.rmtree(self._etcd_data, ignore_errors=True)
            self._etcd_data = None
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> None:
        # etcd reads every ETCD_* variable as a flag (and exits on one that repeats a command-line flag).
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_") and k not in ("KUBECONFIG",)}
        log = (self.logs / f"{name}.log").open("wb")
        with log:
            self.processes[name] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait(self, name: str, probe: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc_name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{proc_name} exited ({process.returncode}) while waiting for {what}:\n{self.log_tail(proc_name)}")
            with contextlib.suppress(OSError, ApiError, http.client.HTTPException):
                if probe():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.log_tail(name)}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ a small synchronous client
    def ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(str(self.pki.admin[0]), str(self.pki.admin[1]))
        return context

    def kubeconfig(self, path: Path, namespace: str | None = None, server: str | None = None) -> Path:
        """The admin's kubeconfig (`server`: another address of this apiserver, such as a proxy on loopback)."""
        assert self.pki is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kubeconfig_text(server or self.url, self.pki.ca, *self.pki.admin, user="admin", namespace=namespace))
        return path

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(), timeout=30)
        try:
            headers = {"Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
            if response.status >= 400:
                with contextlib.suppress(ValueError):
                    raise ApiError(response.status, json.loads(text))
                raise ApiError(response.status, text)
            return json.loads(text) if text and response.getheader("Content-Type", "").startswith("application/json") else text
        finally:
            connection.close()

    def _get_raw(self, path: str) -> str:
        return str(self.request("GET", path))

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return dict(self.request("GET", path))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def namespaced_watches(self, resources: Collection[str]) -> int:
        """How many watch requests on these resources (plurals), in one namespace each, are open now."""
        count = 0
        for line in self._get_raw("/metrics").splitlines():
            match = _LONGRUNNING.match(line)
            if match is None:
                continue
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("resource") in resources and labels.get("scope") == "namespace" and labels.get("verb") == "WATCH":
                count += int(float(match["value"]))
        return count

    def apply(self, crd: dict[str, Any]) -> None:
        """Create a CRD, or replace the one of that name."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        live = self.get(f"{path}/{crd['metadata']['name']}")
        if live is None:
            self.request("POST", path, crd)
        else:
            body = json.loads(json.dumps(crd))
            body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            self.request("PUT", f"{path}/{crd['metadata']['name']}", body)

    def wait_established(self, name: str, timeout: float = 30.0) -> None:
        def established() -> bool:
            crd = self.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
            return any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (crd.get("status") or {}).get("conditions") or [])

        self._wait("kube-apiserver", established, f"CRD {name} Established", timeout)


def load_crds(*directories: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for directory in directories:
        for path in sorted(directory.glob("*.y*ml")):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
    return docs

