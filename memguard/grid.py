"""A picture of a batch with the guard's verdict under each image (demo, CLI, docs)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from .report import MemorizationReport

CELL = 160  # generated images are upscaled (nearest) to this size so small testbed images stay readable
TEXT_LINES = 4
LINE_HEIGHT = 13


def verdict_lines(report: MemorizationReport) -> list[str]:
    if report.status != "checked":
        return [report.status, (report.reason or "")[:26]]
    first = report.attempts[0] if report.attempts else None  # the caller's own generation
    memorized = first.memorized if first else report.memorized
    score = first.score if first else report.score
    lines = [
        f"{'MEMORIZED' if memorized else 'clean'} -> {report.action}",
        f"score {score:.3f} / thr {report.threshold:.3f}",
        f"step {report.decided_at_step} ({report.threshold_source})",
    ]
    if memorized:
        lines.append(f"{first.intent if first else report.intent}, {report.resamples} re-sample(s)")
    return lines


def render_grid(
    images: Sequence[Image.Image], titles: Sequence[str], reports: Sequence[MemorizationReport]
) -> Image.Image:
    """One column per image: the image, its title, then the verdict lines."""
    if not (len(images) == len(titles) == len(reports)):
        raise ValueError("render_grid needs as many titles and reports as images")
    height = CELL + (TEXT_LINES + 1) * LINE_HEIGHT + 8
    grid = Image.new("RGB", (CELL * len(images), height), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for column, (image, title, report) in enumerate(zip(images, titles, reports, strict=True)):
        x = column * CELL
        grid.paste(image.convert("RGB").resize((CELL - 8, CELL - 8), Image.NEAREST), (x + 4, 4))
        lines = [title[:26]] + verdict_lines(report)
        for row, line in enumerate(lines):
            colour = "firebrick" if row > 0 and report.memorized else "black"
            draw.text((x + 4, CELL + row * LINE_HEIGHT), line, fill=colour, font=font)
    return grid
