"""The dashboard's files as the server sends them (in process, no browser: tests/test_dashboard.py
drives the page in chromium): keyless, same-origin only, under a CSP, and nothing else opened up."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from runner.api.app import create_app
from runner.api.dashboard import ASSETS
from runner.model_specs import ModelRegistry
from runner.settings import Settings


@pytest.fixture
def keyed(tmp_path: Path, registry: ModelRegistry) -> Iterator[TestClient]:
    settings = Settings(data_dir=str(tmp_path / "data"), engine=False, sweep_interval=3600.0, api_keys=("sk-a",))
    with TestClient(create_app(settings, registry)) as c:
        yield c


def test_page_and_assets_need_no_key_and_carry_the_csp(keyed: TestClient) -> None:
    types = {"/": "text/html", "/static/dashboard.js": "text/javascript", "/static/dashboard.css": "text/css"}
    assert set(ASSETS) == set(types)
    for path, media in types.items():
        r = keyed.get(path)
        assert r.status_code == 200, (path, r.text[:200])
        assert r.headers["content-type"].startswith(media)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    page = keyed.get("/").text
    assert '<script src="/static/dashboard.js"' in page and 'href="/static/dashboard.css"' in page


def test_only_the_dashboard_is_opened_up(keyed: TestClient) -> None:
    # Other /static/ names and the data the page shows still need the key.
    for path in ("/static/other.js", "/static/", "/index.html", "/v1/batches", "/v1/files"):
        r = keyed.get(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "missing_api_key"
    assert keyed.get("/v1/batches", headers={"Authorization": "Bearer sk-a"}).status_code == 200
    assert keyed.post("/").status_code == 405


def test_assets_load_nothing_from_elsewhere_and_build_no_markup_from_strings(keyed: TestClient) -> None:
    for path in ASSETS:
        text = keyed.get(path).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path  # offline: no CDN, no fonts
    js = keyed.get("/static/dashboard.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
