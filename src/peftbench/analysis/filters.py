"""The `--filter` language: a tiny expression language over the columns of a leaderboard.

    family == "LoRA" and test_acc > 0.4
    experiment contains "rank32"
    family in ("LoRA", "IA3") and not near_best
    error != null or status != "success"

Grammar (keywords are case-insensitive):

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
                          | ["not"] "in" "(" literal ("," literal)* ")"
                          | ["not"] "contains" operand ]
    operand    := COLUMN | NUMBER | STRING | "true" | "false" | "null" | "(" expr ")"

Semantics: a missing value (None/NaN) equals only `null` (`error == null`, `error != null`);
ordering comparisons and `contains` involving a missing value are false. `not in` and
`not contains` are exactly `not (... in ...)` and `not (... contains ...)`. `contains` is a
case-sensitive substring test on text. A bare column is a condition only when it is boolean
(`near_best`). Accuracies are fractions: `test_acc > 0.4`, not 40.

The text is tokenised and parsed here and then interpreted by walking the parsed tree; it is never
handed to Python's eval/exec/ast. Anything outside the grammar (calls, attribute access,
subscripts, lambda, Python operators) is a `UserError` that says what is not allowed and where.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from peftbench.experiment.config import suggest
from peftbench.errors import UserError

# Column kinds a caller declares; they decide which operators apply.
NUMBER = "number"
TEXT = "text"
BOOL = "bool"

_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null"}
_LITERAL_WORDS = {"true": True, "false": False, "null": None}
_COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")

# What people type from other languages, with the reason it is refused.
_REFUSED_CHARS = {
    ".": "attribute access is not allowed (only column names, literals and the operators listed in the help)",
    "[": "subscripts are not allowed",
    "]": "subscripts are not allowed",
    "{": "braces are not allowed",
    "}": "braces are not allowed",
    ":": "':' is not part of the filter language (no lambda, slices or dicts)",
    ";": "';' is not part of the filter language: write one expression",
    "=": "use '==' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "!": "use 'not' or '!='",
    "+": "arithmetic is not supported",
    "*": "arithmetic is not supported",
    "/": "arithmetic is not supported",
    "%": "arithmetic is not supported (accuracies are fractions: write 0.4, not 40%)",
    "@": "'@' is not part of the filter language",
    "`": "backticks are not allowed",
    "\\": "backslashes are only allowed inside strings",
}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # "number" | "string" | "name" | "keyword" | "op" | "end"
    value: Any
    pos: int
    raw: str = ""


def _error(text: str, pos: int, message: str) -> UserError:
    caret = " " * pos + "^"
    return UserError(f"bad filter expression: {message}\n  {text}\n  {caret}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            char = text[pos]
            if char in "\"'":
                raise _error(text, pos, "unterminated string")
            raise _error(text, pos, _REFUSED_CHARS.get(char, f"unexpected character {char!r}"))
        kind = m.lastgroup
        raw = m.group()
        if kind == "number":
            tokens.append(Token("number", float(raw), pos, raw))
        elif kind == "string":
            tokens.append(Token("string", re.sub(r"\\(.)", r"\1", raw[1:-1]), pos, raw))
        elif kind == "name":
            lowered = raw.lower()
            tokens.append(Token("keyword", lowered, pos, raw) if lowered in _KEYWORDS else Token("name", raw, pos, raw))
        elif kind == "op":
            tokens.append(Token("op", raw, pos, raw))
        pos = m.end()
    tokens.append(Token("end", None, len(text)))
    return tokens


# Parsed tree: plain tuples keep the interpreter below short.
#   ("col", name) ("lit", value) ("not", node) ("and", l, r) ("or", l, r)
#   ("cmp", op, l, r) ("in", node, values, negated) ("contains", l, r, negated)


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, str]):
        self.text = text
        self.columns = columns
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        return tok.kind == kind and (value is None or tok.value == value)

    def expect(self, kind: str, value: Any, what: str) -> Token:
        if not self.at(kind, value):
            raise self.fail(f"expected {what}")
        return self.take()

    def fail(self, message: str, tok: Token | None = None) -> UserError:
        tok = tok or self.peek()
        found = "the end" if tok.kind == "end" else repr(tok.raw)
        return _error(self.text, tok.pos, f"{message}, found {found}")

    def parse(self):
        if self.at("end"):
            raise _error(self.text, 0, "empty expression")
        node = self.parse_or()
        if not self.at("end"):
            raise self.fail("expected 'and', 'or' or the end of the expression")
        return node

    def parse_or(self):
        node = self.parse_and()
        while self.at("keyword", "or"):
            self.take()
            node = ("or", node, self.parse_and())
        return node

    def parse_and(self):
        node = self.parse_not()
        while self.at("keyword", "and"):
            self.take()
            node = ("and", node, self.parse_not())
        return node

    def parse_not(self):
        if self.at("keyword", "not"):
            self.take()
            return ("not", self.parse_not())
        return self.parse_comparison()

    def parse_comparison(self):
        left = self.parse_operand()
        negated = False
        if self.at("keyword", "not") and self.peek(1).kind == "keyword" and self.peek(1).value in ("in", "contains"):
            self.take()
            negated = True
        tok = self.peek()
        if tok.kind == "op" and tok.value in _COMPARISONS:
            self.take()
            return ("cmp", tok.value, left, self.parse_operand())
        if tok.kind == "keyword" and tok.value == "in":
            self.take()
            return ("in", left, self.parse_tuple(), negated)
        if tok.kind == "keyword" and tok.value == "contains":
            self.take()
            return ("contains", left, self.parse_operand(), negated)
        if negated:
            raise self.fail("expected 'in' or 'contains' after 'not'")
        return left

    def parse_tuple(self) -> tuple:
        self.expect("op", "(", "'(' to start the list after 'in'")
        values = [self.parse_literal()]
        while self.at("op", ","):
            self.take()
            if self.at("op", ")"):  # a trailing comma is harmless
                break
            values.append(self.parse_literal())
        self.expect("op", ")", "')' to close the list")
        return tuple(values)

    def parse_literal(self):
        tok = self.take()
        if tok.kind in ("number", "string"):
            return tok.value
        if tok.kind == "keyword" and tok.value in _LITERAL_WORDS:
            return _LITERAL_WORDS[tok.value]
        raise self.fail("expected a number, a string, true, false or null", tok)

    def parse_operand(self):
        tok = self.peek()
        if tok.kind == "op" and tok.value == "(":
            self.take()
            node = self.parse_or()
            self.expect("op", ")", "')'")
            return node
        if tok.kind == "name":
            self.take()
            self.check_name(tok)
            return ("col", tok.value)
        if tok.kind in ("number", "string") or (tok.kind == "keyword" and tok.value in _LITERAL_WORDS):
            return ("lit", self.parse_literal())
        raise self.fail("expected a column name, a number, a string or '('")

    def check_name(self, tok: Token) -> None:
        name = tok.value
        nxt = self.peek()
        if nxt.kind == "op" and nxt.value == "(":
            raise _error(self.text, tok.pos, f"function calls are not allowed ({name}(...))")
        if name in self.columns:
            return
        if name.startswith("__") or keyword.iskeyword(name):  # import, lambda, None, __import__, ...
            raise _error(self.text, tok.pos, f"{name!r} is Python, not part of the filter language")
        raise _error(self.text, tok.pos, f"unknown column {name!r};{suggest(name, self.columns)}")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _kind_of(node, columns: Mapping[str, str]) -> str | None:
    """The kind of an operand node: a column's declared kind, or the kind of a literal."""
    if node[0] == "col":
        return columns[node[1]]
    if node[0] == "lit":
        value = node[1]
        if value is None:
            return None
        if isinstance(value, bool):
            return BOOL
        return NUMBER if isinstance(value, float) else TEXT
    return BOOL  # a nested expression


class Filter:
    """A compiled filter: `matches(row)` says whether a row (a mapping column -> value) passes."""

    def __init__(self, text: str, columns: Mapping[str, str]):
        self.text = text
        self.columns = dict(columns)
        self.tree = _Parser(text, self.columns).parse()
        self._check(self.tree, top=True)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def matches(self, row: Mapping[str, Any]) -> bool:
        return bool(self._eval(self.tree, row))

    # Type checks happen once, at compile time, so that a mistake is reported even when no row
    # would reach it, and before anything is printed.
    def _check(self, node, top: bool = False) -> None:
        tag = node[0]
        if tag in ("and", "or"):
            self._check(node[1], top=True)
            self._check(node[2], top=True)
        elif tag == "not":
            self._check(node[1], top=True)
        elif tag == "cmp":
            op, left, right = node[1:]
            lk, rk = _kind_of(left, self.columns), _kind_of(right, self.columns)
            for side in (left, right):
                if side[0] not in ("col", "lit"):
                    self._check(side, top=True)
            if lk and rk and lk != rk:
                raise UserError(f"bad filter expression: cannot compare {_describe(left, lk)} with {_describe(right, rk)} in {self.text!r}")
            if op not in ("==", "!=") and (lk != NUMBER or rk != NUMBER):
                raise UserError(f"bad filter expression: {op!r} needs numbers, in {self.text!r}")
        elif tag == "in":
            kind = _kind_of(node[1], self.columns)
            for value in node[2]:
                vk = _kind_of(("lit", value), self.columns)
                if vk and kind and vk != kind:
                    raise UserError(f"bad filter expression: {_describe(node[1], kind)} cannot be in a list holding {value!r}, in {self.text!r}")
        elif tag == "contains":
            for side in node[1:3]:
                if _kind_of(side, self.columns) != TEXT:
                    raise UserError(f"bad filter expression: 'contains' works on text, not on {_describe(side, _kind_of(side, self.columns))}, in {self.text!r}")
        elif top and not (tag == "col" and self.columns[node[1]] == BOOL):
            what = f"column {node[1]!r} ({self.columns[node[1]]})" if tag == "col" else f"literal {node[1]!r}"
            raise UserError(f"bad filter expression: {what} is not a condition; compare it, e.g. {node[1] if tag == 'col' else 'x'} == ..., in {self.text!r}")

    def _eval(self, node, row: Mapping[str, Any]) -> Any:
        tag = node[0]
        if tag == "col":
            return row.get(node[1])
        if tag == "lit":
            return node[1]
        if tag == "not":
            return not self._eval(node[1], row)
        if tag == "and":
            return bool(self._eval(node[1], row)) and bool(self._eval(node[2], row))
        if tag == "or":
            return bool(self._eval(node[1], row)) or bool(self._eval(node[2], row))
        if tag == "cmp":
            return _compare(node[1], self._eval(node[2], row), self._eval(node[3], row))
        if tag == "in":
            value = self._eval(node[1], row)
            return any(_equal(value, v) for v in node[2]) != node[3]
        if tag == "contains":
            haystack, needle = self._eval(node[1], row), self._eval(node[2], row)
            found = not _is_missing(haystack) and not _is_missing(needle) and str(needle) in str(haystack)
            return found != node[3]
        raise AssertionError(f"unknown node {tag}")  # the parser builds no other tags


def _describe(node, kind: str | None) -> str:
    return f"column {node[1]!r} ({kind})" if node[0] == "col" else f"{kind or 'null'} {node[1]!r}"


def _equal(a: Any, b: Any) -> bool:
    """Equality where a missing value equals only another missing value (null)."""
    if _is_missing(a) or _is_missing(b):
        return _is_missing(a) and _is_missing(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if _is_missing(left) or _is_missing(right):
        return False
    return _ORDER[op](float(left), float(right))


def compile_filter(text: str, columns: Mapping[str, str]) -> Filter:
    """Parse `text` against the declared columns (name -> NUMBER/TEXT/BOOL); raise UserError when
    it is not a valid filter."""
    if not isinstance(text, str):
        raise UserError("filter expression must be text")
    return Filter(text, columns)
