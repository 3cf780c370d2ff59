"""skopeo against kraken and the reference registry: a multi-arch OCI index pushed from an OCI
layout, each platform's manifest resolved through an agent, docker pulling its own platform."""

from __future__ import annotations

import hashlib
import json

import requests

from tests.integration.docker_env import (  # noqa: F401 - fixtures
    OCI_INDEX,
    OCI_MANIFEST,
    Target,
    dockerd,
    pull_digest,
    reference_registry,
    skopeo,
    target,
    token,
    write_oci_layout,
)


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
    out = dockerd.run("pull", ref)
    assert pull_digest(out.stdout) == digests["index"]
    arch = dockerd.run("image", "inspect", "--format", "{{.Architecture}}", ref).stdout.strip()
    assert arch == "amd64"
    assert dockerd.run("run", "--rm", "--network", "none", ref).stdout == f"{message} (amd64)\n"
    dockerd.wipe()
