"""Captcha readability: how often OCR (tesseract, a stand-in for a cheap script) reads our
captchas, against the captcha package's defaults, and a sheet of samples for a person to read.

A captcha should stop a script and not a friend: people misread heavily rotated characters
(a tilted 4, Y or K; a 7 taken for a 1), so ours tilts less and uses an alphabet without
look-alikes. OCR must still fail on it.

Usage: python bench/captcha_readability.py [--count 300] [--sheet captcha-samples.png]
Needs Debian's tesseract-ocr (sudo apt-get install tesseract-ocr); the sheet is written
without it.
"""
from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from captcha.image import ImageCaptcha  # noqa: E402
from PIL import Image  # noqa: E402

from app.community.captcha import ALPHABET, find_fonts, readable_images  # noqa: E402

OLD_ALPHABET = "ACDEFGHJKMNPRTUVWXY34679"  # before the readability change


def ocr(image: Path, alphabet: str) -> str:
    done = subprocess.run(["tesseract", str(image), "stdout", "--psm", "7", "-c",
                           f"tessedit_char_whitelist={alphabet}"],
                          capture_output=True, text=True, timeout=30, check=False)
    return "".join(done.stdout.split()).upper()


def measure(maker: ImageCaptcha, alphabet: str, count: int, folder: Path) -> tuple[int, float]:
    """(captchas read whole, share of characters read right) by OCR."""
    whole = right = 0
    for number in range(count):
        answer = "".join(secrets.choice(alphabet) for _ in range(5))
        path = folder / f"{number}.png"
        maker.write(answer, str(path))
        read = ocr(path, alphabet)
        whole += read == answer
        right += sum(a == b for a, b in zip(read, answer, strict=False))
    return whole, right / (5 * count)


def sheet(maker: ImageCaptcha, path: Path, rows: int = 6, columns: int = 2) -> list[str]:
    """A grid of samples to read by eye; returns their answers, in reading order."""
    answers = ["".join(secrets.choice(ALPHABET) for _ in range(5))
               for _ in range(rows * columns)]
    grid = Image.new("RGB", (200 * columns, 70 * rows), "white")
    for index, answer in enumerate(answers):
        grid.paste(maker.generate_image(answer), (200 * (index % columns), 70 * (index // columns)))
    grid.save(path)
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="captchas per kind")
    parser.add_argument("--sheet", type=Path, help="also write a sheet of samples here")
    args = parser.parse_args()
    fonts = find_fonts([])
    ours = readable_images()(width=200, height=70, fonts=fonts)
    if args.sheet:
        answers = sheet(ours, args.sheet)
        print(f"samples in {args.sheet}; answers: {' '.join(answers)}")
    if shutil.which("tesseract") is None:
        print("tesseract is not installed: sudo apt-get install tesseract-ocr", file=sys.stderr)
        return 1
    default = ImageCaptcha(width=200, height=70, fonts=fonts)
    with tempfile.TemporaryDirectory() as folder:
        for name, maker, alphabet in (("package defaults", default, OLD_ALPHABET),
                                      ("ours", ours, ALPHABET)):
            whole, chars = measure(maker, alphabet, args.count, Path(folder))
            print(f"{name:17} OCR read {whole}/{args.count} whole "
                  f"({100 * whole / args.count:.1f}%), {100 * chars:.1f}% of characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
