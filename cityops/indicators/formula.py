"""The formula language of indicators: arithmetic over other indicators' codes, parsed and checked, never
``eval``-ed.

Grammar (Python's expression syntax, of which only these nodes are accepted): numbers, indicator codes, ``+ - * /``,
unary minus, parentheses and the functions ``min(a, b, …)``, ``max(…)``, ``abs(x)``. A division by zero or a
missing input gives no value (None), never an error at computation time. Python's ``ast`` does the parsing (a
tokenizer and a precedence parser of our own would be the same thing with more bugs); the tree is then walked by a
whitelist and compiled into closures.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Callable

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCTIONS = {"min": min, "max": max, "abs": abs}


class FormulaError(ValueError):
    pass


@dataclass(frozen=True)
class Formula:
    text: str
    inputs: frozenset[str]
    evaluate: Callable[[dict[str, float | None]], float | None]


def parse(text: str) -> Formula:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"not a formula: {exc.msg} at column {exc.offset}") from None
    inputs: set[str] = set()
    fn = _compile(tree.body, inputs)
    return Formula(text, frozenset(inputs), fn)


def _compile(node: ast.AST, inputs: set[str]):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        value = float(node.value)
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        inputs.add(name)
        return lambda env: env.get(name)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _compile(node.operand, inputs)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return lambda env: None if (v := inner(env)) is None else sign * v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op, left, right = _BINARY[type(node.op)], _compile(node.left, inputs), _compile(node.right, inputs)

        def binary(env):
            a, b = left(env), right(env)
            if a is None or b is None or (op is operator.truediv and b == 0):
                return None
            return op(a, b)
        return binary
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and node.args):
        fn, args = _FUNCTIONS[node.func.id], [_compile(a, inputs) for a in node.args]
        if fn is abs and len(args) != 1:
            raise FormulaError("abs takes one argument")

        def call(env):
            values = [a(env) for a in args]
            return None if any(v is None for v in values) else float(fn(*values))
        return call
    what = type(node).__name__
    if isinstance(node, ast.Call):
        what = f"function {getattr(node.func, 'id', '?')!r} (use min, max, abs)"
    raise FormulaError(f"{what} is not allowed in a formula (numbers, indicator codes, + - * /, min, max, abs)")
