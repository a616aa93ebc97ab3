"""Shared fixtures: one live ffmpeg stream and one server for the whole session, a chat
server and a two-rendition stream per test module that asks, and an in-process app with its
test client (flaskr style)."""
from __future__ import annotations

import pytest
from chat_support import chat_server
from support import LOW_RENDITION, Server, TestStream, make_app, wait_for


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


@pytest.fixture(scope="module")
def two_renditions(tmp_path_factory):
    """stream.sh with a low rendition and a server watching it, one pair per test module."""
    work = tmp_path_factory.mktemp("renditions")
    stream = TestStream(work / "stream", renditions=LOW_RENDITION).start()
    stream.wait_segments(3)
    wait_for(lambda: (work / "stream" / "low.m3u8").exists(), 20, what="the low rendition")
    server = Server(work, stream.directory).start()
    server.wait_live()
    yield stream, server
    server.stop()
    stream.stop()


@pytest.fixture
def own_stream(tmp_path):
    """A private stream + server for tests that end, kill or restart the stream."""
    stream = TestStream(tmp_path / "stream")
    server = Server(tmp_path, stream.directory)
    yield stream, server
    stream.stop()
    server.stop()


@pytest.fixture(scope="session")
def playwright():
    """The one Playwright driver of the session: a second sync_playwright() in the same
    process refuses to start while this one runs."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright):
    """Headless Chromium shared by every browser test; contexts give each test a fresh profile."""
    from browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.fail("chromium is not installed: run .ci/setup --test (apt-get install chromium)")
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


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """This module's chat server (known broadcaster password, readable captcha answers).

    A module says how its server differs: `CHAT_CONFIG` (extra config.toml text) and
    `CHAT_STREAM` ("live": the shared test stream, the default; "none": an empty folder)."""
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    if getattr(request.module, "CHAT_STREAM", "live") == "live":
        stream_dir = request.getfixturevalue("live_stream").directory
    else:
        stream_dir = workdir / "stream"
    srv = chat_server(workdir, stream_dir, getattr(request.module, "CHAT_CONFIG", "")).start()
    yield srv
    srv.stop()


@pytest.fixture
def app(tmp_path):
    """The app in this process, on a temporary state folder; nothing started."""
    application = make_app(tmp_path)
    yield application
    application.services.stop()


@pytest.fixture
def client(app):
    return app.test_client(use_cookies=False)
