"""Captchas: images (and audio on request) from the `captcha` package, single-use answers.

Drawing costs CPU, so anonymous clients never trigger it directly: a background greenlet keeps
a bounded pool of ready images, drawing at most `generate_per_second`; a viewer who asks again
gets back the challenge they already hold. Audio (about 0.2 s of CPU each) is made only when a
viewer asks for it, under a global per-minute budget. An answer is checked once: the challenge
is gone afterwards whether it was right or wrong, and it only works for the viewer it was given to.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.event
import gevent.lock

from app.config import CaptchaConfig

log = logging.getLogger(__name__)

# Letters and digits that neither look nor sound alike: no 0/O, 1/I/L/7, 2/Z, 5/S, 8/B, 6/G,
# U/V, and none of 4/Y/K, which friends misread once rotated.
ALPHABET = "ACDEFHJMNPRTUWX369"
DEJAVU = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
]


def readable_images():
    """The captcha package's image maker, tilted and warped less than its defaults (up to
    30 degrees, which people misread), with two thicker strokes through the text in place of
    its one thin arc, which is what keeps OCR out once the letters stand straighter.
    `bench/captcha_readability.py` measures both against tesseract as a stand-in for a
    script (docs/reliability.md)."""
    from captcha.image import ImageCaptcha
    from PIL.ImageDraw import Draw

    class ReadableCaptcha(ImageCaptcha):
        character_rotate = (-12, 12)
        character_warp_dx = (0.05, 0.15)
        character_warp_dy = (0.05, 0.15)

        @staticmethod
        def create_noise_curve(image, color):
            width, height = image.size
            for _ in range(2):
                left = secrets.randbelow(width // 5 + 1)
                right = width - secrets.randbelow(width // 5 + 1)
                top = secrets.randbelow(height // 2) + height // 4
                bottom = top + secrets.randbelow(height // 2) + 8
                Draw(image).arc([left, top - 20, right, bottom], secrets.randbelow(30),
                                150 + secrets.randbelow(60), fill=color, width=2)
            return image

    return ReadableCaptcha


class CaptchaError(Exception):
    """Captchas cannot be made; the text says how to fix it."""


def find_fonts(configured: list[str]) -> list[str]:
    """The configured fonts, else the package's own font, else DejaVu Sans."""
    if configured:
        missing = [f for f in configured if not os.path.isfile(f)]
        if missing:
            raise CaptchaError(f"captcha font not found: {', '.join(missing)}; fix "
                               "'captcha.fonts' in config.toml or leave it empty for the default")
        return list(configured)
    from captcha.image import DEFAULT_FONTS

    for candidates in (DEFAULT_FONTS, DEJAVU):
        found = [f for f in candidates if os.path.isfile(f)]
        if found:
            return found
    raise CaptchaError("no font for captcha images: install one (Debian: sudo apt-get install "
                       "fonts-dejavu-core) or set 'captcha.fonts' in config.toml")


@dataclass
class Challenge:
    id: str
    answer: str = field(repr=False)
    image: bytes = field(repr=False)
    viewer_id: str = ""
    issued: float = 0.0
    audio: bytes | None = field(default=None, repr=False)


def normalise(answer: str) -> str:
    return "".join(answer.split()).upper()[:32]


class Captchas:
    def __init__(self, settings: CaptchaConfig, answers_file: Path | None = None):
        self.settings = settings
        self.fonts = find_fonts(settings.fonts)
        self._images = readable_images()(width=settings.width, height=settings.height,
                                         fonts=self.fonts)
        self._audio_maker = None
        self._audio_lock = gevent.lock.BoundedSemaphore()
        self._pool: deque[tuple[str, bytes]] = deque(maxlen=settings.pool_size)
        self._pending: OrderedDict[str, Challenge] = OrderedDict()
        self._by_viewer: dict[str, str] = {}
        self._audio_times: deque[float] = deque(maxlen=settings.audio_per_minute)
        self._wanted = gevent.event.Event()
        self._answers_file = answers_file
        self._filler = None
        self._last_direct_draw = 0.0

    def start(self) -> None:
        self._filler = gevent.spawn(self._fill)

    @property
    def ready(self) -> int:
        """Images drawn and waiting for newcomers (0: newcomers wait)."""
        return len(self._pool)

    def stop(self) -> None:
        if self._filler is not None:
            self._filler.kill()

    # --- making ------------------------------------------------------------------------

    def _draw(self) -> tuple[str, bytes]:
        answer = "".join(secrets.choice(ALPHABET) for _ in range(self.settings.length))
        return answer, self._images.generate(answer, format="png").getvalue()

    def _fill(self) -> None:
        pause = 1.0 / self.settings.generate_per_second
        threadpool = gevent.get_hub().threadpool
        while True:
            if len(self._pool) >= self.settings.pool_size:
                self._wanted.clear()
                self._wanted.wait(5)
                continue
            try:
                self._pool.append(threadpool.apply(self._draw))
            except Exception:  # a broken font must not kill the filler silently
                log.exception("could not draw a captcha")
                gevent.sleep(5)
            gevent.sleep(pause)

    # --- handing out -------------------------------------------------------------------

    def issue(self, viewer_id: str,
              may_draw: Callable[[], bool] | None = None) -> Challenge | None:
        """The viewer's current challenge, or a new one; None if none is ready right now, or
        `may_draw` (asked only when a new one would be handed out) says no."""
        self._expire()
        held = self._held_by(viewer_id)
        if held is not None:
            return held
        if may_draw is not None and not may_draw():
            return None
        if self._pool:
            answer, image = self._pool.popleft()
        elif self._may_draw_now():
            answer, image = gevent.get_hub().threadpool.apply(self._draw)
        else:
            self._wanted.set()
            return None
        self._wanted.set()
        challenge = Challenge(secrets.token_urlsafe(12), answer, image, viewer_id,
                              time.monotonic())
        self._remember(challenge)
        if self._answers_file:
            with open(self._answers_file, "a") as f:
                f.write(f"{challenge.id} {answer}\n")
        return challenge

    def _held_by(self, viewer_id: str) -> Challenge | None:
        """The challenge this viewer holds, if any (kept in Redis by RedisCaptchas)."""
        return self._pending.get(self._by_viewer.get(viewer_id, ""))

    def _remember(self, challenge: Challenge) -> None:
        self._pending[challenge.id] = challenge
        self._by_viewer[challenge.viewer_id] = challenge.id
        while len(self._pending) > self.settings.max_pending:
            _, dropped = self._pending.popitem(last=False)
            self._by_viewer.pop(dropped.viewer_id, None)

    def _keep_audio(self, challenge: Challenge) -> None:
        pass  # the held challenge object itself keeps it

    def _may_draw_now(self) -> bool:
        """The pool ran dry (e.g. just after start): draw one now, within the same rate."""
        now = time.monotonic()
        if now - self._last_direct_draw < 1.0 / self.settings.generate_per_second:
            return False
        self._last_direct_draw = now
        return True

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.settings.expire_seconds
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.issued >= cutoff:
                break
            self._forget(oldest.id)

    def _forget(self, challenge_id: str) -> Challenge | None:
        challenge = self._pending.pop(challenge_id, None)
        if challenge is not None and self._by_viewer.get(challenge.viewer_id) == challenge_id:
            del self._by_viewer[challenge.viewer_id]
        return challenge

    def _held(self, challenge_id: str, viewer_id: str) -> Challenge | None:
        self._expire()
        challenge = self._pending.get(challenge_id)
        if challenge is None or not hmac.compare_digest(challenge.viewer_id, viewer_id):
            return None
        return challenge

    def image(self, challenge_id: str, viewer_id: str) -> bytes | None:
        challenge = self._held(challenge_id, viewer_id)
        return challenge.image if challenge else None

    def audio(self, challenge_id: str, viewer_id: str) -> bytes | None | bool:
        """WAV bytes; None for an unknown challenge; False when the audio budget is spent."""
        challenge = self._held(challenge_id, viewer_id)
        if challenge is None:
            return None
        if challenge.audio is None:
            now = time.monotonic()
            if (len(self._audio_times) == self._audio_times.maxlen
                    and now - self._audio_times[0] < 60):
                return False
            self._audio_times.append(now)
            maker = self._audio()
            challenge.audio = bytes(gevent.get_hub().threadpool.apply(
                maker.generate, (challenge.answer,)))
            self._keep_audio(challenge)
        return challenge.audio

    def _audio(self):
        """The audio maker with every voice loaded. The package loads voices lazily on first
        use, and two first uses at once on pool threads saw a half-filled cache (KeyError)."""
        with self._audio_lock:
            if self._audio_maker is None:
                from captcha.audio import AudioCaptcha

                maker = AudioCaptcha()
                gevent.get_hub().threadpool.apply(maker.load)
                self._audio_maker = maker
        return self._audio_maker

    def check(self, challenge_id: str, viewer_id: str, answer: str) -> bool:
        """True once for the right answer; the challenge is used up either way."""
        challenge = self._held(challenge_id, viewer_id)
        if challenge is None:
            return False
        self._forget(challenge_id)
        return hmac.compare_digest(normalise(answer).encode(), challenge.answer.encode())
