"""A small, safe expression language for ``--where``: ``iqa >= 60 and (iaa > 50 or not ista < 20)``.

Names: ``iaa``, ``iqa``, ``ista``, ``width``, ``height``. Numbers: ``60``, ``-1``, ``0.5``, ``1e3``.
Comparisons: ``<  <=  >  >=  ==  =  !=``, chainable (``40 <= iaa < 60``). Logic: ``and``, ``or``,
``not`` (``and`` binds tighter than ``or``) and parentheses. Keywords are case-insensitive.

A tokenizer and a recursive-descent parser build a tree of small closures; nothing is evaluated
as Python. A record without a value for a name (a failed file) matches no comparison.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PerceptliteError
from ..records import NUMERIC_FIELDS as FIELDS

MAX_NESTING = 64  # parentheses and 'not' nested deeper than this are refused (no recursion overflow)
KEYWORDS = ("and", "or", "not")

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<paren>[()])
  | (?P<minus>-)
    """,
    re.VERBOSE,
)

Predicate = Callable[[Mapping[str, Any]], bool]


class QueryError(PerceptliteError):
    """A ``--where`` expression that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "keyword", "op", "paren", "minus", "end"
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens, or raise QueryError at the first character that fits none."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(text, position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            value = match.group()
            if kind == "name" and value.lower() in KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(Token(kind, value, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def compile_where(text: str) -> Predicate:
    """Parse a ``--where`` expression into a predicate over score records."""
    if not text.strip():
        raise QueryError('--where: empty expression (example: "iqa >= 60 and iaa >= 50")')
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over: or := and ('or' and)* ; and := not ('and' not)* ;
    not := 'not' not | '(' or ')' | comparison ; comparison := operand (op operand)+ ;
    operand := name | ['-'] number."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, word: str) -> bool:
        return self.current.kind == "keyword" and self.current.text == word

    def parse(self) -> Predicate:
        predicate = self.parse_or()
        if self.current.kind != "end":
            raise self.error(f"unexpected {self.describe(self.current)}")
        return predicate

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self.is_keyword("or"):
            self.advance()
            parts.append(self.parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda record: any(part(record) for part in parts)

    def parse_and(self) -> Predicate:
        parts = [self.parse_not()]
        while self.is_keyword("and"):
            self.advance()
            parts.append(self.parse_not())
        if len(parts) == 1:
            return parts[0]
        return lambda record: all(part(record) for part in parts)

    def parse_not(self) -> Predicate:
        nested = self.is_keyword("not") or (self.current.kind == "paren" and self.current.text == "(")
        if not nested:
            return self.parse_comparison()
        if self.depth >= MAX_NESTING:
            raise self.error(f"nested more than {MAX_NESTING} levels deep")
        self.depth += 1
        try:
            return self.parse_nested()
        finally:
            self.depth -= 1

    def parse_nested(self) -> Predicate:
        if self.is_keyword("not"):
            self.advance()
            inner = self.parse_not()
            return lambda record: not inner(record)
        if self.current.kind == "paren" and self.current.text == "(":
            self.advance()
            inner = self.parse_or()
            if not (self.current.kind == "paren" and self.current.text == ")"):
                raise self.error(f"expected ')' but found {self.describe(self.current)}")
            self.advance()
            return inner
        return self.parse_comparison()

    def parse_comparison(self) -> Predicate:
        operands = [self.parse_operand()]
        comparisons: list[Callable[[float, float], bool]] = []
        while self.current.kind == "op":
            comparisons.append(_COMPARISONS[self.advance().text])
            operands.append(self.parse_operand())
        if not comparisons:
            raise self.error(f"expected a comparison (<, <=, >, >=, ==, !=) but found {self.describe(self.current)}")

        def compare(record: Mapping[str, Any]) -> bool:
            values = [operand(record) for operand in operands]
            numbers = [value for value in values if value is not None]
            if len(numbers) != len(values):
                return False
            return all(test(numbers[i], numbers[i + 1]) for i, test in enumerate(comparisons))

        return compare

    def parse_operand(self) -> Callable[[Mapping[str, Any]], float | None]:
        token = self.current
        if token.kind == "name":
            name = token.text.lower()
            if name not in FIELDS:
                raise self.error(f"unknown name {token.text!r} (use {', '.join(FIELDS)})")
            self.advance()
            return lambda record: _number(record.get(name))
        sign = 1.0
        if token.kind == "minus":
            self.advance()
            sign = -1.0
            token = self.current
        if token.kind == "number":
            self.advance()
            value = sign * float(token.text)
            return lambda record: value
        raise self.error(f"expected a number or one of {', '.join(FIELDS)} but found {self.describe(token)}")

    def describe(self, token: Token) -> str:
        return "the end of the expression" if token.kind == "end" else repr(token.text)

    def error(self, message: str) -> QueryError:
        return _error(self.text, self.current.position, message)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN counts as missing


def _error(text: str, position: int, message: str) -> QueryError:
    one_line = " ".join(text.split())
    return QueryError(f"--where {one_line!r}: {message} (at character {position + 1})")
