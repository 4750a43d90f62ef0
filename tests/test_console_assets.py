"""The console's files and /docs come from the package, never from a CDN (SPEC 7.4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console import STATIC
from api.store import Database

VENDORED = {"htmx.org": "htmx.min.js", "uplot": "uPlot.iife.min.js",
            "swagger-ui-dist": "swagger-ui-bundle.js"}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    db = Database(f"sqlite:///{tmp_path / 'patrol.sqlite'}")
    with TestClient(create_app(db)) as client:
        yield client
    db.close()


@pytest.mark.parametrize("package", sorted(VENDORED))
def test_each_vendored_package_keeps_its_license_and_version(package: str) -> None:
    folder = STATIC / "vendor" / package
    assert (folder / "LICENSE").read_text().strip(), f"{package} has no license text"
    assert (folder / "VERSION").read_text().startswith(f"{package}@")
    assert (folder / VENDORED[package]).stat().st_size > 10_000


def test_docs_loads_swagger_ui_from_this_server_only(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources, page.text
    assert all(src.startswith("/") and not src.startswith("//") for src in sources), sources
    assert "cdn" not in page.text.lower()
    for src in sources:  # every file the page names is served, without a token
        assert client.get(src).status_code == 200, src


def test_static_files_need_no_token_but_the_api_still_does(client: TestClient) -> None:
    response = client.get("/static/vendor/htmx.org/htmx.min.js")
    assert response.status_code == 200
    assert "htmx" in response.text[:2000]
    assert client.get("/api/v1/nonconformances").status_code == 401
    assert client.get("/redoc").status_code in (401, 404)  # ReDoc would come from a CDN
