"""`sessionwatch label`: an analyst's verdict on a revocation or finding, into the archive's
`feedback` table (the labels `train --from-archive` learns from)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers.errors import SessionwatchError

if TYPE_CHECKING:
    from storage.feedback import TargetKind


def label_command(args: Any, settings: Any, default_analyst: str) -> int:
    """Check the flags, record the verdict, print one line saying what was recorded."""
    from sessionwatch.archive import open_archive
    from storage.feedback import check_verdict, record_verdict

    kind: TargetKind = "revocation" if args.revocation is not None else "finding"
    target = args.revocation if args.revocation is not None else args.finding
    analyst = args.analyst if args.analyst is not None else default_analyst
    if not analyst.strip():
        raise SessionwatchError("--analyst: say who gives the verdict; $USER is not set here")
    check_verdict(target, args.verdict, analyst, args.note)  # refused before opening anything
    if settings.chdb_dir and not Path(settings.chdb_dir).is_dir():
        raise SessionwatchError(f"--chdb: no such directory {settings.chdb_dir!r}")
    backend = open_archive(settings)
    try:
        _prepare(backend)
        verdict = record_verdict(backend, target, args.verdict, analyst, args.note, kind=kind)
    finally:
        backend.close()
    note = f"; note of {len(verdict.note)} characters" if verdict.note else ""
    print(f"sessionwatch label: {verdict.verdict} {verdict.target_kind} {verdict.target} "
          f"(tenant {verdict.tenant}, session {verdict.session or '-'}, user "
          f"{verdict.user or '-'}) by {verdict.analyst} at "
          f"{verdict.at.isoformat(timespec='milliseconds')}{note}; verdict {verdict.id[:16]}")
    return 0


def _prepare(backend: Any) -> None:
    """Refuse what is no archive; add the feedback table to an archive written before it."""
    found = backend.query("SELECT name FROM system.tables WHERE database = 'sessionwatch' "
                          "AND name IN ('findings', 'revocations', 'feedback')")
    tables = set(map(str, found["name"])) if not found.empty else set()
    missing = {"findings", "revocations"} - tables
    if missing:
        raise SessionwatchError(f"{backend.name}: the archive has no sessionwatch."
                                f"{', sessionwatch.'.join(sorted(missing))}; is this the archive "
                                "`sessionwatch archive` writes to?")
    if "feedback" not in tables:
        backend.migrate()
