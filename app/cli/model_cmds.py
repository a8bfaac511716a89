"""``cnnlstm train`` and ``cnnlstm registry list|validate``."""

from __future__ import annotations

import argparse
import json
import sys

from app.config.env import load_service_config
from model.common.errors import RegistryError
from model.common.registry import ModelRegistry


def _registry(args: argparse.Namespace) -> ModelRegistry:
    _, config = load_service_config(args.config)
    return ModelRegistry(args.registry or config.model_registry.path)


def _has_option(argv: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in argv)


def _train(args: argparse.Namespace) -> int:
    # torch is loaded only by this command (model.train), never by the gateway.
    from model.train import main_train

    argv = list(args.extras)
    if not _has_option(argv, "--registry") and not {"-h", "--help"} & set(argv):
        _, config = load_service_config(args.config)
        argv = ["--registry", str(config.model_registry.path), *argv]
    return main_train(argv)


def _list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = []
    for name in reg.list_models():
        try:
            default = reg.default_version(name)
        except RegistryError as exc:  # the versions are still worth listing
            print(f"{name}: {exc}", file=sys.stderr)
            default = None
        for version in reg.list_versions(name):
            m = reg.manifest(name, version)
            rows.append(
                {
                    "name": name,
                    "version": version,
                    "default": version == default,
                    "created_at": m.created_at.isoformat(),
                    "sha256": m.weights_sha256[:12],
                    "val_directional_accuracy": m.training.val_directional_accuracy,
                    "naive_directional_accuracy": m.training.naive_directional_accuracy,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"registry {reg.root} is empty")
        return 0
    for r in rows:
        mark = "*" if r["default"] else " "
        print(
            f"{mark} {r['name']}/{r['version']}  sha256={r['sha256']}  "
            f"created={r['created_at']}  val_acc={r['val_directional_accuracy']:.3f} "
            f"(naive {r['naive_directional_accuracy']:.3f})"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Checksum and schema for every version (or one); with --load also the golden output."""
    reg = _registry(args)
    try:
        targets = (
            [
                (args.name, v)
                for v in ([args.version] if args.version else reg.list_versions(args.name))
            ]
            if args.name
            else [(n, v) for n in reg.list_models() for v in reg.list_versions(n)]
        )
    except RegistryError as exc:  # an unknown model, or a name that cannot be one
        if args.json:
            refused = {"registry": str(reg.root), "ok": False, "results": [], "error": str(exc)}
            print(json.dumps(refused, indent=2))
        else:
            print(f"INVALID {args.name}: {exc}", file=sys.stderr)
        return 1
    results: list[dict[str, object]] = []
    for name, version in targets:
        error: str | None = None
        try:
            reg.verify(name, version)
            if args.load:
                from model.runtime import load_model  # golden-output check needs torch

                load_model(reg, reg.resolve(name, version), device="cpu", validate=True)
        except RegistryError as exc:
            error = str(exc)
        results.append({"name": name, "version": version, "ok": error is None, "error": error})
        if args.json:
            continue
        if error is None:
            print(f"ok      {name}/{version}")
        else:
            print(f"INVALID {name}/{version}: {error}", file=sys.stderr)
    ok = bool(targets) and all(r["ok"] for r in results)
    if args.json:
        report: dict[str, object] = {"registry": str(reg.root), "ok": ok, "results": results}
        if not targets:
            report["error"] = "nothing to validate"
        print(json.dumps(report, indent=2))
    elif not targets:
        print("nothing to validate", file=sys.stderr)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    # The trainer (model.train) owns its options: they are forwarded as given, after 'train'
    # or after 'train --'. Only the global options (--config) are taken here; -h/--help
    # goes to the trainer too, so 'cnnlstm train --help' lists the trainer's options.
    train = sub.add_parser(
        "train",
        help="train a model artifact from real bars shipped in a package (or synthetic)",
        description="Train and publish to the registry (default: model_registry.path of "
        "--config). Options go to the trainer: 'cnnlstm train --epochs 1 --source synthetic' "
        "or 'cnnlstm train -- --epochs 1'; 'cnnlstm train --help' lists them.",
        add_help=False,
    )
    train.set_defaults(func=_train, forward_extras=True)

    registry = sub.add_parser("registry", help="inspect and validate the model registry")
    rsub = registry.add_subparsers(dest="registry_command", required=True)
    lst = rsub.add_parser("list", help="list models and versions (* = default)")
    lst.add_argument("--registry", default=None, help="registry root (default: from config)")
    lst.add_argument("--json", action="store_true", help="a JSON list on stdout")
    lst.set_defaults(func=_list)
    val = rsub.add_parser("validate", help="verify checksums and manifests")
    val.add_argument("name", nargs="?")
    val.add_argument("version", nargs="?")
    val.add_argument("--registry", default=None)
    val.add_argument("--load", action="store_true", help="also load and check the golden output")
    val.add_argument("--json", action="store_true", help="one JSON report on stdout")
    val.set_defaults(func=_validate)
