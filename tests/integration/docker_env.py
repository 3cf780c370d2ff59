"""Real registry clients for the tests and benchmarks: a private dockerd, the reference
registry (CNCF distribution, Debian's `docker-registry`) and skopeo. Test images are built
in tests/integration/images.py.

Every dockerd here is isolated: its own data root, exec root, pidfile and unix socket under a
short temporary directory, no bridge, no iptables, and HTTP(S)_PROXY pointing at the discard
port on loopback, so a request that would leave the machine fails at once. Go's proxy logic
never proxies loopback addresses, which is where every registry in the tests lives. Under
`make test` the whole suite also runs in a private network namespace (tests/isolated.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
import requests

from common.devcluster import free_port
from common.procstat import stat_fields

# A proxy nothing listens on: port 9 (discard) on loopback.
DEAD_PROXY = "http://127.0.0.1:9"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class ToolError(AssertionError):
    """A client command failed; the message carries its output (and dockerd's log)."""


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
    # A missing tool is a failure, not a skip: CI must run the real-client tests.
    assert path, f"{name} is not installed (Debian package {package}); `make test` installs it"
    return path


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names `text` (a unique temporary directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and text in _proc_cmdline(int(entry)):
            pids.append(int(entry))
    return pids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _state(pid: int) -> str:
    fields = stat_fields(pid)
    return fields[0] if fields else "X"


def _unmount_under(root: Path) -> list[str]:
    """Unmounts everything mounted below root, deepest first. Returns what stayed mounted."""
    prefix = str(root).rstrip("/") + "/"

    def mounted() -> list[str]:
        points = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix) or point == str(root):
                points.append(point)
        return sorted(set(points), key=len, reverse=True)

    for point in mounted():
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return mounted()


class Dockerd:
    """One private docker daemon. `start()` raises with dockerd's log if it does not come up."""

    def __init__(self, root: Path | None = None):
        # Unix socket paths are limited to 108 bytes, and containerd's sits two levels below
        # the exec root: keep the directory short.
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))
        self.sock = self.root / "docker.sock"
        self.log_path = self.root / "dockerd.log"
        self.popen: subprocess.Popen | None = None
        self.containerd: subprocess.Popen | None = None
        self.cli = os.environ.get("DOCKER_CLI") or ("/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK)
                                                   else require_binary("docker", "docker.io"))
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.sock}",
            # An empty client config: no credential helpers that could try to reach anywhere.
            "DOCKER_CONFIG": str(self.root / "cli"),
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
            self.env.pop(key, None)

    def _start_containerd(self, env: dict, timeout: float) -> str:
        """Our own containerd: dockerd would otherwise use a system containerd whenever
        /run/containerd/containerd.sock answers, and share it with the host's docker."""
        binary = require_binary("containerd", "containerd")
        base = self.root / "ctd"
        base.mkdir(parents=True, exist_ok=True)
        sock = base / "containerd.sock"
        config = base / "containerd.toml"
        config.write_text(
            'version = 2\n'
            f'root = "{self.root / "data" / "containerd"}"\n'
            f'state = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{sock}"\n'
            f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
            f'[debug]\n  address = "{base / "debug.sock"}"\n  level = "info"\n'
            '[metrics]\n  address = ""\n'
        )
        with open(self.root / "containerd.log", "ab") as log:
            self.containerd = subprocess.Popen([binary, "--config", str(config)], stdout=log,
                                               stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                self._fail("containerd did not start")
            time.sleep(0.05)
        return str(sock)

    def start(self, timeout: float = 60) -> Dockerd:
        dockerd = require_binary("dockerd", "docker.io")
        (self.root / "cli").mkdir(parents=True, exist_ok=True)
        (self.root / "cli" / "config.json").write_text("{}\n")
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        # Registries on 127.0.0.0/8 are never proxied (Go skips loopback); anything else
        # would go to the dead proxy and fail rather than leave the machine.
        env.update({k: DEAD_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
        containerd = self._start_containerd(env, timeout)
        args = [
            dockerd,
            "--containerd", containerd, "--containerd-namespace", "moby",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "-H", f"unix://{self.sock}",
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false", "--userland-proxy=false",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--cgroup-parent", f"kraken-test-{self.root.name}",
            "--max-concurrent-downloads", "6", "--max-concurrent-uploads", "6",
        ]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                self._fail(f"dockerd exited with {self.popen.returncode}")
            if self.sock.exists():
                probe = subprocess.run([self.cli, "version", "--format", "{{.Server.Version}}"],
                                       env=self.env, capture_output=True, text=True, timeout=30, check=False)
                if probe.returncode == 0:
                    return self
            if time.monotonic() > deadline:
                self._fail(f"dockerd did not answer within {timeout}s")
            time.sleep(0.2)

    def _fail(self, what: str):
        logs = f"dockerd log:\n{_tail(self.log_path)}\ncontainerd log:\n{_tail(self.root / 'containerd.log', 20)}"
        self.stop()
        raise ToolError(f"{what}; {logs}")

    def run(self, *args: str, timeout: float = 300, check: bool = True, input: bytes | None = None,
            ) -> subprocess.CompletedProcess:
        """Runs the docker client against this daemon; output as text."""
        t0 = time.monotonic()
        proc = subprocess.run([self.cli, *args], env=self.env, capture_output=True, timeout=timeout,
                              input=input, check=False)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        out.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
        if check and proc.returncode != 0:
            raise ToolError(f"`docker {' '.join(args)}` exited {proc.returncode}\nstdout:\n{out.stdout[-3000:]}"
                            f"\nstderr:\n{out.stderr[-3000:]}\ndockerd log:\n{_tail(self.log_path, 30)}")
        return out

    def wipe(self) -> None:
        """Removes every container and image from this private daemon, so the next pull is cold."""
        ids = self.run("ps", "-aq").stdout.split()
        if ids:
            self.run("rm", "-f", *ids)
        # Children before parents; a few rounds settle images that share layers and tags.
        for _ in range(5):
            images = list(dict.fromkeys(self.run("images", "-aq").stdout.split()))
            if not images:
                return
            self.run("rmi", "-f", *images, check=False)
        raise ToolError(f"images left after wipe: {self.run('images', '-a').stdout}")

    def stop(self) -> None:
        """Stops dockerd, its containerd and shims (by PID), unmounts and removes the directory."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                ids = subprocess.run([self.cli, "ps", "-q"], env=self.env, capture_output=True, text=True,
                                     timeout=30, check=False).stdout.split()
                if ids:
                    subprocess.run([self.cli, "rm", "-f", *ids], env=self.env, capture_output=True, timeout=60,
                                   check=False)
            except (OSError, subprocess.SubprocessError):
                pass
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        for proc in (self.containerd,):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        # Shims (re-parented away from containerd) name our directory in their command lines
        # (-address <root>/ctd/containerd.sock), as would anything else we started.
        leftovers = _pids_mentioning(str(self.root))
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in _wait_gone(leftovers, 10):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(leftovers, 5)
        stuck = _unmount_under(self.root)
        if not stuck:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ReferenceRegistry:
    """CNCF distribution (`docker-registry`) on 127.0.0.1: filesystem storage, no auth, no delete."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.addr = f"127.0.0.1:{free_port()}"
        self.popen: subprocess.Popen | None = None
        self.log_path = self.root / "registry.log"

    def start(self, timeout: float = 30) -> ReferenceRegistry:
        binary = require_binary("docker-registry", "docker-registry")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": False}, "cache": {}},
            "http": {"addr": self.addr, "secret": uuid.uuid4().hex, "headers": {}},
        }, indent=1))
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise ToolError(f"docker-registry exited; its log:\n{_tail(self.log_path)}")
            try:
                if requests.get(f"http://{self.addr}/v2/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ToolError(f"docker-registry did not answer; its log:\n{_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class Skopeo:
    """skopeo with its own policy and registries config, never contacting a default registry."""

    def __init__(self, root: Path):
        self.binary = require_binary("skopeo", "skopeo")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.policy = self.root / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries = self.root / "registries.conf"
        self.registries.write_text("unqualified-search-registries = []\n")
        self.env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        self.env.update({k: DEAD_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
        self.env["REGISTRIES_CONFIG_PATH"] = str(self.registries)

    def run(self, *args: str, global_args: tuple[str, ...] = (), timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.binary, "--policy", str(self.policy), "--registries-conf", str(self.registries),
               *global_args, *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise ToolError(f"`{' '.join(cmd)}` exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
                            f"\nstderr:\n{proc.stderr[-3000:]}")
        return proc


# Fixtures. Test modules bind these names (see test_docker.py).

@pytest.fixture(scope="module")
def dockerd():
    # A dockerd that does not come up is a failure with its log (Dockerd.start raises).
    d = Dockerd().start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def reference_registry(tmp_path_factory):
    r = ReferenceRegistry(tmp_path_factory.mktemp("reference")).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def skopeo(tmp_path_factory):
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


# Where the tests push and pull: the reference registry (push and pull at one address) or
# kraken (push to the proxy, pull through the agents' registry ports).

@dataclass
class Target:
    kind: str
    push: str
    pulls: list[str]
    cluster: object = None

    def agent_servers(self) -> list[str]:
        return [a["server"] for a in self.cluster.agents]


def kraken_target(cluster) -> Target:
    # Until the proxy and the agents' registry ports exist this fails (it must not skip).
    proxy = getattr(cluster, "proxy", None)
    assert proxy, "the dev cluster has no proxy (cluster.proxy is empty)"
    pulls = [a.get("registry") for a in cluster.agents]
    assert all(pulls), f"agents without a registry port: {cluster.agents}"
    return Target("kraken", proxy, pulls, cluster)


@pytest.fixture(params=["reference", "kraken"])
def target(request, reference_registry) -> Target:
    if request.param == "reference":
        return Target("reference", reference_registry.addr, [reference_registry.addr])
    return kraken_target(request.getfixturevalue("cluster"))


def push_digest(output: str) -> str:
    """The manifest digest `docker push` prints (`<tag>: digest: sha256:... size: N`)."""
    for line in output.splitlines():
        if "digest: sha256:" in line:
            return line.split("digest: ", 1)[1].split()[0]
    raise AssertionError(f"no digest in docker push output:\n{output}")


def pull_digest(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Digest: "):
            return line.split()[1]
    raise AssertionError(f"no digest in docker pull output:\n{output}")


def token() -> str:
    return uuid.uuid4().hex[:8]
