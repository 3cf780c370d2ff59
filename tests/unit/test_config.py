from dataclasses import dataclass, field

import pytest

from common import config
from common.errors import ConfigError
from common.sections import RingConfig, ServerConfig


@dataclass(frozen=True)
class Sample:
    server: ServerConfig = field(default_factory=ServerConfig)
    ring: RingConfig = field(default_factory=RingConfig)
    name: str = "x"
    ratio: float = 1.0


def test_defaults_apply_when_file_is_empty(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    cfg = config.load(Sample, tmp_path / "c.yaml", environ={})
    assert cfg.server.port == 0 and cfg.ring.replicas == 2 and cfg.name == "x"


def test_extends_merges_maps_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "server: {host: 10.0.0.1, port: 80}\nring: {members: [a, b, c], replicas: 3}\nname: base\n"
    )
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nserver: {port: 81}\nring: {members: [d]}\n")
    cfg = config.load(Sample, tmp_path / "child.yaml", environ={})
    assert cfg.server.host == "10.0.0.1" and cfg.server.port == 81
    assert cfg.ring.members == ("d",) and cfg.ring.replicas == 3
    assert cfg.name == "base"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    (tmp_path / "c.yaml").write_text("server: {prot: 80}\n")
    with pytest.raises(ConfigError, match="prot"):
        config.load(Sample, tmp_path / "c.yaml", environ={})


def test_wrong_type_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("server: {port: eighty}\n")
    with pytest.raises(ConfigError, match="server.port"):
        config.load(Sample, tmp_path / "c.yaml", environ={})


def test_extends_cycle_is_detected(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        config.load_yaml(tmp_path / "a.yaml")


def test_env_overrides_are_one_explicit_list(tmp_path):
    from common.sections import LogConfig

    @dataclass(frozen=True)
    class WithLog:
        log: LogConfig = field(default_factory=LogConfig)

    cfg = config.load(WithLog, None, environ={"KRAKEN_LOG_LEVEL": "DEBUG", "KRAKEN_UNRELATED": "1"})
    assert cfg.log.level == "DEBUG"


def test_to_dict_round_trips(tmp_path):
    cfg = Sample(ring=RingConfig(members=("a:1", "b:2")))
    assert config.build(Sample, config.to_dict(cfg)) == cfg


def test_origin_torrent_defaults_survive_a_partial_torrent_section():
    # A nested section builds from its own class, so origin-specific defaults must live on
    # the origin's class, not in OriginConfig's default_factory.
    from agent.config import AgentConfig
    from origin.config import OriginConfig

    origin = config.build(OriginConfig, {"torrent": {"listen_ip": "10.0.0.2", "port": 6881}})
    assert origin.torrent.max_peer_requests == 8
    assert config.build(AgentConfig, {"torrent": {"port": 6881}}).torrent.max_peer_requests == 2000
