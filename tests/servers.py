"""Real third-party servers the tests start on loopback: moto's S3 API, the testfs file
server, Debian's docker-registry (the CNCF distribution registry). Each is a subprocess
stopped by PID."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import ipaddress
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from common.backends import create, keys
from common.devcluster import free_port

VENV_BIN = Path(sys.executable).parent


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20, verify: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited {proc.returncode}:\n{_tail(log)}")
        try:
            requests.get(url, timeout=1, verify=verify)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{url}: no answer after {timeout} s:\n{_tail(log)}") from None
            time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return ""


@contextlib.contextmanager
def process(args: list[str], url: str, log: Path, env: dict | None = None, verify: bool = True):
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(url, proc, log, verify=verify)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def moto_s3(workdir: Path):
    """moto's standalone server: a real S3 API over HTTP (in memory)."""
    port = free_port()
    binary = VENV_BIN / "moto_server"
    with process([str(binary), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/moto-api/",
                 workdir / "moto.log") as proc:
        yield f"http://127.0.0.1:{port}", proc


@contextlib.contextmanager
def testfs(root: Path, port: int = 0):
    port = port or free_port()
    args = [sys.executable, "-m", "common.backends.testfs", "--root", str(root), "--port", str(port)]
    with process(args, f"http://127.0.0.1:{port}/list/", root.parent / f"testfs-{port}.log") as proc:
        yield f"127.0.0.1:{port}", proc


class RestartableTestfs:
    """A testfs process on a fixed port, so a test can stop it (the storage backend is
    down) and start it again at the same address."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.ctx = None

    def start(self) -> None:
        self.ctx = testfs(self.root, self.port)
        self.ctx.__enter__()

    def stop(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            self.ctx = None

    @property
    def client(self):
        return create("http", {"url": f"http://127.0.0.1:{self.port}", "timeout": 5})

    def has(self, digest) -> bool:
        return (self.root / keys.blob(digest)).exists()


@contextlib.contextmanager
def docker_registry(workdir: Path, port: int = 0, auth: dict | None = None,
                    tls: tuple[Path, Path] | None = None):
    """Debian's docker-registry with filesystem storage, deletes disabled; no auth unless `auth`
    gives the config's auth section (e.g. {"htpasswd": {...}} or {"token": {...}}), plain HTTP
    unless `tls` gives (certificate, key) PEM files."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed; `make test` installs it"
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.yml"
    http = f"addr: '127.0.0.1:{port}'"
    if tls:
        http += f", tls: {{certificate: {json.dumps(str(tls[0]))}, key: {json.dumps(str(tls[1]))}}}"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, delete: {{enabled: false}}}}\n"
        f"http: {{{http}}}\n"
        + (f"auth: {json.dumps(auth)}\n" if auth else "")  # JSON is YAML
    )
    scheme = "https" if tls else "http"
    with process([binary, "serve", str(config)], f"{scheme}://127.0.0.1:{port}/v2/", workdir / "registry.log",
                 verify=not tls) as proc:
        yield f"127.0.0.1:{port}", proc


def bcrypt_hash(password: str, cost: int = 5) -> str:
    """A bcrypt hash ($2b$, as docker-registry's htpasswd auth wants) from the system's libcrypt
    (libxcrypt), so the tests need neither the bcrypt module nor apache2-utils."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", cost, None, 0)
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RuntimeError("libcrypt cannot make bcrypt hashes")
    return hashed.decode()


def self_signed_cert(workdir: Path, name: str, common_name: str = "127.0.0.1"):
    """An EC P-256 key and a self-signed certificate for 127.0.0.1, written as <name>.crt and
    <name>.key (PEM). Returns (cert path, key path, certificate, private key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / f"{name}.crt", workdir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert, key


def push_blob(http, base: str, repo: str, data: bytes):
    """Pushes one blob to a registry at `base` (http://host:port) with POST then PUT
    ?digest=, the form docker-registry 2.8 accepts; `http` is requests or a Session."""
    from common.digest import Digest

    digest = Digest.of_bytes(data)
    resp = http.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10)
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    location = location if location.startswith("http") else f"{base}{location}"
    sep = "&" if "?" in location else "?"
    resp = http.put(f"{location}{sep}digest={digest}", data=data,
                    headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return digest
