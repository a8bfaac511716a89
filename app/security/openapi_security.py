"""The API's security schemes and each route's scopes, written into the OpenAPI document.

FastAPI documents a scheme only when a route depends on a ``fastapi.security`` object, and
every such dependency runs on every request. The auth dependency reads its credentials
from the headers itself (the header name comes from the config), so the two schemes are
added to the document here instead, once, when it is built: ``ApiKey`` (the configured
header) and ``OAuth2ClientCredentials`` (``POST /token``), and on every route that
depends on :func:`app.security.dependencies.authenticate`, the scopes it requires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.config import ServiceConfig
from app.security.context import PREDICT_SCOPE, STATS_SCOPE


def security_schemes(config: ServiceConfig) -> dict[str, Any]:
    return {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": config.security.authentication.api_key_header,
            "description": "API key `cnl_<key id>_<secret>` (`cnnlstm apikey create`).",
        },
        "OAuth2ClientCredentials": {
            "type": "oauth2",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": "token",
                    "scopes": {
                        PREDICT_SCOPE: "call POST /predict",
                        STATS_SCOPE: "read GET /stats",
                    },
                }
            },
            "description": "JWT from POST /token (client credentials) or `cnnlstm token`.",
        },
    }


def _scopes_of(dependant: Dependant, auth: Callable[..., Any]) -> Iterator[list[str]]:
    for sub in dependant.dependencies:
        if sub.call is auth:
            yield list(sub.own_oauth_scopes or [])
        yield from _scopes_of(sub, auth)


def document_security(app: FastAPI, config: ServiceConfig, auth: Callable[..., Any]) -> None:
    """Wrap ``app.openapi``: the schemes, and ``security`` on each route using ``auth``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        doc.setdefault("components", {}).setdefault("securitySchemes", {}).update(
            security_schemes(config)
        )
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            found = list(_scopes_of(route.dependant, auth))
            if not found:  # an open route (/healthz, /ready, /token ...)
                continue
            scopes = sorted({scope for each in found for scope in each})
            for method in route.methods or ():
                operation = doc.get("paths", {}).get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    operation["security"] = [
                        {"ApiKey": []},
                        {"OAuth2ClientCredentials": scopes},
                    ]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
