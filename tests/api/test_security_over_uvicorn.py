"""The security attack suite against a real uvicorn HTTPS server (see tests/api/conftest.py)."""

from __future__ import annotations

from tests.security_cases import SecurityAttackSuite


class TestSecurityOverUvicorn(SecurityAttackSuite):
    pass
