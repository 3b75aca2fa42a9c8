"""The symbolic check (sympy), which only ever runs inside a grader worker process."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Iterable

from vineppo.tasks.math_grading.compare import NUMERIC_TOLERANCE, _answer_lists_match, _math_equal

#: address-space cap of each worker process (MiB); a runaway big-integer power fails fast
DEFAULT_WORKER_MEMORY_MB = 2048

# --------------------------------------------------------------------------------------------
# The symbolic check (runs inside a worker process only)
# --------------------------------------------------------------------------------------------

_GATE_TOKEN = re.compile(r"\\(?:begin|end)\{[^{}]*\}|\\([a-zA-Z]+)|\\(.)|(\}\{)|[{}]", re.DOTALL)
# The function macros pylatexenc 2.10 (the official pin) writes out; it drops other unknown
# macros such as `\sec`, `\cot` or `\gcd` (their arguments stay).
_FUNCTION_NAMES_RENDERED_AS_IS = frozenset(
    "sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh ln log exp max min sup inf lim".split()
)
_GREEK_LETTERS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι", "kappa": "κ",
    "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "rho": "ρ", "varrho": "ϱ", "sigma": "σ",
    "varsigma": "ς", "tau": "τ", "upsilon": "υ", "phi": "ϕ", "varphi": "φ", "chi": "χ",
    "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ",
    "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Upsilon": "Υ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "ell": "ℓ", "hbar": "ħ",
}
_COMMANDS_RENDERED_AS = {"pi": "pi", "infty": "inf", "sqrt": "sqrt", "cup": "U", "cdot": "*", "times": "*"}
_ESCAPED_CHARACTERS_KEPT = frozenset("{}%$&#_")
# Names that the official letter count ignores, removed in the official order (so `arcsin`
# leaves `arc` behind, exactly as there).
_KNOWN_NAMES_IN_COUNT_ORDER = (
    "sqrt", "frac", "pi", "inf", "cos", "sin", "tan", "cot",
    "arccos", "arcsin", "arctan", "arccot", "log", "ln", "exp",
)
# The official BAD_REGEXES; the factorial one (`[0-9][0-9][0-9]+!`) is anchored at the start of
# a digit run, which finds the same matches without its quadratic cost on long digit runs.
_EXPLOSIVE_PATTERNS = tuple(
    re.compile(p)
    for p in (r"\^[0-9]+\^", r"\^-?[0-9][0-9]+", r"\*\*[0-9]+\*\*", r"\*\*-?[0-9][0-9]+", r"(?<![0-9])[0-9]{3,}!")
)


def _render_gate_token(match: re.Match[str]) -> str:
    command, escaped = match.group(1), match.group(2)
    if command is not None:
        if command in _FUNCTION_NAMES_RENDERED_AS_IS:
            return command
        if command in _COMMANDS_RENDERED_AS:
            return _COMMANDS_RENDERED_AS[command]
        return _GREEK_LETTERS.get(command, "")
    if escaped is not None:
        return escaped if escaped in _ESCAPED_CHARACTERS_KEPT else " "
    if match.group(3) is not None:
        return "/"  # between two groups, as in `\frac{a}{b}` -> `a/b`
    return ""  # a grouping brace, or an environment's \begin{...}/\end{...}


def latex_to_gate_text(latex: str) -> str:
    """A plain-text rendering of `latex` close enough to pylatexenc's for the symbolic gate.

    Grouping braces and formatting commands vanish (`x^{10}` -> `x^10`, `\\text{ab}` -> `ab`),
    `\\frac{a}{b}` -> `a/b`, Greek letters become Unicode letters, function names stay,
    `\\pi` -> `pi`, `\\infty` -> `inf`.
    """
    return _GATE_TOKEN.sub(_render_gate_token, latex)


def count_unknown_letters(text: str) -> int:
    """Distinct letters of `text` after removing the function names the official count ignores."""
    for name in _KNOWN_NAMES_IN_COUNT_ORDER:
        text = text.replace(name, "")
    return len({ch for ch in text if ch.isalpha()})


def symbolic_gate_allows(latex: str) -> bool:
    """The official `should_allow_eval` guard: refuse words (> 2 unknown letters) and towers or
    big exponents/factorials (`10^{10^{10}}`, `x^{10}`, `1000!`) that could hang sympy.

    DEPARTURE: also refuses anything containing `%` (see the module docstring).
    """
    if "%" in latex:
        return False
    text = latex_to_gate_text(latex)
    if count_unknown_letters(text) > 2:
        return False
    if "^{" in text or "^(" in text:
        return False
    return not any(p.search(text) for p in _EXPLOSIVE_PATTERNS)


# Text wrappers that pylatexenc rendered as their contents (`\text{odd}` reads as `odd`).
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathit|mbox)\{([^{}]*)\}")
# A dot closing a number (`30.`), which Python's parser accepted and the LaTeX grammar does not.
_DIGIT_THEN_BARE_DOT = re.compile(r"(\d)\.(?!\d)")
_PLAIN_INTEGER = re.compile(r"-?\d+")
_PLAIN_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
# Values given to free symbols when probing whether a difference is identically zero: positive,
# distinct, not integers, below 2 (so towers and logs stay finite and real).
_PROBE_VALUES = tuple(0.5772156649 + 0.2710000000 * k for k in range(6))
_PROBE_RELATIVE_TOLERANCE = 1e-6


class _SymbolicEngine:
    """LaTeX parsing + simplify + N, with a parse cache. Only ever built inside a worker."""

    def __init__(self) -> None:
        import sympy
        from latex2sympy2_extended import NormalizationConfig, latex2sympy
        from latex2sympy2_extended.latex2sympy2 import ConversionConfig

        self._sympy = sympy
        self._latex2sympy = latex2sympy
        # Answers are already strip_string-normalised: only the parser's basic clean-up, plus its
        # repair of unbraced operator arguments (`\frac{\sqrt{6}}2`), which pylatexenc also read.
        self._normalization = NormalizationConfig(
            basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
        )
        # Case-sensitive symbols, as sympy's parse_expr in the official code (`C` != `c`); a
        # number followed by a fraction is a mixed number, as the official text rewriting made it.
        self._conversion = ConversionConfig(lowercase_symbols=False, interpret_as_mixed_fractions=True)
        self._parsed: dict[str, object] = {}

    def _parse_plain_number(self, latex: str) -> object | None:
        # The commonest answers, built directly: the same objects latex2sympy would build, minus
        # the cost of its (pure-Python ANTLR) parser.
        sympy = self._sympy
        if _PLAIN_INTEGER.fullmatch(latex):
            return sympy.Integer(int(latex)) if len(latex) < 1000 else None
        if _PLAIN_DECIMAL.fullmatch(latex) and len(latex) < 100:
            return sympy.Float(latex)
        fraction = _PLAIN_FRACTION.fullmatch(latex)
        if fraction and len(latex) < 100:
            sign, numerator, denominator = fraction.groups()
            value = sympy.Rational(int(numerator), int(denominator)) if int(denominator) else sympy.zoo
            return -value if sign else value
        return None

    def parse(self, latex: str) -> object | None:
        """A sympy expression for `latex`, or None when it does not parse to a plain expression
        (sets, intervals, relations, matrices and parse errors are all None)."""
        if latex not in self._parsed:
            expression = self._parse_plain_number(latex)
            if expression is None:
                prepared = _DIGIT_THEN_BARE_DOT.sub(r"\1", _TEXT_WRAPPER.sub(r"\1", latex))
                try:
                    expression = self._latex2sympy(
                        prepared, normalization_config=self._normalization, conversion_config=self._conversion
                    )
                except Exception:
                    expression = None
            if not isinstance(expression, self._sympy.Expr):
                expression = None
            if len(self._parsed) > 4096:
                self._parsed.clear()
            self._parsed[latex] = expression
        return self._parsed[latex]

    def _real_value(self, expression: object, substitutions: dict | None = None) -> float | None:
        """The value of `expression` as a finite real float, or None (symbolic, complex, infinite)."""
        value = self._sympy.N(expression, subs=substitutions) if substitutions else self._sympy.N(expression)
        if not (value.is_number and value.is_real and value.is_finite):
            return None
        return float(value)

    def _differ_at_probe_point(self, a: object, b: object, symbols: Iterable[object]) -> bool:
        """Whether a and b, given fixed real values for their symbols, have clearly different
        real values: then a - b is not identically zero and simplify cannot reduce it to 0."""
        ordered = sorted(symbols, key=str)
        if len(ordered) > len(_PROBE_VALUES):
            return False
        point = dict(zip(ordered, _PROBE_VALUES))
        a_value, b_value = self._real_value(a, point), self._real_value(b, point)
        if a_value is None or b_value is None:
            return False
        scale = max(1.0, abs(a_value), abs(b_value))
        return abs(a_value - b_value) > _PROBE_RELATIVE_TOLERANCE * scale

    def equal(self, a_latex: str, b_latex: str) -> bool:
        """The official `symbolic_equal`: simplify(a - b) == 0, or N(a) within 1e-3 of N(b).

        DEPARTURE: a and b come from the LaTeX grammar, not from `parse_expr` on pylatexenc text
        (see the module docstring).
        """
        if not (symbolic_gate_allows(a_latex) and symbolic_gate_allows(b_latex)):
            return False
        if any(mark in text for text in (a_latex, b_latex) for mark in ",:"):
            # The official code parsed text with a comma as a Python tuple, which can be neither
            # subtracted nor evaluated numerically, and text with a colon (ratios, times) not at
            # all: never equal. (The LaTeX grammar would read `3:1` as 3.) Skipping saves time.
            return False
        a, b = self.parse(a_latex), self.parse(b_latex)
        if a is None or b is None:
            return False
        sympy = self._sympy
        try:
            symbols = a.free_symbols | b.free_symbols
            if not symbols:
                # Real constants: simplify(a - b) == 0 implies |N(a) - N(b)| <= 1e-3, so the
                # verdict is the numeric comparison alone; simplify is skipped (it is the slow part).
                a_value, b_value = self._real_value(a), self._real_value(b)
                if a_value is not None and b_value is not None:
                    return math.isclose(a_value, b_value, abs_tol=NUMERIC_TOLERANCE)
            elif self._differ_at_probe_point(a, b, symbols):
                # Not identically equal, and the numeric step cannot match symbolic values.
                return False
        except Exception:
            pass  # fall back to the full check below
        try:
            if sympy.simplify(a - b) == 0:
                return True
        except Exception:
            pass
        try:
            return math.isclose(float(sympy.N(a)), float(sympy.N(b)), abs_tol=NUMERIC_TOLERANCE)
        except Exception:  # complex, symbolic or undefined values
            return False


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------

_WARM_UP_PAIRS = (
    ("\\sqrt{x}+\\frac{x}{2}", "\\frac{x}{2}+x^{1/2}"),
    ("\\frac{3\\sqrt{2}}{4}", "\\frac{\\pi}{6}"),
    ("2\\sqrt{5}-1", "-\\frac{7}{2}+3i"),
    ("x^2-4x+3", "(x-1)(x-3)"),
    ("\\dfrac{5}{2}\\pi r^2", "10\\cdot\\sin(\\theta)"),
    ("\\log_2 8", "\\text{odd}"),
)
_WORKER_LAUNCH = (
    "import sys; from vineppo.tasks.math_grading.symbolic import serve_grader_worker; "
    "serve_grader_worker(int(sys.argv[1]))"
)


def _die_with_parent() -> None:
    # Linux: have the kernel SIGKILL this worker if the grading process dies, even mid-simplify.
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except Exception:
        pass


def serve_grader_worker(memory_limit_mb: int = DEFAULT_WORKER_MEMORY_MB) -> None:
    """Worker main loop: JSON requests on stdin, one JSON verdict per line on stdout.

    Requests: `{"id": n, "op": "math_equal", "args": [pred, gold]}` or
    `{"id": n, "op": "answer_lists_match", "args": [preds, golds]}`. Replies:
    `{"id": n, "result": bool}`; any exception counts as False. The first line sent is
    `{"ready": true}` once sympy and the LaTeX parser are loaded, or `{"fatal": "..."}`.
    """
    # Keep the protocol streams private: whatever a library prints cannot corrupt them.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    _die_with_parent()
    try:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    try:
        engine = _SymbolicEngine()
        # Load simplify's modules and warm the LaTeX parser's prediction cache on common answer
        # shapes now, so that the first timed cases do not pay for it.
        for a, b in _WARM_UP_PAIRS:
            engine.equal(a, b)
    except Exception as error:
        reply({"fatal": f"{type(error).__name__}: {error}"})
        return
    reply({"ready": True})

    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        try:
            first, second = request["args"]
            if request["op"] == "math_equal":
                result = _math_equal(first, second, engine.equal)
            else:
                result = _answer_lists_match(first, second, engine.equal)
        except Exception:  # MemoryError and RecursionError included: "not equal"
            result = False
        reply({"id": request.get("id"), "result": bool(result)})

