"""Service configuration from defaults, TOML and NIMBUS_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import config
from services.common.config import ConfigError, WriterConfig

BASE = {
    "NIMBUS_NODE_NAME": "node01",
    "NIMBUS_BIND": "tcp://127.0.0.1:0",
    "NIMBUS_NODE_DATABASE_URL": "postgresql://x/y",
    "NIMBUS_DATA_DIR": "/data",
}


def test_environment_fills_a_frozen_dataclass() -> None:
    cfg = config.load(WriterConfig, "writer", {**BASE, "NIMBUS_VALUE_FILE_MAX_BYTES": "4096"})
    assert cfg.data_dir == Path("/data")
    assert cfg.value_file_max_bytes == 4096
    assert cfg.endpoint_file is None
    with pytest.raises(AttributeError):
        cfg.node_name = "other"  # type: ignore[misc]


def test_toml_table_then_environment_override(tmp_path: Path) -> None:
    toml = tmp_path / "nimbus.toml"
    toml.write_text('[writer]\nnode_name = "from-toml"\nmax_in_flight = 8\n')
    env = {**BASE, "NIMBUS_CONFIG": str(toml)}
    del env["NIMBUS_NODE_NAME"]
    cfg = config.load(WriterConfig, "writer", env)
    assert (cfg.node_name, cfg.max_in_flight) == ("from-toml", 8)
    cfg = config.load(WriterConfig, "writer", {**env, "NIMBUS_MAX_IN_FLIGHT": "9"})
    assert cfg.max_in_flight == 9


def test_missing_unknown_and_malformed_settings_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="node_name"):
        config.load(WriterConfig, "writer", {k: v for k, v in BASE.items() if "NAME" not in k})
    with pytest.raises(ConfigError, match="max_in_flight"):
        config.load(WriterConfig, "writer", {**BASE, "NIMBUS_MAX_IN_FLIGHT": "many"})
    toml = tmp_path / "bad.toml"
    toml.write_text("[writer]\nno_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        config.load(WriterConfig, "writer", {**BASE, "NIMBUS_CONFIG": str(toml)})
