"""Debian's Firefox ESR, the engine of Tor Browser, driven over Marionette.

The browser is started here (headless, a fresh profile, Marionette on a free loopback port) and
driven with PyPI's marionette-driver: no geckodriver and no browser download. The profile's
user.js carries Tor Browser's Safest-level choices that matter to this site: JavaScript off,
no autoplay (the viewer clicks play), cookies refused.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port, wait_for

log = logging.getLogger(__name__)

# Tor Browser's Safest level, as far as this site can tell: no JavaScript, no autoplay
# (media.autoplay.default 5 blocks audible and inaudible autoplay), no cookies at all.
SAFEST_PREFS = {
    "javascript.enabled": False,
    "media.autoplay.default": 5,
    "network.cookie.cookieBehavior": 2,
}
# Quiet, offline, loopback-only: no first-run pages, no update or telemetry traffic.
QUIET_PREFS = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "media.volume_scale": "0.0",
    "dom.disable_open_during_load": False,
}


# The page's <video class="player"> as the browser plays it (videoHeight tells the rendition).
VIDEO = ("var v = document.querySelector('video.player');"
         "return v ? {time: v.currentTime, paused: v.paused, src: v.currentSrc,"
         " height: v.videoHeight, error: v.error && v.error.code} : null;")
# The JS player's state, which it writes into #player-controls' data-attributes, and the
# page's own clock (`now`, ms) read at the same instant as currentTime.
PLAYER = ("var r = document.getElementById('player-controls');"
          "var v = document.querySelector('video.player');"
          "return {mode: r.dataset.mode, state: r.dataset.state, quality: r.dataset.quality,"
          " auto: r.dataset.auto, src: v.currentSrc, time: v.currentTime,"
          " height: v.videoHeight, now: performance.now()};")


def firefox_path() -> str | None:
    return shutil.which("firefox-esr") or shutil.which("firefox")


def _pref(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace('"', '\\"') + '"'


class Firefox:
    """One headless Firefox ESR process and its Marionette session."""

    def __init__(self, profile: Path, prefs: dict | None = None):
        self.profile = Path(profile)
        self.port = free_port()
        self.prefs = {**QUIET_PREFS, **(prefs if prefs is not None else SAFEST_PREFS),
                      "marionette.port": self.port}
        self.process: subprocess.Popen | None = None
        self.client = None

    def start(self) -> Firefox:
        from marionette_driver.marionette import Marionette

        binary = firefox_path()
        if binary is None:
            raise RuntimeError("firefox-esr is not installed: run .ci/setup --test")
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "user.js").write_text("".join(
            f"user_pref({_pref(k)}, {_pref(v)});\n" for k, v in self.prefs.items()))
        self.log_path = self.profile.parent / (self.profile.name + ".log")
        # -remote-allow-system-access lets the chrome context read whether a tab is busy.
        self.process = subprocess.Popen(
            [binary, "--headless", "--marionette", "-remote-allow-system-access", "--no-remote",
             "--profile", str(self.profile), "about:blank"],
            stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.profile), "MOZ_HEADLESS": "1"},
            start_new_session=True)
        wait_for(self._listening, 60, interval=0.2, what="Firefox's Marionette port")
        self.client = Marionette(host="127.0.0.1", port=self.port)
        self.client.start_session()
        self.client.timeout.page_load = 15
        return self

    def _listening(self) -> bool:
        import socket

        if self.process.poll() is not None:
            raise RuntimeError("Firefox exited early: " + self.log_path.read_text(errors="replace"))
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    # --- reading the page ------------------------------------------------------------------

    def content_script(self, script: str, args: list | None = None):
        """Run JS in the page as a privileged observer (works with the page's JS off)."""
        return self.client.execute_script(script, script_args=args or [], sandbox="system")

    def tab_busy(self) -> bool:
        """Whether the selected tab still shows its loading spinner."""
        with self.client.using_context("chrome"):
            return bool(self.client.execute_script(
                "return gBrowser.selectedTab.hasAttribute('busy') || "
                "gBrowser.selectedBrowser.webProgress.isLoadingDocument;"))

    def ready_state(self) -> str:
        return self.content_script("return document.readyState;")

    def open(self, url: str, wait_complete: float = 5.0) -> float:
        """Start loading `url` without waiting, then wait until it is complete and idle.

        Returns the seconds it took; raises TimeoutError when the page keeps loading.
        """
        self.client.timeout.page_load = 60
        started = time.monotonic()
        with self.client.using_context("chrome"):
            self.client.execute_script(
                "gBrowser.selectedBrowser.fixupAndLoadURIString(arguments[0], "
                "{triggeringPrincipal: Services.scriptSecurityManager.getSystemPrincipal()});",
                script_args=[url])
        wait_for(lambda: self.content_script("return document.URL;") == url, wait_complete,
                 interval=0.05, what=f"{url} to start loading")
        wait_for(lambda: self.ready_state() == "complete" and not self.tab_busy(),
                 wait_complete, interval=0.05, what=f"{url} to finish loading")
        return time.monotonic() - started

    def video(self) -> dict | None:
        return self.content_script(VIDEO)

    def player(self) -> dict:
        return self.content_script(PLAYER)

    def click_play(self) -> None:
        """Click the video (autoplay is blocked): it starts loading."""
        from marionette_driver.by import By

        self.client.find_element(By.CSS_SELECTOR, "video.player").click()

    def play(self, timeout: float = 10.0) -> dict:
        """Click the video and wait until it plays; its state then."""
        self.click_play()
        return self.wait_playing(timeout)

    def wait_playing(self, timeout: float = 10.0) -> dict:
        """Wait until the video plays; its state then."""
        return wait_for(lambda: (v := self.video())["time"] > 0 and v, timeout, 0.1,
                        "the video to play")

    def follow(self, element, timeout: float = 10.0) -> None:
        """Click a link to another page; wait until that page is complete and idle."""
        before = self.content_script("return performance.timeOrigin;")
        element.click()
        wait_for(lambda: self.content_script("return performance.timeOrigin;") != before
                 and self.ready_state() == "complete" and not self.tab_busy(),
                 timeout, 0.1, "the next page")

    def stop(self) -> None:
        if self.client is not None:
            try:
                self.client.delete_session()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                log.debug("closing the Marionette session failed", exc_info=True)
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="session")
def firefox(tmp_path_factory):
    """One Firefox ESR at Tor Browser's Safest level, shared by every test that asks for it.

    Import it into a test module (`from firefox import firefox`). Tests that flip a pref
    (JavaScript on) must restore it.
    """
    pytest.importorskip("marionette_driver")
    if firefox_path() is None:
        pytest.fail("firefox-esr is not installed: run .ci/setup --test (apt-get install "
                    "firefox-esr)")
    browser = Firefox(tmp_path_factory.mktemp("firefox") / "profile").start()
    yield browser
    browser.stop()
