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
from dataclasses import dataclass
from functools import reduce
from typing import Callable

import numpy as np


def _divide(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, np.nan, a / np.where(b == 0, 1, b))


_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: _divide}
#: np.minimum/maximum propagate NaN (no value in → no value out), unlike fmin/fmax.
_FUNCTIONS = {"min": lambda *a: reduce(np.minimum, a), "max": lambda *a: reduce(np.maximum, a), "abs": np.abs}


class FormulaError(ValueError):
    pass


@dataclass(frozen=True)
class Formula:
    text: str
    inputs: frozenset[str]
    #: Over arrays (one element per unit; NaN = no value), elementwise: the whole district in one pass.
    evaluate_array: Callable[[dict[str, np.ndarray]], np.ndarray]

    def evaluate(self, env: dict[str, float | None]) -> float | None:
        """One value from scalars (None = no value)."""
        arrays = {k: np.array([np.nan if env.get(k) is None else float(env[k])]) for k in self.inputs}
        v = float(np.asarray(self.evaluate_array(arrays)).reshape(-1)[0])
        return None if np.isnan(v) or np.isinf(v) else v


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
        return lambda env: env[name]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _compile(node.operand, inputs)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        return lambda env: sign * inner(env)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op, left, right = _BINARY[type(node.op)], _compile(node.left, inputs), _compile(node.right, inputs)
        return lambda env: op(left(env), right(env))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and node.args):
        if node.func.id == "abs" and len(node.args) != 1:
            raise FormulaError("abs takes one argument")
        fn, args = _FUNCTIONS[node.func.id], [_compile(a, inputs) for a in node.args]
        return lambda env: fn(*(a(env) for a in args))
    what = type(node).__name__
    if isinstance(node, ast.Call):
        what = f"function {getattr(node.func, 'id', '?')!r} (use min, max, abs)"
    raise FormulaError(f"{what} is not allowed in a formula (numbers, indicator codes, + - * /, min, max, abs)")
