"""Markdown tables and the report of a study, from plain data.

What to use when: `markdown_table(rows, columns)` turns a list of dicts into a GitHub markdown
table (numbers formatted with `format_number`); `write_report(path, title, sections)` writes a
``report.md`` from (heading, text) sections, where the text may hold tables and links to the
study's PNG files. `studies.study.run_study` uses both; they take no toolkit objects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def format_number(value, digits: int = 4) -> str:
    """A number as text: integers as they are, floats with `digits` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_number(v, digits)}" for k, v in value.items())
    return str(value)


def markdown_table(rows, columns=None, headers: dict | None = None, digits: int = 4) -> str:
    """GitHub markdown table of `rows` (list of dicts); `columns` picks and orders the keys,
    `headers` renames them."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    headers = headers or {}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_number(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_json(path, data) -> Path:
    """JSON with NaN and inf written as null (strict JSON for other tools)."""
    return write_markdown(path, json.dumps(_strict(data), indent=2, sort_keys=False) + "\n")


def _strict(value):
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return _strict(value.item())
        except (ValueError, TypeError):
            return _strict(value.tolist())
    return value


def fixed_suffix(fixed) -> str:
    """", M_gev2 fixed at 0.0525" for {name: value} (", M_gev2 fixed" for names): the parameters a
    fit held, for the lines that describe it."""
    if isinstance(fixed, dict):
        return "".join(f", {name} fixed at {value:g}" for name, value in fixed.items())
    return "".join(f", {name} fixed" for name in fixed or ())


def image_link(name: str, caption: str) -> str:
    return f"![{caption}]({name})\n\n*{caption}* ([{name}]({name}))\n"


def write_report(path, title: str, sections) -> Path:
    """report.md with a title and (heading, markdown text) sections in order."""
    parts = [f"# {title}\n"]
    for heading, text in sections:
        parts.append(f"## {heading}\n\n{text.rstrip()}\n")
    return write_markdown(path, "\n".join(parts))
