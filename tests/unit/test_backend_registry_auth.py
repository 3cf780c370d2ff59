"""The registry backend's two auth modes against the real docker-registry (the CNCF distribution
registry, Debian's build): htpasswd basic auth (over plain HTTP and over TLS with a self-signed
certificate), and bearer tokens per the Docker token spec, issued by a small token server here
that signs ES256 JWTs with a key whose certificate the registry trusts (rootcertbundle)."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from common.backends import BackendError, NotFound, ReadOnly, create, keys
from common.digest import Digest
from tests import servers

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

USER, PASSWORD = "kraken", "s3cret-pass"
SERVICE, ISSUER = "kraken-test-registry", "kraken-test-token-issuer"


# Pushing test content upstream, with whatever auth the registry wants.
def push_image(base: str, repo: str, tag: str, auth=None, headers: dict | None = None, verify: bool = True):
    """Pushes a config blob, a layer and an OCI manifest tagged `tag`; returns
    (layer, layer digest, manifest, manifest digest)."""
    http = requests.Session()
    http.auth = auth
    http.headers.update(headers or {})
    # Per request, not Session.verify: REQUESTS_CA_BUNDLE in the environment would override that.
    http.request = functools.partial(http.request, verify=verify)

    def blob(data: bytes) -> Digest:
        return servers.push_blob(http, base, repo, data)

    layer, config = os.urandom(40_000), b'{"architecture":"amd64","os":"linux"}'
    layer_d, config_d = blob(layer), blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(config_d),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(layer_d),
                    "size": len(layer)}],
    }).encode()
    resp = http.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return layer, layer_d, manifest, Digest.of_bytes(manifest)


def check_reads(backend, repo: str, tag: str, layer: bytes, layer_d: Digest,
                manifest: bytes, manifest_d: Digest):
    assert backend.stat(repo, keys.blob(layer_d)) == len(layer)
    assert backend.get_bytes(repo, keys.blob(layer_d)) == layer
    assert backend.stat(repo, keys.blob(manifest_d)) == len(manifest)
    assert backend.get_bytes(repo, keys.blob(manifest_d)) == manifest
    assert backend.get_bytes(repo, keys.tag(repo, tag)) == str(manifest_d).encode()
    assert list(backend.list(keys.tag(repo, ""))) == [keys.tag(repo, tag)]
    with pytest.raises(NotFound):
        backend.stat(repo, keys.blob(Digest.of_bytes(b"missing")))
    with pytest.raises(NotFound):
        backend.get_bytes(repo, keys.tag(repo, "nope"))
    with pytest.raises(ReadOnly):
        backend.put_bytes(repo, keys.blob(layer_d), layer)


def check_refused(backend, repo: str, layer_d: Digest, tag: str):
    """Every operation fails fast with a BackendError that is not NotFound."""
    for op in (lambda: backend.stat(repo, keys.blob(layer_d)),
               lambda: backend.get_bytes(repo, keys.blob(layer_d)),
               lambda: backend.get_bytes(repo, keys.tag(repo, tag)),
               lambda: list(backend.list(keys.tag(repo, "")))):
        started = time.monotonic()
        with pytest.raises(BackendError) as err:
            op()
        assert not isinstance(err.value, NotFound), err.value
        assert "401" in str(err.value), err.value
        assert time.monotonic() - started < 5


# 1. Basic auth: docker-registry's htpasswd (bcrypt), over HTTP and over TLS.
@pytest.fixture(scope="module", params=["http", "https"])
def htpasswd_registry(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"htpasswd-{request.param}")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"{USER}:{servers.bcrypt_hash(PASSWORD)}\n")
    tls = servers.self_signed_cert(workdir, "tls")[:2] if request.param == "https" else None
    auth = {"htpasswd": {"realm": "kraken-test", "path": str(htpasswd)}}
    with servers.docker_registry(workdir / "registry", auth=auth, tls=tls) as (addr, _):
        yield request.param, addr


def test_basic_auth_reads_blobs_manifests_and_tags(htpasswd_registry):
    scheme, addr = htpasswd_registry
    base = f"{scheme}://{addr}"
    # The registry really wants credentials.
    resp = requests.get(f"{base}/v2/", verify=False, timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")

    repo, tag = "basic/app", "v1"
    layer, layer_d, manifest, manifest_d = push_image(base, repo, tag, auth=(USER, PASSWORD), verify=False)
    backend = create("registry", {"address": addr, "scheme": scheme, "username": USER, "password": PASSWORD,
                                  "verify_tls": False})
    check_reads(backend, repo, tag, layer, layer_d, manifest, manifest_d)

    for creds in ({"username": USER, "password": "wrong"}, {"username": "nobody", "password": PASSWORD}, {}):
        refused = create("registry", {"address": addr, "scheme": scheme, "verify_tls": False, "timeout": 10,
                                      **creds})
        check_refused(refused, repo, layer_d, tag)

    if scheme == "https":
        # Verification stays on by default: a self-signed upstream is an error, not a silent pass.
        strict = create("registry", {"address": addr, "scheme": scheme, "username": USER, "password": PASSWORD,
                                     "timeout": 10})
        with pytest.raises(BackendError) as err:
            strict.stat(repo, keys.blob(layer_d))
        assert not isinstance(err.value, NotFound)


# 2. Bearer tokens: docker-registry's token auth and a token server.
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The Docker token spec's authorization service: GET <realm>?service=..&scope=.. with basic
    credentials answers {"token": <JWT>}; the JWT is ES256 with the signing certificate in x5c."""

    def __init__(self, cert, key, users: dict[str, str]):
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.key, self.users = key, users
        self.requests: list[dict] = []  # (user, service, scopes) of each request, for the tests
        self.lock = threading.Lock()

    def issue(self, subject: str, service: str, scopes: list[str], ttl: int = 300) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in ("pull", "push")]
            if kind == "repository" and name and granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": service, "exp": now + ttl, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def user(self, authorization: str) -> str | None:
        if not authorization.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password and password else None

    @contextlib.contextmanager
    def serve(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user = outer.user(self.headers.get("Authorization", ""))
                with outer.lock:
                    outer.requests.append({"user": user, "service": query.get("service", [""])[0],
                                           "scopes": query.get("scope", [])})
                if url.path == "/garbage":  # a broken token service: 200 without JSON
                    return self.answer(200, None)
                if url.path != "/token":
                    return self.answer(404, {"details": "not found"})
                if user is None:
                    return self.answer(401, {"details": "bad credentials"},
                                       {"WWW-Authenticate": 'Basic realm="kraken-test-token"'})
                if query.get("service", [""])[0] != SERVICE:
                    return self.answer(400, {"details": "unknown service"})
                token = outer.issue(user, SERVICE, query.get("scope", []))
                self.answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def answer(self, status: int, body: dict | None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b"<html>oops</html>"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/token"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("token")
    cert_path, _, cert, key = servers.self_signed_cert(workdir, "token-signer", common_name="kraken-test-token")
    tokens = TokenServer(cert, key, {USER: PASSWORD})
    with tokens.serve() as realm:
        auth = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(cert_path)}}
        with servers.docker_registry(workdir / "registry", auth=auth) as (addr, _):
            yield addr, realm, tokens


def test_bearer_token_reads_blobs_manifests_and_tags(token_registry, tmp_path):
    addr, realm, tokens = token_registry
    base = f"http://{addr}"
    repo, tag = "token/app", "v1"

    # The registry challenges for a token, and neither basic credentials nor a forged token pass.
    resp = requests.get(f"{base}/v2/{repo}/tags/list", auth=(USER, PASSWORD), timeout=10)
    assert resp.status_code == 401, resp.text
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and f'realm="{realm}"' in challenge
    assert f'service="{SERVICE}"' in challenge and f'scope="repository:{repo}:pull"' in challenge
    _, _, forger_cert, forger_key = servers.self_signed_cert(tmp_path, "forger", common_name="kraken-test-token")
    forged = TokenServer(forger_cert, forger_key, {}).issue(USER, SERVICE, [f"repository:{repo}:pull"])
    resp = requests.get(f"{base}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert resp.status_code == 401, resp.text

    # Push with a push-scoped token, as a docker client would.
    resp = requests.get(realm, params={"service": SERVICE, "scope": f"repository:{repo}:pull,push"},
                        auth=(USER, PASSWORD), timeout=10)
    assert resp.status_code == 200, resp.text
    push_token = resp.json()["token"]
    layer, layer_d, manifest, manifest_d = push_image(base, repo, tag,
                                                      headers={"Authorization": f"Bearer {push_token}"})

    # The backend answers the challenge itself: fetches a pull token with its credentials, reuses it.
    del tokens.requests[:]
    backend = create("registry", {"address": addr, "scheme": "http", "username": USER, "password": PASSWORD})
    check_reads(backend, repo, tag, layer, layer_d, manifest, manifest_d)
    assert tokens.requests, "the backend never asked the token server"
    assert all(r["user"] == USER and r["service"] == SERVICE and r["scopes"] == [f"repository:{repo}:pull"]
               for r in tokens.requests), tokens.requests
    assert len(tokens.requests) == 1, "the pull token is cached per scope"

    # A pull token does not allow pushing (the registry enforces the token's access claim).
    pull_token = backend.tokens[f"repository:{repo}:pull"]
    resp = requests.post(f"{base}/v2/{repo}/blobs/uploads/", headers={"Authorization": f"Bearer {pull_token}"},
                         timeout=10)
    assert resp.status_code == 401, resp.text


def test_bearer_token_wrong_credentials_are_a_clear_error(token_registry):
    addr, realm, _ = token_registry
    base = f"http://{addr}"
    repo, tag = "token/refused", "v1"
    resp = requests.get(realm, params={"service": SERVICE, "scope": f"repository:{repo}:pull,push"},
                        auth=(USER, PASSWORD), timeout=10)
    layer_d = push_image(base, repo, tag, headers={"Authorization": f"Bearer {resp.json()['token']}"})[1]

    for creds in ({"username": USER, "password": "wrong"}, {"username": "nobody", "password": PASSWORD}, {}):
        backend = create("registry", {"address": addr, "scheme": "http", "timeout": 10, **creds})
        check_refused(backend, repo, layer_d, tag)
        assert not backend.tokens


def test_bearer_token_expired_token_is_renewed(token_registry):
    addr, realm, tokens = token_registry
    repo, tag = "token/renew", "v1"
    resp = requests.get(realm, params={"service": SERVICE, "scope": f"repository:{repo}:pull,push"},
                        auth=(USER, PASSWORD), timeout=10)
    layer, layer_d, _, manifest_d = push_image(f"http://{addr}", repo, tag,
                                                      headers={"Authorization": f"Bearer {resp.json()['token']}"})
    backend = create("registry", {"address": addr, "scheme": "http", "username": USER, "password": PASSWORD})
    scope = f"repository:{repo}:pull"
    # A cached token past its expiry (and the registry's 60 s leeway): the backend must log in again.
    backend.tokens[scope] = tokens.issue(USER, SERVICE, [scope], ttl=-120)
    assert backend.get_bytes(repo, keys.blob(layer_d)) == layer
    assert backend.get_bytes(repo, keys.tag(repo, tag)) == str(manifest_d).encode()


def test_bearer_token_service_without_json_is_a_backend_error(token_registry):
    addr, realm, _ = token_registry
    backend = create("registry", {"address": addr, "scheme": "http", "username": USER, "password": PASSWORD})
    challenge = requests.Response()
    challenge.status_code = 401
    challenge.headers["WWW-Authenticate"] = (f'Bearer realm="{realm.replace("/token", "/garbage")}",'
                                             f'service="{SERVICE}",scope="repository:x/y:pull"')
    with pytest.raises(BackendError, match="without a token"):
        backend._login(challenge, "repository:x/y:pull")
