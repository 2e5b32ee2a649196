"""A picture of guarded generations: a strip per prompt (the prompt, the training image it could copy,
the unguarded image, the guarded one) with the guard's verdict in plain words (demo, docs)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .report import MemorizationReport

TILE = 128  # images are upscaled (nearest) to this size, so 32-pixel testbed images stay readable


def plain_verdict(report: MemorizationReport) -> str:
    """What the guard found and did, in words a reader of the picture needs no manual for."""
    if report.status == "disabled":
        return "Not checked: the guard is disabled."
    if report.status == "error":
        return f"The guard failed; the image was {'blocked' if report.action == 'blocked' else 'returned'}."
    if report.status != "checked":
        return "Not checked: the signal is not available for this call."
    first = report.attempts[0] if report.attempts else None
    memorized = first.memorized if first else report.memorized
    intent = first.intent if first else report.intent
    if not memorized:
        return "A new image: nothing memorized. Left untouched."
    found = {
        "intended": "Reproduces the concept the prompt names, as asked.",
        "mixed": "Draws the concept asked for, but copies a memorized training photo with it.",
        "unintended": "Copies a memorized training image nobody asked for.",
    }.get(intent, "Memorized content.")
    done = {
        "allowed": "Allowed.",
        "resampled": f"Re-generated ({report.resamples} re-sample) without the copy."
        if report.resamples == 1
        else f"Re-generated ({report.resamples} re-samples) without the copy.",
        "flagged": "Returned, flagged in its report.",
        "blocked": "Blocked (a black image).",
        "none": "Returned untouched (observed only).",
    }.get(report.action, report.action)
    return f"{found} {done}"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _tile(image: Image.Image | np.ndarray | None, label: str) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    if image is None:
        draw = ImageDraw.Draw(tile)
        draw.text((8, TILE // 2 - 8), label, fill="grey", font=_font(13))
        return tile
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB").resize((TILE, TILE), Image.NEAREST)


def render_strips(
    rows: Sequence[tuple[str, np.ndarray | None, Image.Image, Image.Image, MemorizationReport]],
) -> Image.Image:
    """One row per prompt: (prompt, training image or None, unguarded image, guarded image, report)."""
    text_width, gap = 300, 12
    headers = ("prompt", "training image", "without memguard", "with memguard", "what memguard did")
    widths = (text_width, TILE, TILE, TILE, text_width)
    header_height, row_height = 28, TILE + 2 * gap
    width = sum(widths) + gap * (len(widths) + 1)
    picture = Image.new("RGB", (width, header_height + row_height * len(rows)), "white")
    draw = ImageDraw.Draw(picture)
    font, bold = _font(14), _font(15)
    x = gap
    for header, column_width in zip(headers, widths, strict=True):
        draw.text((x, 6), header, fill="black", font=bold)
        x += column_width + gap
    for r, (prompt, training, unguarded, guarded, report) in enumerate(rows):
        y = header_height + r * row_height + gap
        draw.multiline_text((gap, y), "\n".join(textwrap.wrap(f'"{prompt}"', 36)[:7]), fill="black", font=font)
        x = gap + text_width + gap
        for image, label in ((training, "none"), (unguarded, ""), (guarded, "")):
            picture.paste(_tile(image, label), (x, y))
            x += TILE + gap
        memorized = bool(report.attempts and report.attempts[0].memorized) or report.memorized
        colour = "firebrick" if memorized and report.action != "allowed" else "darkgreen"
        verdict = "\n".join(textwrap.wrap(plain_verdict(report), 36))
        draw.multiline_text((x, y), verdict, fill=colour, font=font)
    return picture
