"""Shared fixtures: one live ffmpeg stream and one server for the whole session."""
from __future__ import annotations

import pytest
from support import Server, TestStream


@pytest.fixture(scope="session")
def live_stream(tmp_path_factory):
    stream = TestStream(tmp_path_factory.mktemp("live") / "stream").start()
    stream.wait_segments(2)
    yield stream
    stream.stop()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, live_stream):
    """A server watching the shared live stream. Tests must not stop or restart either."""
    server = Server(tmp_path_factory.mktemp("server"), live_stream.directory).start()
    server.wait_live()
    yield server
    server.stop()


@pytest.fixture
def own_stream(tmp_path):
    """A private stream + server for tests that end, kill or restart the stream."""
    stream = TestStream(tmp_path / "stream")
    server = Server(tmp_path, stream.directory)
    yield stream, server
    stream.stop()
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium shared by every browser test; contexts give each test a fresh profile."""
    from browser import CHROMIUM_ARGS, chromium_path

    playwright_api = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    if path is None:
        pytest.fail("chromium is not installed: run .ci/setup --test (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def nojs_page(browser):
    """A page as Tor Browser's Safest level shows it: no JavaScript, no cookies kept."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    yield page
    context.close()
