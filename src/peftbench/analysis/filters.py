"""The `--filter` language: a Python-like expression over the columns of a leaderboard.

    family == "LoRA" and test_acc > 0.4
    "rank32" in experiment
    family in ("LoRA", "IA3") and not near_best
    error != null or status != "success"
    0.3 <= test_acc < 0.5

The text is parsed by Python's own parser (`ast.parse(text, mode="eval")`, which only builds a
tree: nothing is compiled to code or run) and the tree is walked against a whitelist, as PEFT's
`method_comparison/sanitizer.py` does. What the whitelist admits:

    and, or, not, parentheses; == != < <= > >= (chains such as 0.3 < test_acc < 0.5 too)
    x in ("a", "b"), x not in (...)    membership in a list of literals
    "rank32" in experiment             with text on the right and no list: a substring test
    column names, numbers, strings, true/false/null (also True/False/None)

Anything else (calls, attribute access, subscripts, lambda, arithmetic, comprehensions,
f-strings) is a `UserError` that says what is not allowed and points at it. The keywords
and/or/not/in and true/false/null may be written in any case ("NOT near_best").

Semantics: a missing value (None/NaN) equals only `null` (`error == null`, `error != null`);
ordering comparisons and substring tests involving a missing value are false. `not in` is exactly
`not (... in ...)`. A bare column is a condition only when it is boolean (`near_best`).
Accuracies are fractions: `test_acc > 0.4`, not 40.

Column kinds (number, text, bool) are checked when the filter is compiled, before any row is
read, so that a mistake is reported even when no row would reach it and before anything is
printed. The walk builds one small function per node; `Filter.matches(row)` calls them.
"""

from __future__ import annotations

import ast
import io
import keyword
import math
import tokenize
from typing import Any, Callable, Mapping

from peftbench.errors import UserError
from peftbench.errors import suggest

# Column kinds a caller declares; they decide which operators apply.
NUMBER = "number"
TEXT = "text"
BOOL = "bool"

# Bounds that keep hostile input from exhausting the parser or the recursive walk: real filters
# are one line with a handful of conditions and 2-3 levels of parentheses.
MAX_CHARS = 2000
MAX_DEPTH = 32

_KEYWORDS = {"and", "or", "not", "in"}
_LITERAL_WORDS = {"true": True, "false": False, "null": None}

_COMPARISONS: dict[type, str] = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}

_ARITHMETIC = "arithmetic is not supported"
# Why a node Python can parse is refused (the first matching class wins).
_REFUSED_NODES: list[tuple[type | tuple[type, ...], str]] = [
    (ast.Call, "function calls are not allowed"),
    (ast.Attribute, "attribute access is not allowed (only column names, literals and the operators listed in the help)"),
    (ast.Subscript, "subscripts are not allowed"),
    (ast.Lambda, "lambda is not allowed"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "comprehensions are not allowed"),
    ((ast.Dict, ast.Set), "braces are not allowed (dicts and sets are Python, not filters)"),
    ((ast.Tuple, ast.List), "a list is only allowed after 'in': family in (\"LoRA\", \"IA3\")"),
    (ast.IfExp, "'if ... else' is not part of the filter language"),
    (ast.NamedExpr, "use '==' to compare"),
    (ast.JoinedStr, "f-strings are not allowed"),
]
_REFUSED_OPERATORS = {ast.BitAnd: "use 'and'", ast.BitOr: "use 'or'", ast.Invert: "use 'not'",
                      ast.Mod: f"{_ARITHMETIC} (accuracies are fractions: write 0.4, not 40%)"}
# Characters that make Python's parser give up, with what to write instead. Looked up only when
# the text does not parse, to explain the failure better than "invalid syntax".
_REFUSED_CHARS = {
    ";": "';' is not part of the filter language: write one expression",
    "=": "use '==' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
    "!": "use 'not' or '!='",
    "%": f"{_ARITHMETIC} (accuracies are fractions: write 0.4, not 40%)",
    "`": "backticks are not allowed",
    "$": "'$' is not part of the filter language",
    "?": "'?' is not part of the filter language",
    ":": "':' is not part of the filter language (no lambda, slices or dicts)",
}


def _error(text: str, pos: int, message: str) -> UserError:
    """The message, the filter's line holding `pos` (a window of it when long) and a caret."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line, col = text[start: len(text) if end < 0 else end], pos - start
    if len(line) > 100:  # a hostile filter can be kilobytes long: show where, not all of it
        left = max(0, col - 50)
        line, col = ("..." if left else "") + line[left: left + 100] + "...", col - left + (3 if left else 0)
    return UserError(f"bad filter expression: {message}\n  {line}\n  {' ' * col}^")


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    """Python's tokens of the text, as far as Python can tokenise it."""
    tokens: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            tokens.append(tok)
    except (tokenize.TokenError, SyntaxError):
        pass  # an unterminated string or bracket: what came before is still useful
    return tokens


def _offset(text: str, row: int, col: int) -> int:
    """Index into text of a (1-based row, 0-based character column) position."""
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: row - 1]) + col


def _lower_keywords(text: str) -> str:
    """The text with AND/Or/NOT/In written in lower case, which Python's grammar needs. Strings are
    Python tokens of their own and stay as they are; the length does not change, so error
    positions still point into the user's text."""
    chars = list(text)
    for tok in _tokens(text):
        if tok.type == tokenize.NAME and tok.string.lower() in _KEYWORDS and tok.string != tok.string.lower():
            begin = _offset(text, *tok.start)
            chars[begin: begin + len(tok.string)] = tok.string.lower()
    return "".join(chars)


def _explain_syntax_error(text: str, source: str, error: SyntaxError) -> UserError:
    """A message for text that Python cannot parse: what the user probably meant where a token
    says it, else Python's own message at Python's position. `source` is the text with keywords
    in lower case (same length, same positions)."""
    for tok in _tokens(source):
        pos = _offset(source, *tok.start)
        if tok.type == tokenize.NAME and tok.string.lower() == "contains":
            return _error(text, pos, "'contains' is now written with 'in': \"rank32\" in experiment")
        if tok.type == tokenize.NAME and keyword.iskeyword(tok.string) and tok.string not in _KEYWORDS:
            return _error(text, pos, f"{tok.string!r} is Python, not part of the filter language")
        if tok.type in (tokenize.OP, tokenize.ERRORTOKEN) and tok.string.strip() in _REFUSED_CHARS:
            return _error(text, pos, _REFUSED_CHARS[tok.string.strip()])
    col = (error.offset or 0) - 1  # Python's offset is 1-based; 0 or None: at the end
    pos = _offset(source, error.lineno or 1, col) if col >= 0 else len(source)
    message = error.msg
    if message.startswith("unterminated string"):
        message = "unterminated string"
    elif "was never closed" in message:
        message = f"{message}: expected ')'"
    elif pos >= len(text.rstrip()) or message == "invalid syntax" and col < 0:
        pos, message = len(text), "the expression is incomplete, found the end"
    return _error(text, pos, message)


def _parse(text: str) -> ast.expr:
    if not text.strip():
        raise _error(text, 0, "empty expression")
    if len(text) > MAX_CHARS:
        raise _error(text, MAX_CHARS, f"the filter is {len(text):,} characters long; the limit is {MAX_CHARS:,}")
    source = _lower_keywords(text)
    try:
        return ast.parse(source, mode="eval").body
    except SyntaxError as e:
        raise _explain_syntax_error(text, source, e) from None
    except (RecursionError, MemoryError):  # the parser's own stack, on deeply nested input
        raise _error(text, 0, f"nested too deeply for the parser (at most {MAX_DEPTH} levels)") from None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _equal(a: Any, b: Any) -> bool:
    """Equality where a missing value equals only another missing value (null)."""
    if _is_missing(a) or _is_missing(b):
        return _is_missing(a) and _is_missing(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if _is_missing(left) or _is_missing(right):
        return False
    return _ORDER[op](float(left), float(right))


def _contains(haystack: Any, needle: Any) -> bool:
    return not _is_missing(haystack) and not _is_missing(needle) and str(needle) in str(haystack)


def _kind_of_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return BOOL
    return NUMBER if isinstance(value, (int, float)) else TEXT


_NOT_A_LITERAL = object()
Evaluator = Callable[[Mapping[str, Any]], Any]


class _Compiler:
    """One walk over the parsed tree: refuses what is not whitelisted, checks column kinds, and
    returns a function of a row for each node."""

    def __init__(self, text: str, columns: Mapping[str, str]):
        self.text = text
        self.columns = columns

    def fail(self, node: ast.AST, message: str) -> UserError:
        lines = self.text.split("\n")
        line = lines[node.lineno - 1]
        # ast columns count UTF-8 bytes; the caret counts characters
        col = len(line.encode("utf-8")[: node.col_offset].decode("utf-8", "ignore"))
        return _error(self.text, _offset(self.text, node.lineno, col), message)

    def source(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def condition(self, node: ast.expr, depth: int) -> Evaluator:
        """A node used as a truth value: a comparison, and/or/not, or a boolean column."""
        kind, fn = self.value(node, depth)
        if kind != BOOL or self.literal(node) is not _NOT_A_LITERAL:
            what = self.describe(node, kind)
            example = node.id if isinstance(node, ast.Name) else "x"
            raise self.fail(node, f"{what} is not a condition; compare it, e.g. {example} == ...")
        return lambda row: bool(fn(row))

    def value(self, node: ast.expr, depth: int) -> tuple[str | None, Evaluator]:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, depth + 1) for v in node.values]
            combine = all if isinstance(node.op, ast.And) else any
            return BOOL, lambda row: combine(p(row) for p in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.condition(node.operand, depth + 1)
            return BOOL, lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            return BOOL, self.comparison(node, depth)
        literal = self.literal(node)
        if literal is not _NOT_A_LITERAL:
            return _kind_of_value(literal), lambda row: literal
        if isinstance(node, ast.Name):
            return self.column(node)
        raise self.refuse(node)

    def literal(self, node: ast.expr) -> Any:
        """The value of a literal node (a number, possibly negative, a string, true/false/null),
        else _NOT_A_LITERAL."""
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float))):
            return node.value
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
                and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        if isinstance(node, ast.Name) and node.id not in self.columns and node.id.lower() in _LITERAL_WORDS:
            return _LITERAL_WORDS[node.id.lower()]
        return _NOT_A_LITERAL

    def column(self, node: ast.Name) -> tuple[str, Evaluator]:
        name = node.id
        if name not in self.columns:
            if name.startswith("__") or keyword.iskeyword(name):
                raise self.fail(node, f"{name!r} is Python, not part of the filter language")
            raise self.fail(node, f"unknown column {name!r};{suggest(name, self.columns)}")
        return self.columns[name], lambda row: row.get(name)

    def refuse(self, node: ast.expr) -> UserError:
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            return self.fail(node, _REFUSED_OPERATORS.get(type(node.op), _ARITHMETIC))
        for classes, reason in _REFUSED_NODES:
            if isinstance(node, classes):
                if isinstance(node, ast.Call):
                    reason += f" ({self.source(node.func)}(...))"
                return self.fail(node, reason)
        if isinstance(node, ast.Constant):
            return self.fail(node, f"{node.value!r} is not a number, a string, true, false or null")
        return self.fail(node, f"{self.source(node)!r} is not part of the filter language")

    def describe(self, node: ast.expr, kind: str | None) -> str:
        if isinstance(node, ast.Name) and node.id in self.columns:
            return f"column {node.id!r} ({kind})"
        literal = self.literal(node)
        if literal is not _NOT_A_LITERAL:
            return f"{kind or 'null'} {literal!r}"
        return f"the condition {self.source(node)!r}"

    def comparison(self, node: ast.Compare, depth: int) -> Evaluator:
        """A chain `a < b <= c` holds when each pair holds, as in Python."""
        pairs, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            pairs.append(self.pair(node, op, left, right, depth + 1))
            left = right
        if len(pairs) == 1:
            return pairs[0]
        return lambda row: all(p(row) for p in pairs)

    def pair(self, node: ast.Compare, op: ast.cmpop, left: ast.expr, right: ast.expr, depth: int) -> Evaluator:
        if isinstance(op, (ast.Is, ast.IsNot)):
            raise self.fail(node, "'is' is Python: use '==' or '!=' (error == null)")
        negated = isinstance(op, ast.NotIn)
        if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List)):
            return self.membership(left, right.elts, negated, depth)
        if isinstance(op, (ast.In, ast.NotIn)) and self.parenthesised(right) and self.literal(right) is not _NOT_A_LITERAL:
            # Python reads `family in ("IA3")` as a substring test on "IA3"; people mean a list of one
            return self.membership(left, [right], negated, depth)
        lk, lf = self.value(left, depth)
        rk, rf = self.value(right, depth)
        if isinstance(op, (ast.In, ast.NotIn)):
            if isinstance(left, ast.Name) and self.literal(right) is not _NOT_A_LITERAL:
                raise self.fail(right, f"after 'in' write a list in parentheses ({left.id} in (\"LoRA\", \"IA3\")), "
                                       "or text on the left of a text column (\"rank32\" in experiment)")
            for side, kind in ((left, lk), (right, rk)):
                if kind != TEXT:
                    raise self.fail(side, f"'in' without a list is a substring test on text, not on {self.describe(side, kind)}")
            return lambda row: _contains(rf(row), lf(row)) != negated
        symbol = _COMPARISONS[type(op)]
        if lk and rk and lk != rk:
            raise self.fail(node, f"cannot compare {self.describe(left, lk)} with {self.describe(right, rk)}")
        if symbol not in ("==", "!=") and (lk != NUMBER or rk != NUMBER):
            raise self.fail(node, f"{symbol!r} needs numbers on both sides")
        return lambda row: _compare(symbol, lf(row), rf(row))

    def parenthesised(self, node: ast.expr) -> bool:
        line = self.text.split("\n")[node.lineno - 1].encode("utf-8")[: node.col_offset].decode("utf-8", "ignore")
        return line.rstrip().endswith("(")

    def membership(self, left: ast.expr, items: list[ast.expr], negated: bool, depth: int) -> Evaluator:
        kind, fn = self.value(left, depth)
        values = []
        for item in items:
            value = self.literal(item)
            if value is _NOT_A_LITERAL:
                raise self.fail(item, "expected a number, a string, true, false or null in the list after 'in'")
            if _kind_of_value(value) and kind and _kind_of_value(value) != kind:
                raise self.fail(item, f"{self.describe(left, kind)} cannot be in a list holding {value!r}")
            values.append(value)
        return lambda row: any(_equal(fn(row), v) for v in values) != negated


class Filter:
    """A compiled filter: `matches(row)` says whether a row (a mapping column -> value) passes."""

    def __init__(self, text: str, columns: Mapping[str, str]):
        self.text = text
        self.columns = dict(columns)
        # positions in the tree hold for the user's text too: only keyword case was changed
        self._matches = _Compiler(text, self.columns).condition(_parse(text), depth=0)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def matches(self, row: Mapping[str, Any]) -> bool:
        return self._matches(row)


def compile_filter(text: str, columns: Mapping[str, str]) -> Filter:
    """Parse `text` against the declared columns (name -> NUMBER/TEXT/BOOL); raise UserError when
    it is not a valid filter."""
    if not isinstance(text, str):
        raise UserError("filter expression must be text")
    return Filter(text, columns)
