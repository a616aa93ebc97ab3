"""A real headless Chromium (Debian's), started once per test session."""
from __future__ import annotations

import shutil

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Page probes shared by the player tests: the player's state (data attributes) and the video.
PLAYER = "document.getElementById('player-controls').dataset"
VIDEO = "document.querySelector('video.player')"

# Installs a recorder of stalls: window.__stalls lists each wait from 'waiting' to 'playing', s.
STALLS_JS = """() => {
  const v = document.querySelector('video.player');
  window.__stalls = []; window.__waitingSince = null;
  v.addEventListener('waiting', () => { window.__waitingSince = performance.now(); });
  v.addEventListener('playing', () => {
    if (window.__waitingSince !== null) {
      window.__stalls.push((performance.now() - window.__waitingSince) / 1000);
      window.__waitingSince = null;
    }
  });
}"""
