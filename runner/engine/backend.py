"""The backend seam: LineRequests in, LineResults out. Every backend (vllm, transformers,
simulated) implements Backend; the engine loop knows nothing else about models.

Contract, shared by all backends:
- `add(req)` queues one input line. It converts the OpenAI body into the backend's input and raises
  LineError for a body it cannot run (bad parameter, prompt over the context, unsupported option):
  the engine then writes that line's 4xx row at once. A backend may hand the line to its engine
  later (vLLM: at the next step(), with the turn's other lines); a refusal found only then comes
  back from step() as the line's 4xx LineResult. A line may fan out into several model
  requests (n > 1, a list of prompts); the backend gathers them into one LineResult.
- `step()` advances the work and returns the lines that finished, each exactly once. It may block
  while it computes, but is never called when `has_unfinished()` is False.
- `abort(keys)` drops lines; a backend returns no result for an aborted line (the engine writes
  the cancelled / expired rows itself).
- `close()` frees the model's memory (GPU memory must come back).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runner.model_specs import ModelSpec


@dataclass(slots=True)  # not frozen: see SamplingOptions in bodies.py
class LineRequest:
    """One input line handed to a backend."""

    key: str  # unique inside the engine: "<batch_id>:<line number>"
    batch_id: str
    custom_id: str
    endpoint: str  # /v1/chat/completions | /v1/completions | /v1/embeddings | /v1/responses
    body: dict[str, Any]
    line: int = 0  # 1-based line number in the input file


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class LineResult:
    """A finished line: an HTTP-style response (200 body, or a 4xx/5xx {"error": …} body)."""

    key: str
    status_code: int
    body: dict[str, Any]
    usage: Usage = field(default_factory=Usage)

    @property
    def ok(self) -> bool:
        return self.status_code == 200


class Backend(abc.ABC):
    """One loaded model behind the seam."""

    spec: ModelSpec
    # Lines the engine keeps in flight for this backend (about 2 x the batch size it runs at once).
    default_max_inflight: int = 64

    @abc.abstractmethod
    def add(self, req: LineRequest) -> None: ...

    @abc.abstractmethod
    def step(self) -> list[LineResult]: ...

    @abc.abstractmethod
    def abort(self, keys: Iterable[str]) -> None: ...

    @abc.abstractmethod
    def has_unfinished(self) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Free the model (and its accelerator memory)."""

    def generated_tokens(self) -> int | None:
        """Output tokens produced since load, by finished lines and lines still in flight; None
        where the backend cannot tell. The engine's throughput line uses it, so a busy engine
        whose lines are all long does not log tokens/s=0 (see #11)."""
        return None
