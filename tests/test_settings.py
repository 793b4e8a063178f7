"""Settings: env -> frozen Settings, one table of defaults, every variable documented in README."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.settings import SETTINGS, Settings, is_loopback, load_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_settings_are_documented() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [s.env for s in SETTINGS if not re.search(rf"`{re.escape(s.env)}`", text)]
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_table_and_dataclass_agree() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    assert [s.name for s in SETTINGS] == list(fields)
    for s in SETTINGS:
        assert fields[s.name] == s.default, s.name
        assert s.env == "RUNNER_" + s.env.removeprefix("RUNNER_") and s.help


def test_defaults_with_empty_environment() -> None:
    assert load_settings(environ={}) == Settings()


def test_environment_is_parsed() -> None:
    s = load_settings(environ={
        "RUNNER_PORT": "9001", "RUNNER_API_KEYS": " k1, k2 ,,", "RUNNER_ENGINE": "off",
        "RUNNER_RATE_LIMIT": "2.5", "RUNNER_MAX_BATCH_LINES": "7", "RUNNER_DATA_DIR": "/tmp/x",
    })
    assert (s.port, s.api_keys, s.engine, s.rate_limit, s.max_batch_lines, s.data_dir) == (
        9001, ("k1", "k2"), False, 2.5, 7, "/tmp/x")


def test_overrides_win_over_environment_but_none_does_not() -> None:
    s = load_settings({"port": 7000, "host": None}, environ={"RUNNER_PORT": "9001", "RUNNER_HOST": "0.0.0.0"})
    assert s.port == 7000 and s.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "value"),
    [("RUNNER_PORT", "eighty"), ("RUNNER_PORT", "0"), ("RUNNER_PORT", "70000"), ("RUNNER_ENGINE", "maybe"),
     ("RUNNER_MAX_BATCH_LINES", "0"), ("RUNNER_MAX_UPLOAD_BYTES", "-1"), ("RUNNER_RATE_LIMIT", "-1"),
     ("RUNNER_SWEEP_INTERVAL", "x")],
)
def test_bad_values_name_the_variable(env: str, value: str) -> None:
    with pytest.raises(ConfigError, match=env):
        load_settings(environ={env: value})


def test_settings_are_frozen_and_derive_paths() -> None:
    s = Settings(data_dir="/d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert str(s.db_path) == "/d/runner.db" and str(s.files_dir) == "/d/files"
    assert s.replace(port=5).port == 5


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "localhost", "::1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.com"]))
