"""CLI: API keys, tokens, OAuth2 clients and the JWT secret.

``register(sub)`` adds ``apikey create|list|revoke|delete``, ``token``, ``client
create|list|revoke`` and ``secret init``. Secrets go to stdout exactly once, at creation;
everything else (what was done, where) goes to stderr, so ``KEY=$(cnnlstm apikey create
...)`` captures only the key. Nothing here ever prints a stored digest or hash.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from app.config import ServiceConfig
from app.config.env import load_service_config
from app.security.api_keys import ApiKeyStore, ApiKeyStoreError
from app.security.clients import ClientStore, ClientStoreError
from app.security.jwt_tokens import (
    HMAC_ALGORITHMS,
    JwtKeyError,
    generate_jwt_secret,
    mint_token,
    read_jwt_secret,
)
from app.security.secret_files import atomic_write_private

MAX_CLI_TOKEN_TTL_S = 366 * 86400


def _config(args: argparse.Namespace) -> ServiceConfig:
    return load_service_config(getattr(args, "config", None))[1]


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _check_scopes(config: ServiceConfig, scopes: list[str]) -> str | None:
    known = config.security.authorization.required_scopes
    unknown = sorted(set(scopes) - set(known))
    if unknown:
        return (
            f"unknown scope(s) {unknown}; known: {known} "
            "(add new ones to security.authorization.required_scopes)"
        )
    return None


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def cell(value: Any) -> str:
        return ",".join(value) if isinstance(value, list) else "-" if value is None else str(value)

    table = [columns] + [[cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# --- apikey ---------------------------------------------------------------------------


def _key_store_path(args: argparse.Namespace, config: ServiceConfig) -> Path:
    """``--store FILE`` (offline: a file to turn into a Kubernetes Secret), else the
    configured ``api_key_store_path``."""
    store: Path | None = args.store
    return store if store is not None else config.security.authentication.api_key_store_path


def _apikey_create(args: argparse.Namespace) -> int:
    config = _config(args)
    if problem := _check_scopes(config, args.scope):
        _err(problem)
        return 2
    if args.ttl_days is not None and args.ttl_days <= 0:
        _err("--ttl-days must be positive")
        return 2
    if (args.rate_limit is None) != (args.burst is None):
        _err("--rate-limit and --burst go together")
        return 2
    expires_at = time.time() + args.ttl_days * 86400 if args.ttl_days else None
    store = ApiKeyStore(_key_store_path(args, config))
    try:
        record, plaintext = store.create(
            owner=args.owner,
            scopes=args.scope,
            expires_at=expires_at,
            rate_limit_per_s=args.rate_limit,
            burst=args.burst,
            priority=args.priority,
        )
    except ApiKeyStoreError as exc:
        _err(str(exc))
        return 1
    if args.json:
        print(json.dumps({**record.public_view(), "api_key": plaintext}))
    else:
        print(plaintext)
    _err(f"created key {record.key_id} for {record.owner} in {store.path}")
    _err("this is the only time the key is shown: store it in your secret manager now")
    return 0


def _apikey_list(args: argparse.Namespace) -> int:
    store = ApiKeyStore(_key_store_path(args, _config(args)))
    rows = [r.public_view() for r in store.list_keys()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(
            rows, ["key_id", "owner", "scopes", "created_at", "expires_at", "disabled", "priority"]
        )
    return 0


def _apikey_revoke(args: argparse.Namespace) -> int:
    store = ApiKeyStore(_key_store_path(args, _config(args)))
    if not store.revoke(args.key_id):
        _err(f"no key {args.key_id}")
        return 1
    _err(f"revoked key {args.key_id} (servers pick it up within a second)")
    return 0


def _apikey_delete(args: argparse.Namespace) -> int:
    store = ApiKeyStore(_key_store_path(args, _config(args)))
    if not store.delete(args.key_id):
        _err(f"no key {args.key_id}")
        return 1
    _err(f"deleted key {args.key_id}")
    return 0


# --- token / secret ----------------------------------------------------------------------


def _token(args: argparse.Namespace) -> int:
    config = _config(args)
    auth = config.security.authentication
    if problem := _check_scopes(config, args.scope):
        _err(problem)
        return 2
    if not 0 < args.ttl <= MAX_CLI_TOKEN_TTL_S:
        _err(f"--ttl must be between 1 and {MAX_CLI_TOKEN_TTL_S} seconds")
        return 2
    algorithm = next((a for a in auth.jwt_algorithms if a in HMAC_ALGORITHMS), None)
    if algorithm is None:
        _err("no HS* algorithm in security.authentication.jwt_algorithms: cannot sign here")
        return 1
    try:
        secret = read_jwt_secret(auth.jwt_secret_path)
    except JwtKeyError as exc:
        _err(str(exc))
        return 1
    print(
        mint_token(
            secret,
            subject=args.subject,
            scopes=args.scope,
            ttl_s=args.ttl,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            algorithm=algorithm,
        )
    )
    return 0


def _secret_init(args: argparse.Namespace) -> int:
    path: Path = args.path or _config(args).security.authentication.jwt_secret_path
    if path.exists() and not args.force:
        _err(f"{path} exists; pass --force to replace it (every issued token becomes invalid)")
        return 1
    atomic_write_private(path, (generate_jwt_secret() + "\n").encode("ascii"))
    _err(f"wrote a new JWT secret to {path} (mode 0600)")
    return 0


# --- client ------------------------------------------------------------------------------


def _client_store(args: argparse.Namespace) -> ClientStore | None:
    path = _config(args).security.authentication.client_store_path
    if path is None:
        _err("security.authentication.client_store_path is not set in the config")
        return None
    return ClientStore(path)


def _client_create(args: argparse.Namespace) -> int:
    if problem := _check_scopes(_config(args), args.scope):
        _err(problem)
        return 2
    store = _client_store(args)
    if store is None:
        return 1
    try:
        record, secret = store.create(owner=args.owner, scopes=args.scope)
    except ClientStoreError as exc:
        _err(str(exc))
        return 1
    print(json.dumps({"client_id": record.client_id, "client_secret": secret}))
    _err(f"created client {record.client_id}; the secret is shown only this once")
    return 0


def _client_list(args: argparse.Namespace) -> int:
    store = _client_store(args)
    if store is None:
        return 1
    rows = [c.public_view() for c in store.list_clients()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["client_id", "owner", "scopes", "created_at", "disabled"])
    return 0


def _client_revoke(args: argparse.Namespace) -> int:
    store = _client_store(args)
    if store is None:
        return 1
    if not store.revoke(args.client_id):
        _err(f"no client {args.client_id}")
        return 1
    _err(f"revoked client {args.client_id}")
    return 0


# --- wiring ------------------------------------------------------------------------------


STORE_HELP = (
    "the key store file to use instead of security.authentication.api_key_store_path "
    "(offline key management: build the file, then ship it as a Secret)"
)


def _add_apikey(sub: argparse._SubParsersAction) -> None:
    apikey = sub.add_parser("apikey", help="create, list, revoke or delete API keys")
    cmds = apikey.add_subparsers(dest="apikey_command", required=True)
    create = cmds.add_parser("create", help="create a key (printed once)")
    create.add_argument("--store", type=Path, default=None, help=STORE_HELP)
    create.add_argument("--owner", required=True)
    create.add_argument("--scope", action="append", required=True, help="repeatable")
    create.add_argument("--ttl-days", type=float, default=None, help="expire after N days")
    create.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    create.add_argument("--burst", type=int, default=None)
    create.add_argument("--priority", type=int, default=0)
    create.add_argument("--json", action="store_true", help="print metadata and key as JSON")
    create.set_defaults(func=_apikey_create)
    listing = cmds.add_parser("list", help="list keys (never shows secrets)")
    listing.add_argument("--store", type=Path, default=None, help=STORE_HELP)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_apikey_list)
    revoke = cmds.add_parser("revoke", help="disable a key")
    revoke.add_argument("--store", type=Path, default=None, help=STORE_HELP)
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_apikey_revoke)
    delete = cmds.add_parser("delete", help="remove a key from the store")
    delete.add_argument("--store", type=Path, default=None, help=STORE_HELP)
    delete.add_argument("key_id")
    delete.set_defaults(func=_apikey_delete)


def _add_client(sub: argparse._SubParsersAction) -> None:
    client = sub.add_parser("client", help="OAuth2 client-credentials clients for POST /token")
    cmds = client.add_subparsers(dest="client_command", required=True)
    create = cmds.add_parser("create", help="create a client (secret printed once)")
    create.add_argument("--owner", required=True)
    create.add_argument("--scope", action="append", required=True, help="repeatable")
    create.set_defaults(func=_client_create)
    listing = cmds.add_parser("list", help="list clients (never shows secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_client_list)
    revoke = cmds.add_parser("revoke", help="disable a client")
    revoke.add_argument("client_id")
    revoke.set_defaults(func=_client_revoke)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the security subcommands; each sets ``func(args) -> int``."""
    _add_apikey(sub)
    token = sub.add_parser("token", help="mint a JWT with the configured secret")
    token.add_argument("--scope", action="append", required=True, help="repeatable")
    token.add_argument("--ttl", type=int, required=True, metavar="SECONDS")
    token.add_argument("--subject", default="cli")
    token.set_defaults(func=_token)
    _add_client(sub)
    secret = sub.add_parser("secret", help="JWT signing secret")
    cmds = secret.add_subparsers(dest="secret_command", required=True)
    init = cmds.add_parser("init", help="write a new random JWT secret file (0600)")
    init.add_argument("--path", type=Path, default=None, help="default: jwt_secret_path")
    init.add_argument("--force", action="store_true", help="replace an existing secret")
    init.set_defaults(func=_secret_init)
