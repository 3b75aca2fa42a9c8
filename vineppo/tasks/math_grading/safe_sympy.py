"""sympy's `parse_expr` without `eval`: the same tokens and transformations, a whitelisted evaluator.

The official grader reads plain-text answers with `sympy.parsing.sympy_parser.parse_expr` (and
`sympify`, i.e. `N("...")`), which turn the text into Python source and `eval` it. Model text
must never be executed, yet the verdicts should be the official ones. So this module runs
sympy's own tokenizer and transformations (`stringify_expr`: pure token rewriting, no
evaluation), parses the resulting source with `ast`, and evaluates the tree itself, allowing
only arithmetic, comparisons, literals, tuples, sympy objects and calls of sympy classes and of
a short list of sympy functions. No attribute access, subscripts, lambdas, keywords or builtins
beyond `abs`/`max`/`min`/`round`/`pow`: anything else is a parse error (the caller grades it
"not equal").

Only used inside a grader worker process (see `vineppo.tasks.math_grading.symbolic`).
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable

import sympy
from sympy.parsing import sympy_parser


class UnsafeExpression(ValueError):
    """The transformed source uses a construct the evaluator does not allow."""


def _sympy_namespace() -> dict[str, Any]:
    # The names `parse_expr` resolves: everything `from sympy import *` binds, plus max/min.
    # (parse_expr also binds Python's builtin functions; the few harmless ones are allowed
    # below, the rest only need to be known so that they are not turned into symbols.)
    import builtins
    import types

    names: dict[str, Any] = {name: getattr(sympy, name) for name in sympy.__all__ if hasattr(sympy, name)}
    for name, value in vars(builtins).items():
        if isinstance(value, types.BuiltinFunctionType):
            names[name] = value
    names["max"] = sympy.Max
    names["min"] = sympy.Min
    return names


_NAMESPACE = _sympy_namespace()

# Plain Python functions (not sympy classes) that may be called.
_CALLABLE_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {sympy.sqrt, sympy.cbrt, sympy.root, sympy.real_root, sympy.N, abs, round, pow}
)

_BINARY_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_UNARY_OPERATORS: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
    ast.Not: operator.not_,
}
_COMPARISONS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _is_callable_allowed(function: Any) -> bool:
    if isinstance(function, type) and issubclass(function, sympy.Basic):
        return True  # sympy classes: Symbol, Integer, Float, Rational, sin, log, factorial, ...
    if isinstance(function, sympy.FunctionClass):
        return True  # undefined functions made by Function('f')
    try:
        return function in _CALLABLE_FUNCTIONS
    except TypeError:
        return False


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool):
            return node.value
        raise UnsafeExpression(f"constant {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id not in _NAMESPACE:
            raise UnsafeExpression(f"unknown name {node.id!r}")
        value = _NAMESPACE[node.id]
        if isinstance(value, sympy.Basic) or _is_callable_allowed(value):
            return value
        raise UnsafeExpression(f"name {node.id!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        return _BINARY_OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPERATORS:
        return _UNARY_OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left)
        result: Any = True
        for op, comparator in zip(node.ops, node.comparators):
            if type(op) not in _COMPARISONS:
                raise UnsafeExpression("comparison")
            right = _evaluate(comparator)
            result = _COMPARISONS[type(op)](left, right)
            if not result:
                return result
            left = right
        return result
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(element) for element in node.elts)
    if isinstance(node, ast.Call) and not node.keywords:
        function = _evaluate(node.func)
        if not _is_callable_allowed(function):
            raise UnsafeExpression("call")
        arguments = [_evaluate(argument) for argument in node.args if not isinstance(argument, ast.Starred)]
        if len(arguments) != len(node.args):
            raise UnsafeExpression("starred argument")
        if any(isinstance(a, str) for a in arguments) and not (
            isinstance(function, type) and issubclass(function, (sympy.Symbol, sympy.Number))
            or function is sympy.Function
        ):
            raise UnsafeExpression("string argument")  # only Symbol('x'), Float('1.5'), Function('f')
        return function(*arguments)
    raise UnsafeExpression(type(node).__name__)


def parse_text(text: str, transformations: tuple) -> Any:
    """What `parse_expr(text, transformations=transformations)` returns, computed without eval.

    Raises on text that parse_expr rejects and on constructs outside the whitelist.
    """
    code = sympy_parser.stringify_expr(text, {}, dict(_NAMESPACE), transformations)
    return _evaluate(ast.parse(code, mode="eval"))


#: `_sympy_parse` of the official PRM800K grader: standard transformations + implicit multiplication
IMPLICIT_TRANSFORMATIONS = sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,)
#: what `sympify(text, rational=True)` (hence `sympy.N(text)`) uses
SYMPIFY_RATIONAL_TRANSFORMATIONS = sympy_parser.standard_transformations + (
    sympy_parser.rationalize,
    sympy_parser.convert_xor,
)


def parse_like_sympy_parse(expression: str) -> Any:
    """The official `_sympy_parse`: `^` -> `**`, then parse with implicit multiplication."""
    return parse_text(expression.replace("^", "**"), IMPLICIT_TRANSFORMATIONS)


def numeric_value_like_N(text: str) -> Any:
    """`sympy.N(text)` for a string: `sympify(text, rational=True).evalf()`."""
    return parse_text(text.replace("\n", ""), SYMPIFY_RATIONAL_TRANSFORMATIONS).evalf()
