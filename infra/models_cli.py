"""``recstream models``: list, show, promote, roll back and clean the model registry.

``recstream models list [--family F]``, ``show VERSION``, ``promote FAMILY VERSION [--pointer
NAME]``, ``rollback FAMILY [--pointer NAME]``, ``history FAMILY [--pointer NAME]``,
``gc [--min-age SECONDS]``;
each takes ``--root`` (default: env ``TRAIN_REGISTRY_ROOT``, else ``.recstream/registry``; a
folder or an fsspec URL) and ``--json`` (one JSON document on stdout, for scripts; an error is
``{"error": ...}`` with exit status 1). Rich tables otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # imported when run: `recstream --help` stays light
    from models.registry import Registry

console = Console()


def add_parser(sub: Any) -> None:
    """Adds ``models`` and its actions to the ``recstream`` subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=None,
                        help="registry root, a folder or URL (default: TRAIN_REGISTRY_ROOT or "
                             ".recstream/registry)")
    common.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    mo = sub.add_parser("models", help="the model registry: list, show, promote, rollback, gc")
    acts = mo.add_subparsers(dest="models_cmd", required=True)
    ls = acts.add_parser("list", parents=[common], help="complete versions and their pointers")
    ls.add_argument("--family", default=None)
    sh = acts.add_parser("show", parents=[common], help="one version's manifest")
    sh.add_argument("version")
    pr = acts.add_parser("promote", parents=[common], help="point FAMILY's pointer at VERSION")
    pr.add_argument("family")
    pr.add_argument("version")
    for name, what in (("rollback", "undo the pointer's last promotion"),
                       ("history", "every change of a pointer")):
        p = acts.add_parser(name, parents=[common], help=what)
        p.add_argument("family")
    for p in (pr, acts.choices["rollback"], acts.choices["history"]):
        p.add_argument("--pointer", default="live", help="pointer name (default: live)")
    for p in (pr, acts.choices["rollback"]):
        p.add_argument("--reason", default="", help="kept in the pointer's history")
    gc = acts.add_parser("gc", parents=[common],
                         help="remove orphans (half-published folders, temporary files)")
    gc.add_argument("--min-age", type=float, default=0.0, metavar="SECONDS",
                    help="only orphans untouched that long (a publisher may be running; "
                         "default 0: run it while none is)")


def _pointed(reg: Registry, family: str) -> dict[str, list[str]]:
    """{version: [names of the family's pointers that hold it]}."""
    out: dict[str, list[str]] = {}
    for name, vid in sorted(reg.pointers(family).items()):
        out.setdefault(vid, []).append(name)
    return out


def _metrics(m: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(m.items()))


def _list(reg: Registry, args: argparse.Namespace) -> Any:
    versions = reg.versions(args.family)
    families = sorted({args.family} if args.family else set(reg.families()))
    pointed = {f: _pointed(reg, f) for f in families}
    rows = [{"version": m["version"], "family": m["family"], "arch": m["arch"],
             "parent": m["parent"], "bank_version": m["bank_version"],
             "created_at": m["created_at"], "metrics": m["metrics"],
             "pointers": pointed.get(m["family"], {}).get(m["version"], [])} for m in versions]
    if args.json:
        return {"root": reg.store.url, "versions": rows,
                "pointers": {f: reg.pointers(f) for f in families}}
    table = Table(title=f"{reg.store.url}: {len(rows)} versions, oldest first")
    for name in ("version", "pointers", "parent", "arch", "bank", "metrics"):  # never cut
        table.add_column(name, overflow="fold", no_wrap=name in ("version", "arch", "bank"),
                         style="bold" if name == "pointers" else None)
    for r in rows:
        table.add_row(r["version"], " ".join(r["pointers"]), r["parent"] or "", r["arch"],
                      r["bank_version"][:8], _metrics(r["metrics"]))
    console.print(table)
    return None


def _show(reg: Registry, args: argparse.Namespace) -> Any:
    m = dict(reg.manifest(args.version))
    m["pointers"] = _pointed(reg, m["family"]).get(args.version, [])
    if args.json:
        return m
    table = Table("field", "value", title=args.version, show_header=False)
    for key in sorted(m):
        value = m[key]
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    console.print(table)
    return None


def _move(reg: Registry, args: argparse.Namespace) -> Any:
    before = reg.pointer(args.family, args.pointer)
    if args.models_cmd == "promote":
        reg.promote(args.family, args.version, args.pointer, reason=args.reason)
        now = args.version
    else:
        now = reg.rollback(args.family, args.pointer, reason=args.reason)
    if args.json:
        return {"family": args.family, "pointer": args.pointer, "version": now,
                "previous": before}
    console.print(f"{args.family}/{args.pointer}: {before} -> {now}", markup=False)
    return None


def _history(reg: Registry, args: argparse.Namespace) -> Any:
    history = reg.history(args.family, args.pointer)
    if args.json:
        return history
    table = Table(title=f"{args.family}/{args.pointer}")
    for name in ("at", "action", "version", "from", "reason"):
        table.add_column(name, overflow="fold", no_wrap=name in ("at", "action"))
    for e in history:
        table.add_row(e["at"][:19], e["action"], e["version"], e.get("from") or "", e["reason"])
    console.print(table)
    return None


def _gc(reg: Registry, args: argparse.Namespace) -> Any:
    removed = reg.gc(min_age_s=args.min_age)
    if args.json:
        return {"removed": removed}
    for path in removed:
        console.print(f"removed {path}", markup=False)
    console.print(f"{len(removed)} orphans removed from {reg.store.url}", markup=False)
    return None


ACTIONS = {"list": _list, "show": _show, "promote": _move, "rollback": _move,
           "history": _history, "gc": _gc}


def run(args: argparse.Namespace) -> int:
    """Runs ``recstream models <action>``; 1 on a registry error (said on stdout with
    ``--json``, else on stderr)."""
    from models.registry import Registry, RegistryError

    try:
        from train.settings import train_settings

        reg = Registry(args.root or train_settings().registry_root)
        out = ACTIONS[args.models_cmd](reg, args)
    except RegistryError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            Console(stderr=True).print(f"[red]models {args.models_cmd}[/red]: "
                                       f"{escape(str(exc))}", highlight=False)
        return 1
    if out is not None:
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        print()
    return 0
