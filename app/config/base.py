"""What every configuration section shares: the strict base class and common type aliases."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

AuthMethod = Literal["api_key", "jwt"]
JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256"]


class Section(BaseModel):
    """A strict section: unknown keys are errors, and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
