"""``cems evidence export``: the case file of one outlet (MN) and period.

Which packets: those of the MN that **arrived** in the period, and those whose **data time** (decoded with
:func:`cems.decode.decode_message`, as ``cems run`` decoded them) lies in the period — so back-filled
(补传) data that arrived days later are in, and packets that cannot be decoded are in by their arrival.
Arrivals are searched from one day before the period to ``late_days`` after it (default 11: the 10-day repair
window, DOMAIN.md §5, and a day).  For every archive segment that holds one such packet, **all** of the
MN's lines of that segment go into the case file (its header, messages, verdicts and seal), so that the
per-outlet links (``mn_prev``) prove that none of them is missing; ``readings.jsonl`` says which were selected
and why.  Other outlets' lines are never copied (only their hashes are inside the ``prev`` links).

The reads of InfluxDB and the SQLite state come in as functions (:class:`CaseReads`), so the export is
tested without a database and the CLI decides where they come from.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cems.decode import decode_message
from cems.errors import RejectedMessage
from cems.protocol.payload import encode_payload
from cems.registry import Registry
from cems.sinks.archive import line_body, read_records

CASE_FORMAT: Final = "cems.case/1"
Rows = list[dict[str, Any]]


def no_marks(mn: str, start: datetime, end: datetime) -> Rows:
    """The marks hook until marks exist (issue 14 items 1–5): none."""
    return []


@dataclass(frozen=True, slots=True)
class CaseReads:
    """Where the derived records come from (the CLI passes InfluxDB and SQLite reads)."""

    #: ``cems_hourly`` rows of the MN in [start, end)
    hourly: Callable[[str, datetime, datetime], Rows]
    #: events of the MN that overlap [start, end), each with its acknowledgement fields
    events: Callable[[str, datetime, datetime], Rows]
    #: the alert history (opened, updated, acknowledged, escalated, ...) of the given event ids
    alerts: Callable[[list[str]], Rows]
    #: enterprise marks (标记) of the MN in [start, end)
    marks: Callable[[str, datetime, datetime], Rows] = no_marks
    #: What each read came from, for the manifest (e.g. the InfluxDB URL and database, the SQLite file).
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaseRequest:
    mn: str
    start: datetime
    end: datetime
    by: str
    #: Archive roots: every source directory below each (ingesters by client id, bridges) is read.
    evidence_dirs: tuple[Path, ...]
    late_days: int = 11
    registry_path: Path | None = None


@dataclass
class _Selected:
    lines: list[bytes] = field(default_factory=list)
    hit: bool = False


def _decode(rec: dict[str, Any], registry: Registry) -> tuple[dict[str, Any] | None, datetime | None]:
    """(the reading as ``cems.reading/1`` JSON, or the decode error; its data time)."""
    payload = base64.b64decode(rec["payload"])
    try:
        d = decode_message(rec["topic"], payload, registry)
    except RejectedMessage as e:
        return {"error": {"reason": e.reason, "detail": e.detail}}, None
    except Exception as e:  # a bug met by one packet: reported in the case file, never stops the export
        return {"error": {"reason": "internal_error", "detail": f"{type(e).__name__}: {e}"}}, None
    r = d.reading
    doc: dict[str, Any] = json.loads(encode_payload(r))
    doc["origin"] = r.origin
    if r.dropped:
        doc["dropped"] = list(r.dropped)
    return doc, r.data_time


def _arrival(rec: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(rec["arrival"]).replace("Z", "+00:00"))


def _json_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, default=str, sort_keys=True) + "\n" for r in rows).encode()


def export_case(req: CaseRequest, registry: Registry, reads: CaseReads, out: Path) -> dict[str, Any]:
    """Write the case file ``out`` (zip); returns its manifest."""
    from cems import __version__

    start, end = req.start.astimezone(UTC), req.end.astimezone(UTC)
    days = (start.date() - timedelta(days=1), end.date() + timedelta(days=req.late_days))
    needle = b'"mn":' + json.dumps(req.mn).encode()
    files: dict[str, bytes] = {}
    readings: Rows = []
    segments_meta: list[dict[str, Any]] = []
    for root in req.evidence_dirs:
        for src in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            for seg, lines in read_records(src, days=days):
                sel = _Selected()
                seg_rows: Rows = []
                for i, line in enumerate(lines):
                    if i == 0:
                        sel.lines.append(line)
                        continue
                    if needle not in line:
                        continue
                    rec = json.loads(line)
                    if rec.get("mn") != req.mn:
                        continue
                    sel.lines.append(line)
                    if rec.get("kind") not in ("msg", "verdict"):
                        continue
                    arrival = _arrival(rec)
                    reading, data_time = _decode(rec, registry) if rec["kind"] == "msg" else (None, None)
                    by = [w for w, t in (("arrival", arrival), ("data_time", data_time)) if t and start <= t < end]
                    row = {
                        "file": f"packets/{src.name}/{seg.name}",
                        "seq": rec["seq"],
                        "chain": line_body(line)[1],
                        "kind": rec["kind"],
                        "arrival": rec["arrival"],
                        "topic": rec["topic"],
                        "sha256": rec["sha256"],
                        "status": rec["status"],
                        "reason": rec.get("reason"),
                        "detail": rec.get("detail"),
                        "selected_by": by,
                        "data_time": data_time.isoformat() if data_time else None,
                        "reading": reading,
                    }
                    seg_rows.append(row)
                    sel.hit = sel.hit or bool(by)
                if not sel.hit:
                    continue
                name = f"packets/{src.name}/{seg.name}"
                files[name] = b"\n".join(sel.lines) + b"\n"
                readings.extend(r for r in seg_rows if r["selected_by"] or r["kind"] == "verdict")
                last = json.loads(sel.lines[-1])
                segments_meta.append(
                    {
                        "file": name,
                        "source": src.name,
                        "segment": seg.name,
                        "outlet_lines": len(sel.lines) - 1,
                        "sealed": last.get("kind") == "seal",
                        "last_chain": line_body(sel.lines[-1])[1],
                    }
                )
    info = registry.outlet(req.mn)
    events = reads.events(req.mn, req.start, req.end)
    event_ids = sorted({str(e["event_id"]) for e in events if e.get("event_id")})
    acks = [
        {k: e.get(k) for k in ("event_id", "acked_by", "acked_at", "ack_note", "escalated_at")}
        for e in events
        if e.get("acked_at") or e.get("escalated_at")
    ]
    files["readings.jsonl"] = _json_lines(readings)
    files["hourly.jsonl"] = _json_lines(reads.hourly(req.mn, req.start, req.end))
    files["events.jsonl"] = _json_lines(events)
    files["acknowledgements.json"] = json.dumps(
        {"acknowledgements": acks, "alert_history": reads.alerts(event_ids)},
        ensure_ascii=False,
        indent=1,
        default=str,
        sort_keys=True,
    ).encode()
    files["marks.json"] = json.dumps(reads.marks(req.mn, req.start, req.end), ensure_ascii=False, indent=1).encode()
    files["README.txt"] = readme(req).encode("utf-8")
    reg_sha = hashlib.sha256(req.registry_path.read_bytes()).hexdigest() if req.registry_path else None
    manifest: dict[str, Any] = {
        "format": CASE_FORMAT,
        "generator": f"cems {__version__}",
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exported_by": req.by,
        "host": socket.gethostname(),
        "mn": req.mn,
        "outlet": info.outlet.name if info else None,
        "enterprise": info.enterprise.name if info else None,
        "period": {"from": req.start.isoformat(), "to": req.end.isoformat()},
        "selection": "packets of the MN that arrived in the period or whose data time lies in it; arrivals "
        f"searched {days[0]} to {days[1]} (UTC days)",
        "registry": {"path": str(req.registry_path) if req.registry_path else None, "sha256": reg_sha},
        "reads": reads.origin,
        "counts": {
            "packets_selected": sum(1 for r in readings if r["kind"] == "msg"),
            "hourly": files["hourly.jsonl"].count(b"\n"),
            "events": len(events),
        },
        "segments": segments_meta,
        "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    sums = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in sorted(files.items()):
            z.writestr(n, b)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # raw packets carry the devices' PW
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    return manifest


def readme(req: CaseRequest) -> str:
    return f"""cems 证据包 / evidence case file
MN {req.mn}  时段 period {req.start.isoformat()} — {req.end.isoformat()}  导出人 exported by {req.by}

【中文】
本证据包由 cems 从其原始报文存档（每条报文按接收时的原样保存、追加写入、哈希链）导出。
内容：
  packets/<来源>/<分段>.jsonl  原始报文：该排放口在存档分段中的全部记录（分段头、报文、判定、封存记录），
                               payload 为 base64 编码的原始字节，sha256 为其摘要；arrival 为接收时间 (UTC)
  readings.jsonl              用 cems 解码器对原始报文重新解码的读数，及选入理由（接收时间或数据时间在时段内）
  hourly.jsonl                小时记录 (InfluxDB cems_hourly)
  events.jsonl                事件（超标、预警、数据中断等）及其确认字段
  acknowledgements.json       事件确认与升级，以及告警历史
  marks.json                  企业标记、停产申报、修约及撤回记录（cems_mark）
  manifest.json               文件清单（SHA-256、大小）、导出程序版本、注册表摘要、导出时间与导出人
  SHA256SUMS                  可用 sha256sum -c 校验的摘要文件
校验方法：
  1. 解压后执行： sha256sum -c SHA256SUMS     （每个文件应显示 OK / 成功）
  2. 或执行：     cems evidence verify 本文件.zip
     它还校验哈希链：每行 chain = SHA-256(该行去掉末尾 ,"chain":"…" 后以 }} 结尾的内容)；
     每行的 mn_prev 指向同一排放口的上一行，分段头 → 各报文 → 封存(seal)记录，封存记录给出条数，
     因此删除、修改或调换任何一条报文都会被发现。任何失败都会指出文件名，退出码为 1。
注意：原始报文含 HJ 212 的 PW（设备密码）字段，请按保密材料保管本证据包。

[English]
This case file was exported by cems from its raw-packet archive (every message kept as received,
append-only, hash-chained).
Contents:
  packets/<source>/<segment>.jsonl  raw packets: every line of this outlet in each archive segment (segment
                                    header, messages, verdicts, seal); payload = the bytes as received (base64),
                                    sha256 = their digest, arrival = time of receipt (UTC)
  readings.jsonl             the raw packets decoded again with cems's decoder, and why each was selected
                             (arrival or data time inside the period)
  hourly.jsonl               hourly records (InfluxDB cems_hourly)
  events.jsonl               events (exceedances, warnings, interruptions, ...) with acknowledgement fields
  acknowledgements.json      acknowledgements and escalations, and the alert history
  marks.json                 enterprise marks, stop declarations, repairs and withdrawals (cems_mark)
  manifest.json              every file's SHA-256 and size, generator version, registry digest, time of export
                             and who exported it
  SHA256SUMS                 digests in the format of `sha256sum -c`
How to verify:
  1. unzip, then run:  sha256sum -c SHA256SUMS      (every file must say OK)
  2. or run:           cems evidence verify this-file.zip
     which also checks the hash chain: each line's chain = SHA-256 of the line without its trailing
     ,"chain":"…" and closed by }}; each line's mn_prev names the outlet's line before it (segment header →
     messages → seal, and the seal counts them), so a packet removed, changed or moved is detected. A failure
     names the file and exits 1.
Note: raw HJ 212 packets carry the device password (PW): keep this file as confidential material.
"""
