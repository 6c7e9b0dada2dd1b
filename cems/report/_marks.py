"""The report's marks section (issue 14 item 5): marked hours per outlet and mark type in the period, annual
caps used (year to the end of the period), and stop declarations filed late (kept, without effect).  Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cems.model import BEIJING
from cems.protocol.mark import LATE, MarkRecord
from cems.registry import Registry
from cems.rules.marks import MarkLedger


@dataclass(frozen=True, slots=True)
class MarkedHoursRow:
    mn: str
    outlet: str
    enterprise: str
    type: str
    type_name: str
    judged: bool
    rate: str
    #: Hours of the period in which a record of this type is in force.
    hours: int
    records: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CapRow:
    mn: str
    outlet: str
    enterprise: str
    group: str
    name: str
    year: int
    used: int
    cap: float | None
    over: int
    verified: bool


@dataclass(frozen=True, slots=True)
class LateDeclarationRow:
    record_id: str
    mn: str
    outlet: str
    enterprise: str
    type: str
    start: datetime
    end: datetime
    received_at: datetime
    submitter: str
    note: str


@dataclass(frozen=True, slots=True)
class MarksSection:
    marked: tuple[MarkedHoursRow, ...] = ()
    caps: tuple[CapRow, ...] = ()
    late: tuple[LateDeclarationRow, ...] = ()
    #: Every record considered (for the evidence: who marked what, when, from where).
    records: tuple[MarkRecord, ...] = field(default=())


def marks_ledger(registry: Registry, records: Iterable[MarkRecord]) -> MarkLedger:
    ledger = MarkLedger(registry)
    ledger.load(records)
    return ledger


def marks_section(registry: Registry, ledger: MarkLedger, start: datetime, end: datetime) -> MarksSection:
    """The section for ``[start, end)``."""
    a, b = int(start.timestamp()), int(end.timestamp())
    names = {i.outlet.mn: (i.outlet.name, i.enterprise.name) for i in registry.outlets()}
    cat = ledger.catalog
    marked: list[MarkedHoursRow] = []
    caps: list[CapRow] = []
    for mn in sorted({r.mn for r in ledger.records()}):
        outlet, ent = names.get(mn, ("", ""))
        per_type: dict[str, tuple[int, set[str]]] = {}
        for h, rec in ledger.hours(mn).items():
            if a <= h < b:
                n, ids = per_type.get(rec.type, (0, set()))
                ids.add(rec.record_id)
                per_type[rec.type] = (n + 1, ids)
        for code, (n, ids) in sorted(per_type.items()):
            t = cat.types.get(code)
            marked.append(
                MarkedHoursRow(
                    mn,
                    outlet,
                    ent,
                    code,
                    "" if t is None else t.name,
                    t is not None and t.judged,
                    "" if t is None else t.rate,
                    n,
                    tuple(sorted(ids)),
                )
            )
        for use in ledger.cap_use(mn):
            if use.year == start.astimezone(BEIJING).year or use.year == (end.astimezone(BEIJING).year):
                g = cat.caps.get(use.group)
                caps.append(
                    CapRow(
                        mn,
                        outlet,
                        ent,
                        use.group,
                        "" if g is None else g.name,
                        use.year,
                        use.used,
                        use.cap,
                        len(use.over),
                        g is not None and g.verified,
                    )
                )
    late = [
        LateDeclarationRow(
            r.record_id, r.mn, *names.get(r.mn, ("", "")), r.type, r.start, r.end, r.received_at, r.submitter, r.note
        )
        for r in ledger.records()
        if r.kind == "declaration" and r.status == LATE and r.start < end and r.end > start
    ]
    return MarksSection(tuple(marked), tuple(caps), tuple(late), tuple(ledger.records()))
