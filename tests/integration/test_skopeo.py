"""skopeo against kraken and the reference registry: a multi-arch OCI index pushed from an OCI
layout, each platform's manifest resolved through an agent, docker pulling its own platform."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import requests

from tests.integration import docker_env
from tests.integration.docker_env import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Target,
    pull_digest,
    token,
)
from tests.integration.images import add_file, busybox_rootfs_tar

# Fixtures (module-scoped dockerd, reference registry, skopeo; the parametrized target).
dockerd = docker_env.dockerd
reference_registry = docker_env.reference_registry
skopeo = docker_env.skopeo
target = docker_env.target


def write_oci_layout(path: Path, message: str) -> dict:
    """An OCI image layout whose tag `1` is an index of two manifests, linux/amd64 and
    linux/arm64, sharing the busybox layer and differing in their config's architecture (and
    in a one-line layer naming it). Returns the digests."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    def layer(tar_bytes: bytes) -> tuple[dict, str]:
        gz = gzip.compress(tar_bytes, mtime=0)
        return {"mediaType": OCI_LAYER_GZIP, **put(gz)}, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()

    base, base_diff = layer(busybox_rootfs_tar())
    out = {"manifests": {}, "layers": {}}
    entries = []
    for arch in ("amd64", "arm64"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            add_file(tar, "hello.txt", f"{message} ({arch})\n".encode())
        top, top_diff = layer(buf.getvalue())
        config = {
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/cat", "/hello.txt"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [base_diff, top_diff]},
            "history": [{"created_by": "kraken-p2p test: busybox"}, {"created_by": f"kraken-p2p test: {arch}"}],
        }
        cfg = {"mediaType": OCI_CONFIG, **put(json.dumps(config).encode())}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [base, top]}
        m = {"mediaType": OCI_MANIFEST, **put(json.dumps(manifest).encode())}
        entries.append({**m, "platform": {"architecture": arch, "os": "linux"}})
        out["manifests"][arch] = m["digest"]
        out["layers"][arch] = [base["digest"], top["digest"]]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    idx = put(json.dumps(index).encode())
    out["index"] = idx["digest"]
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (path / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, **idx, "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    }))
    return out


def test_multi_arch_oci_index_serves_each_platform(target: Target, skopeo, dockerd, tmp_path):
    message = f"multi-arch {token()}"
    layout = tmp_path / "layout"
    digests = write_oci_layout(layout, message)
    repo = f"test/multiarch-{token()}"
    skopeo.run("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{target.push}/{repo}:1")
    pull = target.pulls[-1]

    # The index itself, byte for byte, through the pull side.
    raw = skopeo.run("inspect", "--raw", "--tls-verify=false", f"docker://{pull}/{repo}:1").stdout
    index = json.loads(raw)
    assert index["mediaType"] == OCI_INDEX
    assert {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]} == digests["manifests"]
    resp = requests.get(f"http://{pull}/v2/{repo}/manifests/1", headers={"Accept": OCI_INDEX}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Docker-Content-Digest"] == digests["index"]
    assert resp.headers["Content-Type"].split(";")[0] == OCI_INDEX

    for arch in ("arm64", "amd64"):
        out = skopeo.run("inspect", "--tls-verify=false", f"docker://{pull}/{repo}:1",
                         global_args=("--override-arch", arch, "--override-os", "linux")).stdout
        info = json.loads(out)
        assert info["Architecture"] == arch, info
        # skopeo reports the index's digest; the platform shows in the config and layers.
        assert info["Digest"] == digests["index"], info
        assert info["Layers"] == digests["layers"][arch], (arch, info, digests)
        resp = requests.get(f"http://{pull}/v2/{repo}/manifests/{digests['manifests'][arch]}",
                            headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == digests["manifests"][arch]
        assert resp.headers["Content-Type"].split(";")[0] == OCI_MANIFEST

    # docker on this amd64 host picks the amd64 manifest and runs it.
    ref = f"{pull}/{repo}:1"
    dockerd.wipe()  # nothing local, not even a base layer: docker fetches every layer
    out = dockerd.run("pull", ref)
    assert out.stdout.count("Pull complete") == 2, out.stdout
    assert pull_digest(out.stdout) == digests["index"]
    arch = dockerd.run("image", "inspect", "--format", "{{.Architecture}}", ref).stdout.strip()
    assert arch == "amd64"
    assert dockerd.run("run", "--rm", "--network", "none", ref).stdout == f"{message} (amd64)\n"
    dockerd.wipe()
