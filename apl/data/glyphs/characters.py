"""The candidate characters, the font faces they are drawn in, and which characters enough faces have."""
from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.ft2font import FT2Font

FONT_FACES = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
)
"""The font files (in matplotlib's fonts/ttf, without .ttf), in the order images cycle over them."""

LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
GREEK = (
    "".join(chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2)  # Α..Ω (0x3A2 is unassigned)
    + "".join(chr(c) for c in range(0x3B1, 0x3CA))  # α..ω, with final sigma ς
)
CYRILLIC = (
    "".join(chr(c) for c in range(0x410, 0x430)) + "Ё"  # А..Я, Ё
    + "".join(chr(c) for c in range(0x430, 0x450)) + "ё"  # а..я, ё
)
SYMBOLS = (
    "+−×÷=≠<>≤≥±∓∞∑∏√∫∂∇∈∉∋∩∪⊂⊃⊆⊇∧∨¬∀∃∄∅≈≃≅≡∝∠⊥∥⊕⊗⊙∘∴∵′″%‰"  # mathematics
    "←→↑↓↔↕⇐⇒⇑⇓⇔↖↗↘↙↩↪↺↻"  # arrows
    "$€£¥¢₽₩₹¤₪₫₴₸"  # currency
    "♠♣♥♦♡♢♤♧"  # card suits
    "!?¿¡&@#*§¶†‡•©®™°µ~^()[]{}/\\|;:.,'\"-_–—…«»‹›"  # punctuation and signs
    "♪♫☺☹◆◇■□▲△▼▽○●◊⌂☼☀"  # shapes and pictographs
)
CHARACTERS = LATIN + DIGITS + GREEK + CYRILLIC + SYMBOLS
"""Every candidate character, in class order (a class is ordered by its first character here)."""

MIN_FACES = 8
"""A character is kept only if at least this many of the `FONT_FACES` have a glyph for it."""


def font_paths() -> list[Path]:
    """The files of `FONT_FACES` in matplotlib's data directory (FileNotFoundError if any is missing)."""
    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [root / f"{name}.ttf" for name in FONT_FACES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib font files missing: {missing} (broken matplotlib installation?)")
    return paths


def open_fonts() -> list[FT2Font]:
    """The `FONT_FACES`, opened with FreeType, in order."""
    return [FT2Font(str(p)) for p in font_paths()]


def kept_characters(fonts: list[FT2Font]) -> tuple[str, ...]:
    """The characters of `CHARACTERS` that at least `MIN_FACES` of `fonts` have, in order."""
    return tuple(
        c for c in dict.fromkeys(CHARACTERS)  # de-duplicated, order kept
        if sum(font.get_char_index(ord(c)) != 0 for font in fonts) >= MIN_FACES
    )
