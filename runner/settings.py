"""Settings: RUNNER_* environment variables and CLI options -> one frozen Settings.

This is the only module that reads os.environ. Each setting is declared once in SETTINGS with its
environment variable, default and help; `tests/test_settings.py` checks that the README documents
every one of them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.model_specs import BACKENDS


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _keys(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


WINDOW_UNITS = {"m": 60, "h": 3600}
DAY_WINDOW = "24h"  # OpenAI's one window: always accepted, its length is RUNNER_COMPLETION_WINDOW_SECONDS


def window_length(window: str) -> int | None:
    """The nominal seconds of a completion window written `<n>m` or `<n>h` (n a positive integer
    without leading zeros, so each length has one spelling); None if `window` is not one."""
    digits, unit = window[:-1], window[-1:]
    if unit not in WINDOW_UNITS or not digits.isascii() or not digits.isdigit() or digits.startswith("0"):
        return None
    return int(digits) * WINDOW_UNITS[unit]


def _windows(raw: str) -> tuple[str, ...]:
    out: list[str] = []
    for w in (x.strip() for x in raw.split(",")):
        if not w:
            continue
        if window_length(w) is None:
            raise ValueError(f"{w[:16]!r} is not a window like '1h' or '30m'")
        if w not in out:
            out.append(w)
    return tuple(out)


KeyLimit = tuple[str, int | None, int | None]  # (API key, lines cap, tokens cap); None: the global cap


def _key_limits(raw: str) -> tuple[KeyLimit, ...]:
    """RUNNER_KEY_LIMITS: `KEY=lines:N,tokens:N;KEY2=tokens:N` (either part may be left out; 0 = no
    cap). Raises ConfigError, not ValueError, so the message never quotes the value: it holds keys."""
    out: list[KeyLimit] = []
    for n, entry in enumerate((e.strip() for e in raw.split(";")), 1):
        if not entry:
            continue
        key, eq, spec = entry.rpartition("=")
        caps: dict[str, int] = {}
        for part in spec.split(","):
            name, colon, value = part.strip().partition(":")
            if name not in ("lines", "tokens") or not colon or name in caps or not value.strip().isdigit():
                caps = {}
                break
            caps[name] = int(value)
        if not eq or not key.strip() or not caps:
            raise ConfigError(f"RUNNER_KEY_LIMITS entry {n} is not KEY=lines:N,tokens:N (either part may be "
                              "left out; N >= 0, 0 = no cap)")
        out.append((key.strip(), caps.get("lines"), caps.get("tokens")))
    return tuple(out)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "RUNNER_HOST", "127.0.0.1", "Address the API binds to."),
    Setting("port", "RUNNER_PORT", 8000, "Port the API listens on.", int),
    Setting("data_dir", "RUNNER_DATA_DIR", "./data", "Folder for the SQLite store, files and model cache."),
    Setting("models_path", "RUNNER_MODELS", "./models.yaml", "Path of models.yaml."),
    Setting("api_keys", "RUNNER_API_KEYS", (), "Comma-separated API keys; each key is its own owner.", _keys),
    Setting("max_upload_bytes", "RUNNER_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, "Upload size cap (413).", int),
    Setting("max_header_bytes", "RUNNER_MAX_HEADER_BYTES", 64 * 1024,
            "Longest request line plus headers; longer is refused with 431 before it is buffered.", int),
    Setting("header_timeout", "RUNNER_HEADER_TIMEOUT", 10.0,
            "Seconds a new request's line and headers may take to arrive (also how long a new connection "
            "may send nothing); then 408 and the connection is closed.", float),
    Setting("body_timeout", "RUNNER_BODY_TIMEOUT", 30.0,
            "Seconds a request body (an upload) may send nothing while the server waits for it; then 408 "
            "request_timeout and the connection is closed.", float),
    Setting("keep_alive_timeout", "RUNNER_KEEP_ALIVE_TIMEOUT", 5.0,
            "Seconds an idle keep-alive connection stays open between requests.", float),
    Setting("max_concurrent_uploads", "RUNNER_MAX_CONCURRENT_UPLOADS", 64,
            "Uploads received at once; one more gets 503 too_many_uploads with Retry-After.", int),
    Setting("max_connections", "RUNNER_MAX_CONNECTIONS", 0,
            "Open connections; one more gets 503 too_many_connections (0 = auto: half of the soft "
            "RLIMIT_NOFILE less 64, so each connection can also hold one open file).", int),
    Setting("max_batch_lines", "RUNNER_MAX_BATCH_LINES", 50_000, "Most request lines in one batch.", int),
    Setting("max_line_bytes", "RUNNER_MAX_LINE_BYTES", 16 * 1024 * 1024, "Longest input line.", int),
    Setting("max_batch_errors", "RUNNER_MAX_BATCH_ERRORS", 100, "Most validation errors listed.", int),
    Setting(
        "rate_limit", "RUNNER_RATE_LIMIT", 1000.0, "Requests per second per key (0 = no limit).", float
    ),
    Setting("rate_burst", "RUNNER_RATE_BURST", 2000, "Requests a key may send at once.", int),
    Setting(
        "completion_window_seconds",
        "RUNNER_COMPLETION_WINDOW_SECONDS",
        86_400,
        "Seconds a batch may run before it expires (the '24h' window).",
        int,
    ),
    Setting("completion_windows", "RUNNER_COMPLETION_WINDOWS", (DAY_WINDOW,),
            "Comma-separated completion windows a batch may ask for, like `1h,4h,30m` ('24h' is always "
            "accepted; each at most 24h).", _windows),
    Setting("deadline_policy", "RUNNER_DEADLINE_POLICY", "flag",
            "What happens at validation to a batch that cannot finish in its window at the model's "
            "measured throughput: `flag` (it runs, with a deadline_at_risk notice in its errors) or "
            "`refuse` (it fails with deadline_unreachable)."),
    Setting("max_enqueued_lines", "RUNNER_MAX_ENQUEUED_LINES", 0,
            "Request lines one key may have enqueued (validating, in_progress, finalizing, cancelling "
            "batches); a batch over it fails with token_limit_exceeded (0 = no cap).", int),
    Setting("max_enqueued_tokens", "RUNNER_MAX_ENQUEUED_TOKENS", 0,
            "Input tokens one key may have enqueued (estimated at validation: UTF-8 bytes of the prompt "
            "text / 4); a batch over it fails with token_limit_exceeded (0 = no cap).", int),
    Setting("key_limits", "RUNNER_KEY_LIMITS", (),
            "Per-key overrides of the two caps: `KEY=lines:N,tokens:N;KEY2=tokens:N` (a part left out "
            "keeps the global cap; 0 = no cap for that key). Each KEY must be one of RUNNER_API_KEYS.",
            _key_limits),
    Setting(
        "file_expiry_seconds",
        "RUNNER_FILE_EXPIRY_SECONDS",
        30 * 86_400,
        "Default lifetime of batch input files and of output and error files.",
        int,
    ),
    Setting("sweep_interval", "RUNNER_SWEEP_INTERVAL", 60.0, "Seconds between expired-file sweeps.", float),
    Setting("engine", "RUNNER_ENGINE", True, "Start the engine process with `runner serve`.", _bool),
    Setting("backend", "RUNNER_BACKEND", "", "Override every model's backend (e.g. simulated).", str),
    Setting("threads", "RUNNER_THREADS", 0, "CPU threads for the transformers backend (0 = auto).", int),
    Setting("vllm_cpu_kv_cache_gib", "RUNNER_VLLM_CPU_KV_CACHE_GIB", 0.0,
            "KV cache of vLLM on a CPU, GiB (0 = 15% of available memory, 0.5-4 GiB); engine_args "
            "kv_cache_memory_bytes or VLLM_CPU_KVCACHE_SPACE win.", float),
    Setting("vllm_cpu_reserved_cpus", "RUNNER_VLLM_CPU_RESERVED_CPUS", -1,
            "Cores vLLM on a CPU keeps free of compute (-1 = 0 on 4 usable CPUs or fewer, else vLLM's "
            "choice); VLLM_CPU_NUM_OF_RESERVED_CPU wins.", int),
    Setting("vllm_metrics", "RUNNER_VLLM_METRICS", True,
            "vLLM's own metrics in GET /metrics: the server's engine runs vLLM with disable_log_stats=False "
            "(`runner run` never does).", _bool),
    Setting(
        "max_inflight", "RUNNER_MAX_INFLIGHT", 0, "Lines in flight in the engine (0 = backend default).", int
    ),
    Setting("helper_nice", "RUNNER_HELPER_NICE", 10,
            "Niceness added to the engine's helper threads (feeder, writer, heartbeat): on a small CPU box "
            "the model's kernels go first and runner's bookkeeping fills the gaps (0 = off).", int),
    Setting("admission_lookahead", "RUNNER_ADMISSION_LOOKAHEAD", 2048,
            "Lines per model the engine reads ahead to choose their order (shared prefixes together, long "
            "answers first); the batches of a model share it, with at most 64 MiB of lines (0 = file order).",
            int),
    Setting("admission_order", "RUNNER_ADMISSION_ORDER", "prefix",
            "Order lines enter the engine: prefix (shared prefixes together, long answers first, within the "
            "look-ahead) or file.", str),
    Setting("deadline_max_weight", "RUNNER_DEADLINE_MAX_WEIGHT", 64.0,
            "Most weight a batch's share of the engine gets as its deadline nears (weight = the 24h window / "
            "time left, at least 1).", float),
    Setting(
        "checkpoint_interval",
        "RUNNER_CHECKPOINT_INTERVAL",
        0.5,
        "Seconds between fsync + database checkpoints of output files.",
        float,
    ),
    Setting("poll_interval", "RUNNER_POLL_INTERVAL", 0.2,
            "Seconds between the engine's full status polls (expiries); new batches and cancels are seen "
            "within ~10 ms.", float),
    Setting("engine_restart_max_delay", "RUNNER_ENGINE_RESTART_MAX_DELAY", 10.0,
            "Longest wait before a dead engine is restarted (the wait doubles from 0.5 s).", float),
    Setting("engine_stall_timeout", "RUNNER_ENGINE_STALL_TIMEOUT", 60.0,
            "Seconds without an engine heartbeat (or with its writer stuck) before the engine counts as "
            "frozen: /health says unhealthy and the engine is killed and restarted.", float),
    Setting("engine_progress_timeout", "RUNNER_ENGINE_PROGRESS_TIMEOUT", 900.0,
            "Seconds without a finished line while batches are pending before /health says unhealthy "
            "(engine_no_progress).", float),
    Setting("engine_crash_loop_window", "RUNNER_ENGINE_CRASH_LOOP_WINDOW", 300.0,
            "Three engine restarts within this many seconds make /health unhealthy (engine_crash_loop).",
            float),
    Setting("db_busy_timeout", "RUNNER_DB_BUSY_TIMEOUT", 5.0,
            "Seconds an API request waits for SQLite's write lock before it answers 503 database_busy.",
            float),
    Setting("model_load_retry_max_delay", "RUNNER_MODEL_LOAD_RETRY_MAX_DELAY", 300.0,
            "Longest wait between attempts to load a model that failed to load (the wait doubles from 2 s).",
            float),
    Setting("throughput_log_interval", "RUNNER_THROUGHPUT_LOG_INTERVAL", 10.0,
            "Seconds between the engine's throughput log lines.", float),
    Setting("webhook_timeout", "RUNNER_WEBHOOK_TIMEOUT", 10.0,
            "Seconds one webhook delivery (connect, send, read the status line) may take; then it counts "
            "as failed and is retried.", float),
    Setting("webhook_max_attempts", "RUNNER_WEBHOOK_MAX_ATTEMPTS", 20,
            "Attempts per webhook event and endpoint before it is dropped (a log line says so).", int),
    Setting("webhook_backoff", "RUNNER_WEBHOOK_BACKOFF", 5.0,
            "Seconds before a failed webhook delivery's first retry; each retry waits twice as long (with "
            "jitter: 50-100% of it), up to RUNNER_WEBHOOK_BACKOFF_MAX.", float),
    Setting("webhook_backoff_max", "RUNNER_WEBHOOK_BACKOFF_MAX", 3600.0,
            "Longest wait between two attempts of one webhook delivery.", float),
    Setting("webhook_concurrency", "RUNNER_WEBHOOK_CONCURRENCY", 8,
            "Webhook deliveries in flight at once.", int),
    Setting("webhook_poll_interval", "RUNNER_WEBHOOK_POLL_INTERVAL", 1.0,
            "Seconds between looks at the webhook outbox for deliveries that are due (retries; the engine "
            "rings the API when it ends a batch, so an ending's event goes out at once).", float),
    Setting("webhook_disable_failures", "RUNNER_WEBHOOK_DISABLE_FAILURES", 20,
            "Failed deliveries in a row (spanning RUNNER_WEBHOOK_DISABLE_SECONDS) that disable an endpoint.",
            int),
    Setting("webhook_disable_seconds", "RUNNER_WEBHOOK_DISABLE_SECONDS", 3600.0,
            "How long an endpoint's run of failures must last before it is disabled.", float),
    Setting("webhook_max_endpoints", "RUNNER_WEBHOOK_MAX_ENDPOINTS", 20,
            "Webhook endpoints one owner may have.", int),
    Setting("metrics_token", "RUNNER_METRICS_TOKEN", "",
            "A bearer token that opens GET /metrics only (for a Prometheus scraper); any API key works too."),
    Setting("log_level", "RUNNER_LOG_LEVEL", "info", "Log level.", str),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    models_path: str = "./models.yaml"
    api_keys: tuple[str, ...] = ()
    max_upload_bytes: int = 200 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_concurrent_uploads: int = 64
    max_connections: int = 0
    max_batch_lines: int = 50_000
    max_line_bytes: int = 16 * 1024 * 1024
    max_batch_errors: int = 100
    rate_limit: float = 1000.0
    rate_burst: int = 2000
    completion_window_seconds: int = 86_400
    completion_windows: tuple[str, ...] = (DAY_WINDOW,)
    deadline_policy: str = "flag"
    max_enqueued_lines: int = 0
    max_enqueued_tokens: int = 0
    key_limits: tuple[KeyLimit, ...] = ()
    file_expiry_seconds: int = 30 * 86_400
    sweep_interval: float = 60.0
    engine: bool = True
    backend: str = ""
    threads: int = 0
    vllm_cpu_kv_cache_gib: float = 0.0
    vllm_cpu_reserved_cpus: int = -1
    vllm_metrics: bool = True
    max_inflight: int = 0
    helper_nice: int = 10
    admission_lookahead: int = 2048
    admission_order: str = "prefix"
    deadline_max_weight: float = 64.0
    checkpoint_interval: float = 0.5
    poll_interval: float = 0.2
    engine_restart_max_delay: float = 10.0
    engine_stall_timeout: float = 60.0
    engine_progress_timeout: float = 900.0
    engine_crash_loop_window: float = 300.0
    db_busy_timeout: float = 5.0
    model_load_retry_max_delay: float = 300.0
    throughput_log_interval: float = 10.0
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 20
    webhook_backoff: float = 5.0
    webhook_backoff_max: float = 3600.0
    webhook_concurrency: int = 8
    webhook_poll_interval: float = 1.0
    webhook_disable_failures: int = 20
    webhook_disable_seconds: float = 3600.0
    webhook_max_endpoints: int = 20
    metrics_token: str = ""
    log_level: str = "info"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "runner.db"

    @property
    def files_dir(self) -> Path:
        return Path(self.data_dir) / "files"

    @property
    def model_cache_dir(self) -> Path:
        return Path(self.data_dir) / "models"

    @property
    def accepted_windows(self) -> tuple[str, ...]:
        """The completion windows a batch may ask for: '24h', then RUNNER_COMPLETION_WINDOWS's."""
        return (DAY_WINDOW, *(w for w in self.completion_windows if w != DAY_WINDOW))

    def window_seconds(self, window: str) -> int | None:
        """How long a batch with this completion_window may run; None if it is not accepted."""
        if window == DAY_WINDOW:
            return self.completion_window_seconds  # tests shrink it
        return window_length(window) if window in self.completion_windows else None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then RUNNER_* environment, then explicit overrides (CLI options that were given)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None:
            continue
        try:
            values[s.name] = s.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{s.env}={raw!r} is not valid: {exc}") from exc
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 0 < s.port < 65536:
        raise ConfigError(f"port {s.port} is out of range (RUNNER_PORT)")
    for name in ("max_upload_bytes", "max_batch_lines", "max_line_bytes", "completion_window_seconds",
                 "max_header_bytes", "header_timeout", "body_timeout", "keep_alive_timeout",
                 "max_concurrent_uploads"):
        if getattr(s, name) <= 0:
            env = next(x.env for x in SETTINGS if x.name == name)
            raise ConfigError(f"{env} must be positive")
    if s.vllm_cpu_kv_cache_gib < 0:
        raise ConfigError("RUNNER_VLLM_CPU_KV_CACHE_GIB must be >= 0")
    for name in ("engine_stall_timeout", "engine_progress_timeout", "engine_crash_loop_window", "db_busy_timeout"):
        if getattr(s, name) <= 0:
            env = next(x.env for x in SETTINGS if x.name == name)
            raise ConfigError(f"{env} must be positive")
    for name in ("webhook_timeout", "webhook_max_attempts", "webhook_backoff", "webhook_backoff_max",
                 "webhook_concurrency", "webhook_poll_interval", "webhook_disable_failures", "webhook_max_endpoints"):
        if getattr(s, name) <= 0:
            env = next(x.env for x in SETTINGS if x.name == name)
            raise ConfigError(f"{env} must be positive")
    if s.webhook_disable_seconds < 0:
        raise ConfigError("RUNNER_WEBHOOK_DISABLE_SECONDS must be >= 0")
    if s.max_connections < 0:
        raise ConfigError("RUNNER_MAX_CONNECTIONS must be >= 0 (0 = auto)")
    if s.rate_limit < 0:
        raise ConfigError("RUNNER_RATE_LIMIT must be >= 0")
    if not s.deadline_max_weight >= 1:  # a weight under 1 would let a near deadline shrink a share
        raise ConfigError("RUNNER_DEADLINE_MAX_WEIGHT must be >= 1")
    for w in s.completion_windows:
        if (window_length(w) or 0) > window_length(DAY_WINDOW):  # type: ignore[operator]
            raise ConfigError(f"RUNNER_COMPLETION_WINDOWS: {w[:16]!r} is longer than 24h, the longest window")
    if s.deadline_policy not in ("flag", "refuse"):
        raise ConfigError(f"RUNNER_DEADLINE_POLICY={s.deadline_policy[:16]!r} is not `flag` or `refuse`")
    if s.max_enqueued_lines < 0 or s.max_enqueued_tokens < 0:
        raise ConfigError("RUNNER_MAX_ENQUEUED_LINES and RUNNER_MAX_ENQUEUED_TOKENS must be >= 0 (0 = no cap)")
    for n, (key, _, _) in enumerate(s.key_limits, 1):
        if key not in s.api_keys:
            raise ConfigError(f"RUNNER_KEY_LIMITS entry {n} names a key that is not one of RUNNER_API_KEYS")
    if s.admission_lookahead < 0:
        raise ConfigError("RUNNER_ADMISSION_LOOKAHEAD must be >= 0 (0 = file order)")
    if s.admission_order not in ("prefix", "file"):
        raise ConfigError(f"RUNNER_ADMISSION_ORDER={s.admission_order!r} is not an order (prefix or file)")
    if s.backend and s.backend not in BACKENDS:
        raise ConfigError(f"RUNNER_BACKEND={s.backend!r} is not a backend (one of {', '.join(BACKENDS)})")


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
