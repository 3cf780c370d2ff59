"""The Helm chart's component configs are real configs.

values.yaml carries each component's config as plain YAML (tracker.config, origin.config,
agent.config); the chart writes it as base.yaml and puts its generated wiring on top with
`extends:`. A typo in either would only show when a pod starts, so it is caught here.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig
from common import config
from origin.config import OriginConfig
from tracker.config import TrackerConfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "kraken-p2p"
COMPONENTS = {"tracker": TrackerConfig, "origin": OriginConfig, "agent": AgentConfig}

# Keys the templates generate (see values.yaml); values must not set them, or they are
# silently overridden.
GENERATED = {
    "tracker": ["server.host", "server.port", "redis.addr", "origins.members", "origins.replicas"],
    "origin": ["advertise", "server.host", "server.port", "ring.members", "ring.replicas", "trackers",
               "store.root", "torrent.listen_ip", "torrent.port"],
    "agent": ["server.host", "server.port", "trackers", "cache.root", "torrent.listen_ip", "torrent.port"],
}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_chart_yaml_is_helm3():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "kraken-p2p"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["version"]))
    assert "dependencies" not in chart


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_values_config_builds(values, component):
    data = values[component]["config"]
    assert isinstance(data, dict)
    config.build(COMPONENTS[component], data)


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_values_config_leaves_generated_keys_to_the_chart(values, component):
    data = values[component]["config"]
    for dotted in GENERATED[component]:
        node = data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            pytest.fail(f"{component}.config sets {dotted}, which the chart generates")


@pytest.mark.parametrize("component", ["agent", "origin"])
def test_agent_and_origin_keep_one_worker(values, component):
    server = values[component]["config"].get("server") or {}
    assert int((server.get("gunicorn") or {}).get("workers", 1)) == 1


def test_values_config_with_sample_wiring_builds(values):
    """What the pods load: values' config with wiring like the templates generate on top."""
    ring = {"members": ["kraken-origin-0.kraken-origin.ns.svc.cluster.local:7603"], "replicas": 2}
    tracker = ["kraken-tracker.ns.svc.cluster.local:7602"]
    wiring = {
        "tracker": {"server": {"host": "0.0.0.0", "port": 7602},
                    "redis": {"addr": "kraken-redis.ns.svc.cluster.local:6379"}, "origins": ring},
        "origin": {"advertise": ring["members"][0], "server": {"host": "0.0.0.0", "port": 7603},
                   "ring": ring, "trackers": tracker, "store": {"root": "/var/lib/kraken/origin"},
                   "torrent": {"listen_ip": "10.1.0.9", "port": 6881}},
        "agent": {"server": {"host": "0.0.0.0", "port": 7605}, "trackers": tracker,
                  "cache": {"root": "/var/cache/kraken/agent"},
                  "torrent": {"listen_ip": "10.0.0.7", "port": 6881}},
    }
    for component, cls in COMPONENTS.items():
        cfg = config.build(cls, config.merge(values[component]["config"], wiring[component]))
        assert cfg.server.host == "0.0.0.0"


def _unknown_keys(cls, data: dict, where: str = "") -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = []
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in fields:
            out.append(path)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            out += _unknown_keys(hints[key], value, path + ".")
    return out


def _generated_block(template: str) -> dict:
    """The YAML of the generated config file in a ConfigMap template (the block that starts
    with `extends: base.yaml`), with template actions stubbed out."""
    lines = template.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "extends: base.yaml")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        stripped = line.strip()
        if stripped.startswith("{{") and stripped.endswith("}}"):
            continue  # a control line ({{- if }}, {{- end }}) or an included list
        block.append(re.sub(r"\{\{.*?\}\}", "x", line[indent:]))
    return yaml.safe_load("\n".join(block))


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_generated_wiring_uses_known_keys(component):
    data = _generated_block((CHART / "templates" / f"{component}-configmap.yaml").read_text())
    assert data.pop("extends") == "base.yaml"
    assert data, "no generated keys found"
    assert _unknown_keys(COMPONENTS[component], data) == []
    generated = set()

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                generated.add(f"{prefix}{key}")

    walk(data)
    # listen_ip is added at pod start (pod or node IP); everything else is in the ConfigMap.
    assert generated | {"torrent.listen_ip"} == set(GENERATED[component]) | {"torrent.listen_ip"}
