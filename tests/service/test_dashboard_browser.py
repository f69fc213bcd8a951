"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright through
the system binary: nothing downloads a browser build) against the real service, the real
Label Studio of the session and the real embed-lr model: the page's numbers are the API's, the
learning curve draws one dot per model version, promote is refused without the token and
changes the current model with it, and the page follows a change without a reload. A
screenshot goes to ``$ALLOOP_TEST_ARTIFACTS`` (default: the test's temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.browser import FLAGS, find_chromium
from connectors.labelstudio import server as lss
from connectors.store import SqlStore
from loop.errors import ConfigError
from tests.service.conftest import wait_until
from tests.service.test_service_live import _bot, _idle, _seed, _settings, serving

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def _browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:  # pragma: no cover - installed by deploy/setup.sh
        pytest.fail(f"playwright is a test dependency: {err}")
    try:
        chromium = find_chromium()
    except ConfigError as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser test needs chromium when CI=true: {err}")
        pytest.skip(str(err))
    return sync_playwright, chromium


def test_the_dashboard_in_a_real_browser(
    ls_server: lss.LocalLabelStudio, cache_dir: Path, tmp_path: Path
) -> None:
    sync_playwright, chromium = _browser()
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        gold, _ = _seed(store, pool=40, labeled=10)
        settings = _settings(
            tmp_path, ls_server, cache_dir, batch_size=6, min_new_labels=6, refill_below=1
        )
        with serving(settings, store, ls_server) as service:
            _idle(service)  # trains on the imported labels, pushes 6
            pid = service.tool.project_id
            for _ in range(2):  # two more versions from answers given in Label Studio
                before = len(store.model_versions())
                _bot(ls_server, pid, gold).answer_pending()
                service.poll_once()
                wait_until(lambda b=before: len(store.model_versions()) > b, 120, "a retrain")
                _idle(service)
            base = f"http://127.0.0.1:{settings.service.port}"
            api = httpx.Client(base_url=base, timeout=30)
            token = {"Authorization": f"Bearer {service.secrets.api_token}"}
            status = api.get("/api/status").json()
            models = api.get("/api/models").json()
            versions = [m["id"] for m in models["models"]]
            assert len(versions) == 3 and models["current"] == versions[-1]
            out = Path(os.environ.get("ALLOOP_TEST_ARTIFACTS") or tmp_path)
            out.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=list(FLAGS[1:]))
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(base + "/")

                    def text(field: str) -> str:
                        return page.inner_text(f'[data-field="{field}"]').strip()

                    def said(words: str) -> bool:  # the page's CSP forbids eval: poll from here
                        return words in page.inner_text("#action-status")

                    # the numbers are the API's
                    assert text("pool") == f"{status['pool']:,}"
                    assert text("labeled") == f"{sum(status['labels_per_class'].values()):,}"
                    assert text("waiting") == str(status["waiting_for_answers"])
                    assert text("current-model") == models["current"]
                    for m in models["models"]:
                        acc = page.inner_text(f'[data-model-acc="{m["id"]}"]')
                        assert acc == f"{100 * m['metrics']['test_accuracy']:.1f} %"
                    link = page.get_attribute('[data-field="labeling-link"]', "href")
                    assert link == f"{ls_server.url}/projects/{pid}/data"
                    # the curve draws: one dot per version, a line through them
                    assert page.locator("svg.curve circle.point").count() == 3
                    assert (
                        len(page.get_attribute("svg.curve polyline.series", "points").split()) == 3
                    )
                    page.screenshot(path=str(out / "dashboard.png"), full_page=True)

                    # promote without the token: refused, nothing changes
                    first = versions[0]
                    page.click(f'button[data-version="{first}"]')
                    wait_until(lambda: said("refused"), 20, "the page to say refused")
                    assert "401" in page.inner_text("#action-status")
                    assert api.get("/api/models").json()["current"] == versions[-1]
                    # with the token: the current model changes, and the page shows it
                    page.fill("#token", service.secrets.api_token)
                    page.click(f'button[data-version="{first}"]')
                    wait_until(lambda: said("done"), 20, "the page to say done")
                    assert api.get("/api/models").json()["current"] == first
                    wait_until(
                        lambda: text("current-model") == first,
                        20,
                        "the page to show the current model",
                    )
                    # a change made elsewhere shows without a reload (the page refreshes itself)
                    r = api.post(f"/api/models/{versions[-1]}/promote", headers=token)
                    assert r.status_code == 200, r.text
                    wait_until(
                        lambda: text("current-model") == versions[-1],
                        20,
                        "the page to show the current model",
                    )
                    # a phone's width: nothing wider than the screen but the scrolling tables
                    page.set_viewport_size({"width": 390, "height": 844})
                    wide = page.evaluate(
                        "Array.from(document.querySelectorAll('section')).filter(s => s.scrollWidth > s.clientWidth + 1 && !s.querySelector('.scroll')).length"
                    )
                    assert wide == 0
                    page.screenshot(path=str(out / "dashboard-phone.png"), full_page=True)
                    # keyboard: the token field and the buttons can be reached with Tab
                    page.focus("#token")
                    page.keyboard.press("Tab")
                    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON")
                    assert errors == []
                finally:
                    browser.close()
            assert (out / "dashboard.png").stat().st_size > 10_000
    finally:
        store.close()
