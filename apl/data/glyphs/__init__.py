"""A generated many-class dataset for retrieval: characters drawn in the fonts that matplotlib ships.

Nothing is downloaded: every image is rendered with FreeType (`matplotlib.ft2font.FT2Font`) from
the 16 faces in ``matplotlib.get_data_path()/fonts/ttf`` (DejaVu Sans, Sans Mono and Serif and
STIX General, each in four styles), then distorted with torch. The set is meant for retrieval of
unseen classes: train on half of the classes (`GlyphSet.train_classes`) and evaluate on the
other half (`GlyphSet.unseen_classes`), which the network never saw.

Characters (`CHARACTERS`): Latin A-Z a-z, digits 0-9, Greek and Cyrillic upper and lower case
(with final sigma and Ё ё), and symbols (math operators, arrows, currency, card suits,
punctuation, shapes). A character is drawn only in the faces that have a glyph for it, and is
kept only when at least `MIN_FACES` (8) faces have one.

Classes are visual, not Unicode: characters whose undistorted renders are nearly identical in
every face that has both (e.g. Latin A, Greek Alpha and Cyrillic A) are merged, automatically,
by union-find: the largest pixel of their blurred difference must stay under `MERGE_THRESHOLD`.
A class's name is its characters joined ("AΑА"). The classes do not depend on the image size or
on the seed; `merge_report()` lists the merged groups and the closest pairs left apart.

Layout (at 4x the target size, then area-averaged down, so images are antialiased): every glyph
is drawn at the same font size (em = 0.6 of the image side) on a common baseline (0.656 of the
side from the top) and centred horizontally on its ink, so that case, size and height above the
baseline stay visible (lower-case x is smaller than upper-case X, a comma hangs lower than an
apostrophe). Only a glyph whose ink would leave the central 70% of the image is moved (vertically)
or, when larger than that, drawn at a smaller size.

Distortions: image k of class c is drawn in the k-th (cyclically) of the faces that have one of
the class's characters, with the class's first character that face has, and distorted with a
`torch.Generator` seeded from (seed, c, k), all uniform draws:

- stroke thickness t in [-1, 1]: for t < 0 the 4x render is blended (weight -t) with its 3x3
  grey-scale erosion (strokes at most 0.5 target pixels thinner), for t > 0 (weight t) with its
  5x5 dilation (strokes at most 1 target pixel thicker);
- affine (an `F.affine_grid` grid and `F.grid_sample`, bilinear, zero padding, about the image
  centre, on the 4x render): rotation
  in [-10, 10] degrees, horizontal shear in [-0.15, 0.15], isotropic scale in [0.9, 1.1],
  translation in [-0.08, 0.08] of the image side in x and in y;
- area-averaging down to size x size;
- Gaussian blur, 3x3 kernel, sigma in [0, 0.7] target pixels (0: none);
- auto-contrast: the image is divided by its brightest pixel (the gain at most 10), so that thin
  strokes (the hairline outlines of ♡ ♢ ♤ ♧ in DejaVu) dimmed by erosion and blur stay visible;
- additive Gaussian noise, standard deviation in [0, 0.04];
- clamping to [0, 1], then quantisation to uint8 (0-255).

Pixels are ink (1 = 255) on a 0 background. `make_glyphs` generates a set (deterministically, for
the same matplotlib, FreeType and torch); `load_glyphs` caches it as an .npz file.

Modules: `characters` (candidate characters, font faces, which characters enough faces have),
`render` (FreeType drawing and placement at 4x), `classes` (look-alike merging), `distort` (per-image
seeds and distortions), `dataset` (`GlyphSet`, `make_glyphs`, class splits, torch datasets) and
`cache` (`load_glyphs`). The names below are re-exported from them; code reads each constant from
its own module, so patch it there (e.g. `apl.data.glyphs.characters.CHARACTERS`).
"""
from .cache import FORMAT_VERSION, default_cache_dir, glyphs_cache_path, load_glyphs
from .characters import CHARACTERS, CYRILLIC, DIGITS, FONT_FACES, GREEK, LATIN, MIN_FACES, SYMBOLS
from .classes import MERGE_BLUR, MERGE_SIZE, MERGE_THRESHOLD, merge_report
from .dataset import (
    GlyphDataset,
    GlyphSet,
    glyph_subset,
    long_tail_sizes,
    long_tail_subset,
    make_glyphs,
    split_classes,
    split_glyphs,
    validation_split,
)

__all__ = [
    "CHARACTERS", "CYRILLIC", "DIGITS", "FONT_FACES", "FORMAT_VERSION", "GREEK", "GlyphDataset", "GlyphSet",
    "LATIN", "MERGE_BLUR", "MERGE_SIZE", "MERGE_THRESHOLD", "MIN_FACES", "SYMBOLS", "default_cache_dir",
    "glyph_subset", "glyphs_cache_path", "long_tail_sizes", "long_tail_subset", "load_glyphs", "make_glyphs", "merge_report", "split_classes",
    "split_glyphs", "validation_split",
]
