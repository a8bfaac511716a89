"""The security attack suite against the real Ray Serve app over real HTTPS.

Same cases as ``tests/api/test_security_over_uvicorn.py``; here the target is the session's
Serve stack (``tests/integration/conftest.py``), whose logs include Ray's own log files.
"""

from __future__ import annotations

import pytest

from tests.security_cases import SecurityAttackSuite

pytestmark = pytest.mark.integration


class TestSecurityOverServe(SecurityAttackSuite):
    pass
