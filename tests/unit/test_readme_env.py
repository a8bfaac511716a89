"""README.md's table of environment variables is the one ``Settings`` reads.

Every variable the service reads (``app/config/env.py``) is a row with the code's default,
no row names a variable the code ignores, and a row that says it overrides a config key
does override that key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.config import ServiceConfig
from app.config.env import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| (`[^`]*`|—) \| (.*) \|$", re.MULTILINE)
# A value for each variable that differs from its default, to see the override happen.
TRY = {
    "MODEL_REGISTRY_PATH": "/srv/other-models",
    "LOG_LEVEL": "DEBUG",
    "MAX_BATCH_SIZE": "7",
    "BATCH_TIMEOUT_MS": "20",
    "CACHE_TTL_SECONDS": "99",
}


def _rows() -> dict[str, tuple[str, str]]:
    return {m.group(1): (m.group(2).strip("`"), m.group(3)) for m in ROW.finditer(README)}


def _shown(default: Any) -> str:
    return "—" if default is None else str(default)


def test_every_variable_settings_reads_is_a_row_with_its_default() -> None:
    rows = _rows()
    assert set(rows) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert rows[name][0] == _shown(field.default), name


@pytest.mark.parametrize(
    ("name", "key"),
    [(n, k) for n, (_, note) in _rows().items() for k in re.findall(r"^`([a-z_.]+)`$", note)],
)
def test_a_row_that_names_a_key_overrides_it(
    name: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for other in Settings.model_fields:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, TRY[name])

    def value(config: ServiceConfig) -> object:
        obj: object = config
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    base = ServiceConfig()
    assert value(Settings().apply_to(base)) != value(base), f"{name} does not set {key}"
