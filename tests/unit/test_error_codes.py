"""Every error code the app can write is in the one enumeration (OpenAPI's ErrorCode).

The codes come from three places: the failure kinds (their values are the codes), the
status defaults in ``app.api.errors``, and string literals handed to a ``code`` parameter
anywhere under ``app/`` (``ApiError(..., code="...")``, ``error_response(..., code=...)``,
a helper that takes ``code`` positionally). The scan below reads the source, so a new code
written anywhere fails here until it is added to ``app.api.errors.EDGE_CODES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from app.api.errors import _DEFAULT_CODES, EDGE_CODES, ERROR_CODES, FALLBACK_CODE
from model.common.failures import FailureKind

APP = Path(__file__).resolve().parents[2] / "app"


def _constants(node: ast.expr) -> set[str]:
    """String constants ``node`` can evaluate to (a literal or either side of ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _constants(node.body) | _constants(node.orelse)
    return set()


def _code_positions(tree: ast.Module) -> dict[str, int]:
    """Functions in ``tree`` with a positional ``code`` parameter -> its call-site index."""
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [a.arg for a in node.args.posonlyargs + node.args.args]
            if "code" in names:
                index = names.index("code")
                if names and names[0] in ("self", "cls"):
                    index -= 1  # called as self.f(...) / cls.f(...)
                out[node.name] = index
    return out


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def codes_written_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    positional = _code_positions(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "code":
                found |= _constants(kw.value)
        index = positional.get(_call_name(node) or "")
        if index is not None and 0 <= index < len(node.args):
            found |= _constants(node.args[index])
    return found


def test_the_scan_finds_codes_written_every_way() -> None:
    written = set().union(*(codes_written_in(p) for p in APP.rglob("*.py")))
    # keyword literal, conditional literal, positional through a helper, in three packages
    assert {"insufficient_scope", "malformed_json", "invalid_request"} <= written
    assert {"credentials_in_url", "duplicate_credentials"} <= written
    assert {"invalid_client", "unsupported_grant_type", "payload_too_large"} <= written


def test_every_code_the_app_writes_is_enumerated() -> None:
    written: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        for code in codes_written_in(path):
            written.setdefault(code, set()).add(str(path.relative_to(APP.parent)))
    missing = {code: sorted(paths) for code, paths in written.items() if code not in ERROR_CODES}
    assert missing == {}


def test_failure_kinds_and_status_defaults_are_enumerated() -> None:
    assert {k.value for k in FailureKind} <= set(ERROR_CODES)
    assert set(_DEFAULT_CODES.values()) <= set(ERROR_CODES)
    assert FALLBACK_CODE in ERROR_CODES
    assert set(EDGE_CODES) <= set(ERROR_CODES)


def test_every_code_has_a_meaning_and_is_a_plain_token() -> None:
    for code, meaning in ERROR_CODES.items():
        assert code.replace("_", "").isalpha(), code
        assert code == code.lower(), code
        assert meaning.strip(), code
    assert list(ERROR_CODES)[: len(FailureKind)] == [k.value for k in FailureKind]
