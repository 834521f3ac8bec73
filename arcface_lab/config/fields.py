"""Field parsers: one set for params files and backend options, each error naming where.

Every value read from a params file or given as a backend option goes through
these parsers with a :class:`Ctx` (the file or the backend, and the dotted path of
the field), so a bad value is one line: ``params/x.yaml: backends.options.openvino.
int8_margin: expected a number in (0, 1], got 5``. A backend declares its options
once, as a frozen dataclass whose fields are made with :func:`option` (a default,
a parser and a line of documentation); :func:`parse_options` reads a mapping into it
and refuses unknown names, so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from arcface_lab.errors import ParamsError

__all__ = [
    "Ctx",
    "nullable",
    "option",
    "option_docs",
    "option_names",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_mapping",
    "parse_opt_str",
    "parse_options",
    "parse_str",
]

T = TypeVar("T")
Parser = Callable[[Any, "Ctx"], Any]


class Ctx:
    """Where a value came from (a file, or ``"openvino options"``) and its dotted field path."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source, self.path = source, path

    def child(self, key: str) -> Ctx:
        return Ctx(self.source, f"{self.path}.{key}" if self.path else key)

    def error(self, expected: str, got: Any) -> ParamsError:
        where = f"{self.path}: " if self.path else ""
        return ParamsError(f"{self.source}: {where}expected {expected}, got {got!r}")


def parse_mapping(value: Any, ctx: Ctx, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """A mapping whose keys are all in ``allowed`` (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error("a mapping", value)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        where = f"{ctx.path}: " if ctx.path else ""
        raise ParamsError(
            f"{ctx.source}: {where}unknown key(s) {', '.join(map(str, unknown))}; "
            f"expected any of {', '.join(allowed)}"
        )
    return value


def parse_str(value: Any, ctx: Ctx, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ctx.error("a non-empty string", value)
    if choices and value not in choices:
        raise ctx.error(f"one of {', '.join(choices)}", value)
    return value


def parse_opt_str(value: Any, ctx: Ctx) -> str | None:
    return None if value is None else parse_str(value, ctx)


def parse_int(value: Any, ctx: Ctx, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.error(f"an integer >= {minimum}", value)
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_float(
    value: Any, ctx: Ctx, lo: float = 0.0, hi: float = float("inf"), open_lo: bool = False
) -> float:
    """A number in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (lo < value if open_lo else lo <= value) or not value <= hi:
        expected = f"a number in {'(' if open_lo else '['}{lo:g}, {hi:g}]"
        if isinstance(value, str) and _looks_numeric(value):
            expected += " (YAML reads 1e-3 as text: write 1.0e-3 or 0.001)"
        raise ctx.error(expected, value)
    return float(value)


def parse_bool(value: Any, ctx: Ctx) -> bool:
    if not isinstance(value, bool):
        raise ctx.error("true or false", value)
    return value


def parse_list(value: Any, ctx: Ctx) -> list[Any]:
    """A non-empty list; a string is split at commas."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise ctx.error("a non-empty list", value)
    return value


def parse_choice(*choices: str, upper: bool = False) -> Parser:
    """A parser for one of ``choices`` (case-insensitive, upper-cased, with ``upper``)."""

    def parse(value: Any, ctx: Ctx) -> str:
        text = value.upper() if upper and isinstance(value, str) else value
        return parse_str(text, ctx, choices)

    return parse


def nullable(parse: Parser) -> Parser:
    """``parse``, letting None through (an option whose None means "not set")."""

    def parse_or_none(value: Any, ctx: Ctx) -> Any:
        return None if value is None else parse(value, ctx)

    return parse_or_none


def option(default: Any, parse: Parser, doc: str) -> Any:
    """A backend option: its default, its parser (``parse(value, ctx)``) and what it does."""
    return dataclasses.field(default=default, metadata={"parse": parse, "doc": doc})


def option_names(options_type: type) -> frozenset[str]:
    """The option names an options dataclass declares."""
    return frozenset(f.name for f in dataclasses.fields(options_type))


def option_docs(options_type: type) -> dict[str, str]:
    """Each option's line of documentation with its default (for ``arcface-lab backends``)."""
    return {
        f.name: f"{f.metadata.get('doc', '')} (default {f.default!r})"
        for f in dataclasses.fields(options_type)
    }


def parse_options(options_type: type[T], raw: Mapping[str, Any] | None, ctx: Ctx) -> T:
    """``raw`` read into ``options_type``: each given field parsed, the others defaulted.

    Raises:
        ParamsError: an unknown option, or a value its parser refuses (naming ``ctx``).
    """
    fields = dataclasses.fields(options_type)  # type: ignore[arg-type]
    given = parse_mapping(raw, ctx, tuple(sorted(f.name for f in fields)))
    values = {
        f.name: f.metadata["parse"](given[f.name], ctx.child(f.name))
        for f in fields
        if f.name in given
    }
    return options_type(**values)
