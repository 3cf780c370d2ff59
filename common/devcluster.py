"""A whole kraken-p2p cluster on this machine: redis-server, trackers, origins,
build-index, the proxy and agents, each a real gunicorn process, each origin and agent on
its own loopback address. Used by `krakenctl devcluster`, the integration tests and the
benchmarks."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from common.config import merge
from common.procstat import stat_fields

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# Central services, placed where the trackers are (one address, one port each).
CENTRAL = ("buildindex", "proxy")


# Ports come from below the kernel's ephemeral range, which outgoing connections and port-0
# binds draw from: a port found free there could be taken as the source port of some
# process's connection before its server binds it (a CI run lost an origin that way:
# "Address already in use" on 127.0.0.2 for all five of gunicorn's tries). Below the range
# only a listener takes a port, and a listener already there fails the bind check here.
# _GIVEN keeps this process from handing one out twice: found free and closed at once, it
# could come again before its server starts.
_GIVEN: set[int] = set()
_PICK = random.Random()
PORT_FLOOR = 10000


@functools.cache
def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, outside the ephemeral range, and not one this process has
    handed out before."""
    top = max(_ephemeral_floor(), PORT_FLOOR + 1000)
    for _ in range(1000):
        port = _PICK.randrange(PORT_FLOOR, top)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {PORT_FLOOR}-{top - 1}")


class LoopbackHosts:
    """Where each process runs: here, every origin and agent on its own loopback address.
    The benchmarks swap in network namespaces with shaped links (tests/bench/netns.py)."""

    def place(self, kind: str, index: int) -> tuple[str, list[str]]:
        """(address, command prefix) for the index-th process of a kind."""
        if kind == "origin":
            return f"127.0.0.{2 + index}", []
        if kind == "agent":
            return f"127.0.0.{20 + index}", []
        return "127.0.0.1", []

    def port(self, host: str) -> int:
        return free_port(host)


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    addr: str = ""
    popen: subprocess.Popen | None = None
    extra: dict = field(default_factory=dict)

    def start(self, env: dict) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        # Own process group: stop, pause and kill reach the gunicorn workers as well.
        self.popen = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                      env=env, start_new_session=True)
        out.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        # Workers whose master went first.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cluster:
    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        agents: int = 3,
        origins: int = 3,
        replicas: int = 2,
        trackers: int = 1,
        build_index: int = 1,
        proxy: bool = True,
        backend: str = "fs",
        tracker_config: dict | None = None,
        origin_config: dict | None = None,
        agent_config: dict | None = None,
        build_index_config: dict | None = None,
        proxy_config: dict | None = None,
        log_level: str = "INFO",
        hosts=None,
    ):
        self.workdir = Path(workdir).resolve()
        self.n_agents, self.n_origins, self.n_trackers = agents, origins, trackers
        self.replicas = replicas
        if proxy and build_index < 1:
            raise ValueError("the proxy needs build-index: start at least one, or no proxy")
        self.n_build_index = build_index
        self.with_proxy = proxy
        # The storage backend origins and build-index write back to and refresh from: "fs"
        # (a directory in the workdir, shared by all, like a NAS) or "none" (local disks
        # only). Other backends come through origin_config / build_index_config `backends`.
        if backend not in ("fs", "none"):
            raise ValueError(f"backend must be 'fs' or 'none', not {backend!r}")
        self.backend = backend
        self.overrides = {"tracker": tracker_config or {}, "origin": origin_config or {},
                          "agent": agent_config or {}, "buildindex": build_index_config or {},
                          "proxy": proxy_config or {}}
        self.log_level = log_level
        self.hosts = hosts or LoopbackHosts()
        self.procs: dict[str, Proc] = {}
        self.redis_addr = ""
        self.trackers: list[str] = []
        self.origins: list[str] = []
        self.build_index: list[str] = []
        self.proxy: str | None = None
        self.agents: list[dict] = []

    # Layout.
    def _write_config(self, name: str, data: dict) -> Path:
        path = self.workdir / "config" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _component(self, kind: str, index: int, data: dict) -> None:
        host, prefix = self._place(kind, index)
        name = f"{kind}-{index}"
        data = merge(data, self.overrides[kind])
        data.setdefault("log", {"level": self.log_level})
        cfg = self._write_config(name, data)
        addr = f"{data['server']['host']}:{data['server']['port']}"
        self.procs[name] = Proc(name, [*prefix, sys.executable, "-m", kind, "--config", str(cfg)],
                                self.workdir / "logs" / f"{name}.log", addr)

    def _place(self, kind: str, index: int) -> tuple[str, list[str]]:
        return self.hosts.place("tracker" if kind in CENTRAL else kind, index)

    def _addr(self, kind: str, index: int) -> tuple[str, int]:
        host, _ = self._place(kind, index)
        return host, self.hosts.port(host)

    def plan(self) -> None:
        """Chooses addresses and writes every config file."""
        rhost, rport = self._addr("redis", 0)
        self.redis_addr = f"{rhost}:{rport}"
        trackers = [self._addr("tracker", i) for i in range(self.n_trackers)]
        origins = [self._addr("origin", i) for i in range(self.n_origins)]
        build_index = [self._addr("buildindex", i) for i in range(self.n_build_index)]
        proxy = self._addr("proxy", 0) if self.with_proxy else None
        agents = [self._addr("agent", i) for i in range(self.n_agents)]
        registries = [(h, self.hosts.port(h)) for h, _ in agents]
        self.trackers = [f"{h}:{p}" for h, p in trackers]
        self.origins = [f"{h}:{p}" for h, p in origins]
        self.build_index = [f"{h}:{p}" for h, p in build_index]
        self.proxy = f"{proxy[0]}:{proxy[1]}" if proxy else None
        self.agents = [{"server": f"{h}:{p}", "registry": f"{rh}:{rp}"}
                       for (h, p), (rh, rp) in zip(agents, registries)]
        ring = {"members": self.origins, "replicas": self.replicas}
        backends = ([{"namespace": ".*", "backend": "fs", "fs": {"root": str(self.workdir / "backend")}}]
                    if self.backend == "fs" else [])
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        _, prefix = self.hosts.place("redis", 0)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.procs["redis"] = Proc(
            "redis",
            [*prefix, server, "--bind", rhost, "--port", str(rport), "--save", "", "--appendonly", "no",
             "--dir", str(redis_dir),
             # Protected mode refuses every client not on loopback; an emulated host in a
             # private network namespace is one.
             "--protected-mode", "yes" if rhost.startswith("127.") else "no"],
            self.workdir / "logs" / "redis.log", self.redis_addr,
        )
        for i, (h, p) in enumerate(trackers):
            self._component("tracker", i, {
                "server": {"host": h, "port": p}, "redis": {"addr": self.redis_addr}, "origins": ring,
            })
        for i, (h, p) in enumerate(origins):
            self._component("origin", i, {
                "server": {"host": h, "port": p}, "ring": ring, "trackers": self.trackers,
                "store": {"root": str(self.workdir / f"origin-{i}")},
                "torrent": {"listen_ip": h, "port": self.hosts.port(h)},
                "backends": backends,
            })
        for i, (h, p) in enumerate(build_index):
            self._component("buildindex", i, {
                "server": {"host": h, "port": p}, "redis": {"addr": self.redis_addr}, "origins": ring,
                "backends": backends, "state_dir": str(self.workdir / f"buildindex-{i}"),
            })
        if proxy:
            self._component("proxy", 0, {
                "server": {"host": proxy[0], "port": proxy[1]}, "origins": ring,
                "build_index": self.build_index,
                "uploads": {"dir": str(self.workdir / "proxy-uploads")},
            })
        for i, ((h, p), (rh, rp)) in enumerate(zip(agents, registries)):
            self._component("agent", i, {
                "server": {"host": h, "port": p}, "registry": {"host": rh, "port": rp},
                "trackers": self.trackers, "build_index": self.build_index,
                "cache": {"root": str(self.workdir / f"agent-{i}")},
                "torrent": {"listen_ip": h, "port": self.hosts.port(h)},
            })

    # Life cycle.
    def start(self, timeout: float = 90) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.procs:
            self.plan()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            for proc in self.procs.values():
                proc.start(env)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        info = self.info()
        (self.workdir / "cluster.json").write_text(json.dumps(info, indent=2) + "\n")
        return info

    def wait_healthy(self, timeout: float, names=None) -> None:
        deadline = time.monotonic() + timeout
        for name in names or self.procs:
            proc = self.procs[name]
            while True:
                if not proc.alive():
                    raise RuntimeError(f"{name} exited; see {proc.log_path}:\n{_tail(proc.log_path)}")
                if self._healthy(proc):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not healthy after {timeout}s; see {proc.log_path}")
                time.sleep(0.1)

    @staticmethod
    def _healthy(proc: Proc) -> bool:
        if proc.name == "redis":
            host, port = proc.addr.split(":")
            try:
                with socket.create_connection((host, int(port)), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith(b"+PONG")
            except OSError:
                return False
        try:
            return requests.get(f"http://{proc.addr}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def info(self) -> dict:
        return {"redis": self.redis_addr, "trackers": self.trackers, "origins": self.origins,
                "build_index": self.build_index, "proxy": self.proxy, "agents": self.agents,
                # Not in API.md's shape: where the fs storage backend keeps blobs and tags.
                "backend": str(self.workdir / "backend") if self.backend == "fs" else None}

    def stop(self) -> None:
        """Stops every process. A stop interrupted half way (Ctrl-C, a benchmark's SIGTERM)
        kills that process and goes on with the rest, then raises the interruption."""
        interrupted: BaseException | None = None
        for proc in reversed(list(self.procs.values())):
            try:
                proc.stop()
            except BaseException as exc:  # noqa: BLE001 - raised once every process is down
                interrupted = interrupted or exc
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    proc.signal(signal.SIGKILL)
        if interrupted is not None:
            raise interrupted

    def restart(self, name: str, timeout: float = 60) -> None:
        proc = self.procs[name]
        proc.stop()
        proc.start({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.wait_healthy(timeout, [name])

    def pause(self, name: str) -> None:
        """Stops a component's processes and returns once the kernel shows every one of
        them stopped: SIGSTOP is delivered asynchronously, and a worker still running for
        a few milliseconds after kill() returned could serve a request the caller expects
        no answer to (a test's agent got part of a blob from an origin "paused" that way)."""
        proc = self.procs[name]
        proc.signal(signal.SIGSTOP)
        if proc.popen is None:
            return
        deadline = time.monotonic() + 5
        while not _group_stopped(proc.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.002)

    def resume(self, name: str) -> None:
        self.procs[name].signal(signal.SIGCONT)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_stopped(pgid: int) -> bool:
    """Whether every process in process group `pgid` is stopped (Linux /proc; True where
    there is no /proc to ask)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        fields = stat_fields(pid)  # None: gone meanwhile
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("T", "t", "Z", "X"):
            return False
    return True


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
