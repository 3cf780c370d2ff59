"""The Helm chart's component configs are real configs.

values.yaml carries each component's config as plain YAML (tracker.config, origin.config,
agent.config, buildindex.config, proxy.config); the chart writes it as base.yaml and puts its
generated wiring on top with `extends:`. A typo in either would only show when a pod starts,
so it is caught here. There is no helm binary here: the templates are checked by reading them
(values they reference exist, blocks balance, generated keys are config keys), not rendered.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig
from buildindex.config import BuildIndexConfig
from common import config
from origin.config import OriginConfig
from proxy.config import ProxyConfig
from tracker.config import TrackerConfig

CHART = Path(__file__).resolve().parents[2] / "helm" / "kraken-p2p"
COMPONENTS = {"tracker": TrackerConfig, "origin": OriginConfig, "agent": AgentConfig,
              "buildindex": BuildIndexConfig, "proxy": ProxyConfig}

# Keys the templates generate (see values.yaml); values must not set them, or they are
# silently overridden.
GENERATED = {
    # server.trusted_proxies only with nginx.enabled (the component is behind the sidecar).
    "tracker": ["server.host", "server.port", "server.trusted_proxies", "redis.addr", "origins.members",
                "origins.replicas"],
    "origin": ["advertise", "server.host", "server.port", "ring.members", "ring.replicas", "trackers",
               "store.root", "torrent.listen_ip", "torrent.port"],
    "agent": ["server.host", "server.port", "registry.host", "registry.port", "trackers", "build_index",
              "cache.root", "torrent.listen_ip", "torrent.port"],
    "buildindex": ["server.host", "server.port", "redis.addr", "origins.members", "origins.replicas",
                   "state_dir"],
    "proxy": ["server.host", "server.port", "server.trusted_proxies", "origins.members", "origins.replicas",
              "build_index", "uploads.dir"],
}
# Added by the pod's start script (node or pod IP), not in the ConfigMap.
AT_START = {"torrent.listen_ip"}


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
    build_index = ["kraken-buildindex.ns.svc.cluster.local:7608"]
    redis = {"addr": "kraken-redis.ns.svc.cluster.local:6379"}
    behind_nginx = {"host": "127.0.0.1", "trusted_proxies": values["nginx"]["trustedProxies"]}
    wiring = {
        "tracker": {"server": {**behind_nginx, "port": values["nginx"]["upstreamPorts"]["tracker"]},
                    "redis": redis, "origins": ring},
        "origin": {"advertise": ring["members"][0], "server": {"host": "0.0.0.0", "port": 7603},
                   "ring": ring, "trackers": tracker, "store": {"root": "/var/lib/kraken/origin"},
                   "torrent": {"listen_ip": "10.1.0.9", "port": 6881}},
        "agent": {"server": {"host": "0.0.0.0", "port": values["agent"]["port"]},
                  "registry": {"host": "127.0.0.1", "port": values["agent"]["registry"]["port"]},
                  "trackers": tracker, "build_index": build_index,
                  "cache": {"root": "/var/cache/kraken/agent"},
                  "torrent": {"listen_ip": "10.0.0.7", "port": 6881}},
        "buildindex": {"server": {"host": "0.0.0.0", "port": 7608}, "redis": redis, "origins": ring,
                       "state_dir": "/var/lib/kraken/buildindex"},
        "proxy": {"server": {**behind_nginx, "port": values["nginx"]["upstreamPorts"]["proxy"]},
                  "origins": ring, "build_index": build_index,
                  "uploads": {"dir": "/var/cache/kraken/proxy/uploads"}},
    }
    assert set(wiring) == set(COMPONENTS)
    for component, cls in COMPONENTS.items():
        cfg = config.build(cls, config.merge(values[component]["config"], wiring[component]))
        assert cfg.server.host == wiring[component]["server"]["host"]
    assert values["nginx"]["trustedProxies"] == 1


def test_backend_examples_in_values_build(values):
    """The commented `backends:` examples are valid storage rules (backends are built, not
    contacted: s3 and registry clients connect lazily)."""
    from common.backends import Manager

    text = (CHART / "values.yaml").read_text()
    blocks = re.findall(r"^( +)# backends:\n((?:\1#   .*\n)+)", text, re.MULTILINE)
    assert len(blocks) >= 2, "expected commented backends examples for origin and buildindex"
    for indent, body in blocks:
        rules = yaml.safe_load("\n".join(line[len(indent) + 2:] for line in body.splitlines()))
        assert isinstance(rules, list) and rules
        Manager.from_config(rules)
        for component in ("origin", "buildindex"):
            data = config.merge(values[component]["config"], {"backends": rules})
            config.build(COMPONENTS[component], data)


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
    with `extends:`, the kraken.extends helper), with template actions stubbed out. Both
    branches of an {{ if }} are kept: a key generated in either is generated."""
    lines = template.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("extends:"))
    assert 'include "kraken.extends"' in lines[start], lines[start]
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        stripped = line.strip()
        if stripped.startswith("{{") and stripped.endswith("}}"):
            continue  # a control line ({{- if }}, {{- end }}) or an included list
        if stripped.startswith("extends:"):
            line = line.split(":")[0] + ": base.yaml"
        block.append(re.sub(r"\{\{.*?\}\}", "x", line[indent:]))
    return yaml.safe_load("\n".join(block))


def _dotted(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in node.items():
        if isinstance(value, dict):
            out |= _dotted(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_generated_wiring_uses_known_keys(component):
    data = _generated_block((CHART / "templates" / f"{component}-configmap.yaml").read_text())
    assert data.pop("extends") == "base.yaml"
    assert data, "no generated keys found"
    assert _unknown_keys(COMPONENTS[component], data) == []
    assert _dotted(data) | AT_START == set(GENERATED[component]) | AT_START


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_values_list_the_generated_keys_at_the_top(component):
    """The header of values.yaml names every generated key of every component."""
    text = (CHART / "values.yaml").read_text()
    header = text[:text.index("\nimage:")]
    section = re.search(rf"^#   {component}:(.*?)(?=^#   \w+:|^# Maps merge)", header, re.DOTALL | re.MULTILINE)
    assert section, f"values.yaml header does not list {component}'s generated keys"
    for key in GENERATED[component]:
        assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", section.group(1)), (component, key)


# --- The templates, read as text (there is no helm binary to render them) -------------------

def _templates() -> dict[str, str]:
    files = sorted((CHART / "templates").glob("*.yaml")) + sorted((CHART / "templates").glob("*.tpl"))
    files += sorted((CHART / "templates").glob("*.txt"))
    return {f.name: f.read_text() for f in files}


def _values_refs(text: str) -> set[str]:
    """Every `.Values.a.b` path a template reads, directly or through a variable bound to a
    `.Values` path (`$persist := .Values.proxy.uploads.persistence` ... `$persist.enabled`)."""
    refs = set(re.findall(r"(?:\$|\.root|\b)?\.Values((?:\.[A-Za-z_]\w*)+)", text))
    for var, path in re.findall(r"\$(\w+)\s*:?=\s*(?:\$|\.root)?\.Values((?:\.[A-Za-z_]\w*)+)", text):
        refs |= {path + rest for rest in re.findall(rf"\${var}((?:\.[A-Za-z_]\w*)+)", text)}
    return {r.lstrip(".") for r in refs}


def test_templates_reference_only_values_that_exist(values):
    missing = []
    for name, text in _templates().items():
        for ref in sorted(_values_refs(text)):
            node = values
            for part in ref.split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif node == {} or node is None:
                    break  # a free-form map (annotations, a config section): any key
                else:
                    missing.append(f"{name}: .Values.{ref}")
                    break
    assert missing == []


def test_components_have_the_values_the_shared_helpers_read(values):
    """kraken.extends / kraken.extraEnv / kraken.secretConfig.* read
    `index .root.Values <component>`: every component must have those keys."""
    for component in COMPONENTS:
        assert values[component]["extraEnv"] == []
        assert set(values[component]["secretConfig"]) == {"secretName", "key"}
        assert values[component]["secretConfig"]["secretName"] == ""


def test_template_blocks_balance():
    """Every {{ if / with / range / define }} has its {{ end }} (a missing one only shows when
    helm renders)."""
    for name, text in _templates().items():
        actions = re.findall(r"\{\{-?\s*(/\*.*?\*/|\S+)", text, re.DOTALL)
        depth = 0
        for word in actions:
            if word in ("if", "with", "range", "define", "block"):
                depth += 1
            elif word == "end":
                depth -= 1
                assert depth >= 0, f"{name}: unbalanced {{{{ end }}}}"
        assert depth == 0, f"{name}: {depth} block(s) without {{{{ end }}}}"


def test_every_included_template_is_defined():
    text = "\n".join(_templates().values())
    defined = set(re.findall(r'define "([^"]+)"', text))
    used = set(re.findall(r'(?:include|template) "([^"]+)"', text))
    assert used - defined == set()


def test_every_component_has_its_objects():
    names = set(_templates())
    for component in ("tracker", "buildindex", "proxy"):
        assert {f"{component}-configmap.yaml", f"{component}-deployment.yaml", f"{component}-service.yaml"} <= names
    assert {"origin-configmap.yaml", "origin-statefulset.yaml", "origin-service.yaml", "agent-configmap.yaml",
            "agent-daemonset.yaml", "nginx-configmap.yaml"} <= names


# --- nginx ---------------------------------------------------------------------------------

NGINX_CONF = CHART / "files" / "nginx.conf"


def test_nginx_conf_suits_a_registry():
    conf = NGINX_CONF.read_text()
    directives = {re.sub(r"\s+", " ", d.strip()) for d in re.findall(r"^\s*([a-z_]+ [^;{]*);", conf, re.MULTILINE)}
    for d in ("client_max_body_size 0", "proxy_request_buffering off", "proxy_buffering off",
              "chunked_transfer_encoding on", "proxy_http_version 1.1", "proxy_set_header Host $http_host",
              "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
              "proxy_set_header X-Forwarded-Proto $scheme", "daemon off", "master_process on"):
        assert d in directives, d
    for d in ("proxy_read_timeout", "proxy_send_timeout", "client_body_timeout", "send_timeout"):
        (value,) = [x.split()[1] for x in directives if x.split()[0] == d]
        assert value.endswith("s") and int(value[:-1]) >= 600, (d, value)


def test_nginx_placeholders_are_all_filled_by_the_chart():
    """The chart's kraken.nginx.conf helper replaces every @PLACEHOLDER@ of files/nginx.conf
    (the integration test does the same replacement)."""
    placeholders = set(re.findall(r"@[A-Z_]+@", NGINX_CONF.read_text()))
    assert placeholders == {"@LISTEN@", "@UPSTREAM@", "@ERROR_LOG@", "@ACCESS_LOG@"}
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    helper = helpers[helpers.index('define "kraken.nginx.conf"'):]
    helper = helper[:helper.index("{{- end -}}")]
    assert 'Files.Get "files/nginx.conf"' in helper
    assert set(re.findall(r'replace "(@[A-Z_]+@)"', helper)) == placeholders


def test_components_behind_nginx_listen_on_loopback_and_trust_one_hop(values):
    assert values["nginx"]["enabled"] is True
    for component in ("tracker", "proxy"):
        text = (CHART / "templates" / f"{component}-configmap.yaml").read_text()
        branch = text[text.index("if .Values.nginx.enabled"):text.index("else", text.index("if .Values.nginx.enabled"))]
        assert 'host: "127.0.0.1"' in branch
        assert f"nginx.upstreamPorts.{component}" in branch
        assert "trusted_proxies: {{ int .Values.nginx.trustedProxies }}" in branch
        deployment = (CHART / "templates" / f"{component}-deployment.yaml").read_text()
        assert 'include "kraken.nginx.container"' in deployment
        assert f'"component" "{component}"' in deployment
