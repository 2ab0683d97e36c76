"""The ``studio safety ...`` verbs. ``register(subparsers)`` adds them to ``studio``'s parser;
``python -m studio.safety.cli`` runs them on their own.

    studio safety scan FILE [--json] [--policy NAME]     (FILE "-" reads standard input)

``--policy`` names a policy as the Safety tab does (:mod:`studio.safety.store`): a name under
``STUDIO_HOME/safety/`` or a path in that folder or the shipped ``configs/safety/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from studio.errors import StudioError
from studio.safety.policy import load_policy
from studio.safety.scan import ScanResult, read_scan_file, scan_text
from studio.safety.store import PolicyStore
from studio.settings import Settings


def _print_human(result: ScanResult, source: str) -> None:
    if not result.findings:
        print(f"{source}: no findings")
    else:
        rows = [("TYPE", "CHECK", "SPAN", "SCORE", "TEXT")]
        for f in result.findings:
            shown = f.text if len(f.text) <= 40 else f.text[:37] + "..."
            rows.append((f.type, f.check, f"{f.start}-{f.end}", f"{f.score:.2f}", shown.replace("\n", " ")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if result.pii_engine:
        print(f"\nPII: {result.pii_engine}")
    if result.toxicity_scorer:
        print(f"toxicity: {result.toxicity_scorer}; highest paragraph score {result.toxicity_max or 0:.2f}")
    print("\nanonymized:")
    print(result.anonymized)


def cmd_safety_scan(args: argparse.Namespace) -> int:
    """Scan a text file (or stdin) with a safety policy; print findings and the anonymised text."""
    if args.policy:
        store = PolicyStore(Settings())
        policy = store.resolved(store.load(args.policy)[1])
    else:
        policy = load_policy()
    if args.file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        text, source = read_scan_file(args.file), args.file
    result = scan_text(text, policy)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_human(result, source)
    return 0


def register(subparsers: Any) -> None:
    """Add ``safety scan`` to a parser's subcommands (``studio/cli.py`` calls this)."""
    safety = subparsers.add_parser("safety", help="PII, toxicity and offensive-language checks")
    ssub = safety.add_subparsers(dest="safety_command", required=True)
    scan = ssub.add_parser("scan", help="list PII / toxicity / word-list findings in a text file and anonymise it")
    scan.add_argument("file", help="UTF-8 text file to scan ('-' for standard input)")
    scan.add_argument("--json", action="store_true", help='machine-readable: {"findings": [...], "anonymized": ...}')
    scan.add_argument(
        "--policy",
        help="safety policy: a name under STUDIO_HOME/safety/ ('policy' is the studio's own) or a path in that "
        "folder or configs/safety/ (default: the shipped configs/safety/default.yaml)",
    )
    scan.set_defaults(func=cmd_safety_scan)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the safety verbs on their own: ``python -m studio.safety.cli scan FILE [--json]``."""
    parser = argparse.ArgumentParser(prog="studio", description="Whetstone Studio safety checks")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["safety", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
