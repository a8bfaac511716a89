"""Reading back what configure_logging wrote into a buffer (shared by the tests here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

LogLines = Callable[[], list[dict[str, Any]]]


def parse_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
