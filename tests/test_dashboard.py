"""The dashboard at `/` in a real browser (Debian's chromium driven by Playwright) against a real
`runner serve` with its engine: the page polls, a batch created through the API moves to completed
without a reload, the files download with the key, and a second key sees none of it.

Skipped when chromium or playwright is missing, unless RUNNER_REQUIRE_BROWSER=1 (CI sets it; then it
fails). RUNNER_DASHBOARD_SCREENSHOT=docs/dashboard.png also saves a screenshot of the running batch.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

pytestmark = pytest.mark.slow

REQUIRE = os.environ.get("RUNNER_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not REQUIRE:
    pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; RUNNER_REQUIRE_BROWSER=1 makes this fail)",
                    allow_module_level=True)
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

KEY_A, KEY_B = "sk-dash-a", "sk-dash-b"
LINES = 40
# Two lines in flight, each at least 0.2 s: the batch runs for about 4 s, several polls of the page.
MODELS_YAML = """
models:
  - id: sim-slow
    backend: simulated
    max_tokens: 16
    engine_args: {latency_per_line: 0.2, max_inflight: 2}
"""
NUMBER_OR_DASH = re.compile(r"^(-|\d+(\.\d+)?)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    (tmp_path / "models.yaml").write_text(MODELS_YAML)
    log_path = tmp_path / "server.log"
    env = {**os.environ, "RUNNER_API_KEYS": f"{KEY_A},{KEY_B}", "RUNNER_CHECKPOINT_INTERVAL": "0.1",
           "RUNNER_POLL_INTERVAL": "0.1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "serve", "--port", str(port), "--data-dir",
                                 str(tmp_path / "data"), "--models", str(tmp_path / "models.yaml")],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (httpx.get(url + "/health", timeout=2).json().get("engine") or {}).get("pid"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("server did not start:\n" + log_path.read_text())
                time.sleep(0.1)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("RUNNER_REQUIRE_BROWSER=1 and no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            b.close()


def _lines(n: int) -> bytes:
    rows = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "sim-slow", "messages": [{"role": "user", "content": f"hi {i}"}]}} for i in range(n)]
    # one line the engine refuses (n=0): the batch ends with 1 failed line and an error file
    rows.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "sim-slow", "messages": [{"role": "user", "content": "x"}], "n": 0}})
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _create_batch(url: str, key: str, content: bytes) -> dict[str, Any]:
    h = {"Authorization": f"Bearer {key}"}
    f = httpx.post(url + "/v1/files", headers=h, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert f.status_code == 200, f.text
    body = {"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    b = httpx.post(url + "/v1/batches", headers=h, json=body)
    assert b.status_code == 200, b.text
    return dict(b.json())


def _open(browser: Browser, url: str, key: str, problems: list[str]) -> Page:
    page = browser.new_context(viewport={"width": 1180, "height": 560}, accept_downloads=True).new_page()
    # A CSP violation, a script error or a failed asset shows up here: the page must have none. The
    # 401s are the API's answers to a page without a key yet (its first poll) and to a wrong key.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "status of 401" not in m.text
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    resp = page.goto(url + "/")
    assert resp is not None and resp.status == 200
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    page.fill("#key", key)
    page.click("#key-save")
    return page


def _screenshot(page: Page, base: str, path: str) -> None:
    """docs/dashboard.png: a second batch caught halfway, under the finished one with its links."""
    batch = _create_batch(base, KEY_A, _lines(LINES))
    text = page.locator(f'tr.batch[data-batch-id="{batch["id"]}"] .progress-text')
    deadline = time.monotonic() + 30
    while not re.match(r"^(1[6-9]|2\d) / ", text.text_content() or ""):
        assert time.monotonic() < deadline, "no halfway moment for the screenshot"
        time.sleep(0.05)
    page.screenshot(path=path)


def test_dashboard_shows_a_batch_live(base: str, browser: Browser, tmp_path: Path) -> None:
    problems: list[str] = []
    page = _open(browser, base, KEY_A, problems)
    page.wait_for_selector("#no-batches:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('runner.apiKey')") == KEY_A
    page.evaluate("window.__notReloaded = true")

    batch = _create_batch(base, KEY_A, _lines(LINES))
    row = page.locator(f'tr.batch[data-batch-id="{batch["id"]}"]')
    row.wait_for(timeout=10_000)

    # Watch the row until it says completed; record the progress it showed on the way.
    seen: list[tuple[str, float, float]] = []
    deadline = time.monotonic() + 60
    while True:
        status = row.locator(".c-status").inner_text().strip()
        value, maximum = page.evaluate(
            "id => { const p = document.querySelector(`tr[data-batch-id='${id}'] progress`);"
            " return [p.position < 0 ? -1 : p.value, p.max]; }", batch["id"])
        seen.append((status, value, maximum))
        if status == "in_progress":
            for cell in (".c-lps", ".c-tps"):
                assert NUMBER_OR_DASH.match(row.locator(cell).inner_text().strip())
        if status == "completed":
            break
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(0.1)
    moving = sorted({v for s, v, _ in seen if s == "in_progress" and 0 < v < LINES + 1})
    assert len(moving) >= 2, f"the progress bar did not move while in_progress: {seen}"
    assert seen[-1][1:] == (LINES + 1, LINES + 1)
    assert row.locator(".progress-text").inner_text() == f"{LINES + 1} / {LINES + 1}"
    assert page.evaluate("window.__notReloaded") is True
    assert row.locator(".c-eta").inner_text().strip() == "-"  # no ETA once the batch has ended
    assert "1 failed line" in row.locator(".c-errors").inner_text()

    # The engine panel: the model the batch ran on, loaded.
    model_row = page.locator("#models tr.model", has_text="sim-slow")
    assert model_row.locator(".model-state").inner_text() == "loaded"
    assert page.locator("#health-status").inner_text() == "ok"

    # Downloads: fetched with the key, saved from a Blob URL; each custom_id once across both files.
    got: dict[str, list[str]] = {}
    for kind in ("output", "errors"):
        with page.expect_download() as info:
            row.locator(f"a.dl-{kind}").click()
        path = tmp_path / f"{kind}.jsonl"
        info.value.save_as(path)
        assert info.value.suggested_filename == f"{batch['id']}_{kind}.jsonl"
        got[kind] = [orjson.loads(x)["custom_id"] for x in path.read_bytes().splitlines()]
    assert sorted(got["output"]) == sorted(f"c{i}" for i in range(LINES)) and got["errors"] == ["bad"]

    shot = os.environ.get("RUNNER_DASHBOARD_SCREENSHOT")
    if shot:
        _screenshot(page, base, shot)

    # The key stays for the tab: a reload shows the batch without typing it again.
    page.reload()
    page.locator(f'tr.batch[data-batch-id="{batch["id"]}"]').wait_for(timeout=10_000)

    # A second key sees none of the first key's batches.
    other = _open(browser, base, KEY_B, problems)
    other.wait_for_selector("#no-batches:not([hidden])")
    assert other.locator("tr.batch").count() == 0
    # A wrong key is told so, and sees nothing.
    other.fill("#key", "sk-wrong")
    other.click("#key-save")
    # (a locator wait: wait_for_function evaluates a string, which the page's CSP rightly refuses)
    expect(other.locator("#conn")).to_contain_text("Incorrect API key")
    assert other.locator("tr.batch").count() == 0
    assert problems == [], problems


def test_dashboard_renders_server_strings_as_text(base: str, browser: Browser) -> None:
    """A failed batch's error messages (which quote its input) are shown as text, never as markup."""
    problems: list[str] = []
    page = _open(browser, base, KEY_A, problems)
    evil = b'{"custom_id": "a", "method": "POST", "url": "/v1/<img src=x id=pwned>", "body": {}}\n'
    batch = _create_batch(base, KEY_A, evil)
    row = page.locator(f'tr.batch[data-batch-id="{batch["id"]}"]')
    row.locator(".st-failed").wait_for(timeout=20_000)
    errors = row.locator(".batch-error")
    expect(errors.first).to_contain_text("invalid_url Unsupported url '/v1/<img src=x id=pwned>'")
    assert "(line 1)" in errors.first.inner_text()
    assert page.locator("#pwned").count() == 0 and page.locator("td img").count() == 0
    assert problems == [], problems


def test_dashboard_stops_polling_while_hidden(base: str, browser: Browser) -> None:
    problems: list[str] = []
    page = _open(browser, base, KEY_A, problems)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/v1/batches" in r.url else None)
    # (Playwright's events arrive while it waits, so wait_for_timeout, not time.sleep)
    page.wait_for_timeout(2500)
    assert len(polls) >= 2, polls  # visible: about one a second

    def set_hidden(hidden: bool) -> None:
        page.evaluate("""hidden => {
            Object.defineProperty(document, "hidden", {get: () => hidden, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        }""", hidden)

    set_hidden(True)
    page.wait_for_timeout(500)  # a poll already on the wire may still land
    before = len(polls)
    page.wait_for_timeout(3000)
    assert len(polls) == before, "the hidden tab kept polling"
    set_hidden(False)
    page.wait_for_timeout(500)
    assert len(polls) > before, "no poll right after the tab was shown again"
    assert problems == [], problems
