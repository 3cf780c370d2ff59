"""build-index config: YAML into the dataclasses, refusals of bad values, and cmd's
wiring (against the session's real redis-server)."""

import pytest

from buildindex import cmd
from buildindex.config import BuildIndexConfig
from common import config as configlib
from common.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "buildindex.yaml"
    p.write_text(text)
    return p


def test_defaults():
    cfg = BuildIndexConfig()
    assert cfg.server.port == 7608 and cfg.default_type == "docker" and cfg.remotes == {}


def test_yaml_with_tag_types_and_remotes(tmp_path):
    cfg = configlib.load(BuildIndexConfig, write(tmp_path, """
server: {host: 127.0.0.2, port: 7700}
redis: {addr: "127.0.0.1:6380"}
origins: {members: ["127.0.0.1:7500", "127.0.0.1:7501"], replicas: 2}
tag_types:
  - {pattern: "^scratch/", type: default}
remotes:
  "127.0.0.9:7608": ["^library/", "^team/"]
replication: {max_attempts: 3, base_delay: 0.5}
listing: {default_limit: 100, max_limit: 500}
"""), environ={})
    assert cfg.tag_types[0].type == "default" and cfg.remotes["127.0.0.9:7608"] == ["^library/", "^team/"]
    assert cfg.listing.max_limit == 500 and cfg.replication.max_attempts == 3


@pytest.mark.parametrize("text", [
    "tag_types: [{pattern: '.*', type: oci}]",
    "tag_types: [{pattern: '(', type: default}]",
    "remotes: {'127.0.0.9:1': '^library/'}",
    "remotes: {'127.0.0.9:1': ['[']}",
    "listing: {default_limit: 0}",
    "listing: {default_limit: 10, max_limit: 5}",
    "replication: {max_attempts: 0}",
    "default_type: nope",
    "tagtypes: []",
])
def test_bad_config_is_refused(tmp_path, text):
    with pytest.raises(ConfigError):
        configlib.load(BuildIndexConfig, write(tmp_path, text), environ={})


def test_docker_tags_without_origins_fail_at_start():
    with pytest.raises(ConfigError, match="origin"):
        cmd.build_app(BuildIndexConfig())


def test_cmd_builds_a_working_app_on_redis(redis_server, redis_client):
    cfg = configlib.build(BuildIndexConfig, {"redis": {"addr": redis_server}, "default_type": "default"})
    app = cmd.build_app(cfg)
    c = app.test_client()
    digest = "sha256:" + "ab" * 32
    assert c.put(f"/tags/library%2Fbusybox:1/digest/{digest}").status_code == 200
    assert c.get("/tags/library%2Fbusybox:1").data.decode() == digest
    assert redis_client.get("kraken:tag:library/busybox:1") == digest.encode()
    assert c.get("/list/lib").get_json()["result"] == ["library/busybox"]
    assert c.get("/readiness").status_code == 200
    app.kraken_shutdown()
