"""Query strings of `medmix view`, parsed strictly: a malformed one is a 400 that says what is wrong.

Strict on purpose: URLs are how a filtered view is shared, so an unknown or misspelled parameter
must not silently show something else, and nothing a browser sends may reach a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CATEGORIES = ("source", "domain", "task", "license", "modality", "split")
FILTERS = (*CATEGORIES, "image")   # image: "yes" (rows with an image) or "no"
MAX_TEXT = 200
MAX_PAGE = 1_000_000


class BadQuery(ValueError):
    """The query string cannot be used; the message is shown to the user (escaped) with a 400."""


def _single(items: Iterable[tuple[str, str]], allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in items:
        if key not in allowed:
            raise BadQuery(f"unknown parameter {key!r}; this page takes {', '.join(sorted(allowed))}")
        if key in out:
            raise BadQuery(f"parameter {key!r} given twice")
        if len(value) > MAX_TEXT:
            raise BadQuery(f"parameter {key!r} is longer than {MAX_TEXT} characters")
        if any(ord(ch) < 32 for ch in value):
            raise BadQuery(f"parameter {key!r} contains control characters")
        out[key] = value
    return out


def _int(params: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise BadQuery(f"{key} must be a whole number, got {raw!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise BadQuery(f"{key} must be between {lo} and {hi}, got {value}")
    return value


@dataclass(frozen=True)
class BrowseQuery:
    filters: tuple[tuple[str, str], ...]   # (column, value), in CATEGORIES order; "(none)" matches null
    text: str                              # substring searched (case-insensitive) in question/answer/context
    order: str                             # "mixture" or "random"
    seed: int
    page: int

    def params(self, **change: object) -> dict[str, str]:
        """This query as URL parameters (defaults left out), with `change` applied: links keep their state."""
        d: dict[str, str] = dict(self.filters)
        if self.text:
            d["q"] = self.text
        if self.order != "mixture":
            d["order"], d["seed"] = self.order, str(self.seed)
        return _with_page(d, self.page, change)


def _with_page(d: dict[str, str], page: int, change: dict[str, object]) -> dict[str, str]:
    """Add the page (when not the first) and apply `change` (None or "" removes a parameter)."""
    if page != 1:
        d["page"] = str(page)
    for k, v in change.items():
        if v is None or v == "":
            d.pop(k, None)
        else:
            d[k] = str(v)
    return d


def parse_browse(items: Iterable[tuple[str, str]]) -> BrowseQuery:
    p = _single(items, {*FILTERS, "q", "order", "seed", "page"})
    order = p.get("order") or "mixture"
    if p.get("image") not in (None, "", "yes", "no"):
        raise BadQuery(f"image must be 'yes' or 'no', got {p['image']!r}")
    if order not in ("mixture", "random"):
        raise BadQuery(f"order must be 'mixture' or 'random', got {order!r}")
    filters = tuple((c, p[c]) for c in FILTERS if p.get(c))
    return BrowseQuery(filters, (p.get("q") or "").strip(), order, _int(p, "seed", 0, 0, 2**32 - 1),
                       _int(p, "page", 1, 1, MAX_PAGE))


@dataclass(frozen=True)
class ListQuery:
    """Removed and Quarantine pages: equality filters on a few columns and a page."""

    filters: tuple[tuple[str, str], ...]
    page: int

    def params(self, **change: object) -> dict[str, str]:
        return _with_page(dict(self.filters), self.page, change)


def parse_list(items: Iterable[tuple[str, str]], columns: tuple[str, ...]) -> ListQuery:
    p = _single(items, {*columns, "page"})
    return ListQuery(tuple((c, p[c]) for c in columns if p.get(c)), _int(p, "page", 1, 1, MAX_PAGE))


def parse_empty(items: Iterable[tuple[str, str]]) -> None:
    _single(items, set())


def parse_int_segment(raw: str) -> int | None:
    """A path segment that must be a row or shard number; anything else is not a page (404)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None
