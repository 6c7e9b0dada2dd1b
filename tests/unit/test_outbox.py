"""The durable alert outbox: signing, back-off schedule, persistence across restarts, ordering, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from cems.service.compliance import alert_id, parse_ack, transition_key
from cems.service.outbox import (
    ALERT_ID_HEADER,
    EVENT_ID_HEADER,
    MQTT,
    REPLAY_WINDOW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK,
    OutboxDispatcher,
    OutboxRow,
    StateDB,
    WebhookSettings,
    backoff_delay,
    enqueue,
    pending_count,
    sign,
    signed_payload,
    transaction,
    verify,
)

SECRET = b"s3cret-\xe5\xaf\x86\xe9\x92\xa5"


def test_signature_covers_timestamp_ids_and_the_exact_body() -> None:
    body = json.dumps({"event_id": "abc", "企业": "示例"}, ensure_ascii=False).encode()
    ids = {"event_id": "abc", "alert_id": "0123456789abcdef"}
    message = b"1767225600\nabc\n0123456789abcdef\n" + body
    expected = "v1=" + hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    assert sign(body, SECRET, timestamp="1767225600", **ids) == expected

    def check(
        sig: str,
        *,
        b: bytes = body,
        secret: bytes = SECRET,
        ts: str = "1767225600",
        now: float = 1767225660.0,
        event_id: str = "abc",
        alert_id: str = "0123456789abcdef",
    ) -> bool:
        return verify(b, secret, sig, timestamp=ts, event_id=event_id, alert_id=alert_id, now=now)

    assert check(expected) and check(expected + "\n")  # header whitespace tolerated
    assert not check(expected, b=body + b" ")
    assert not check(expected, secret=b"other")
    assert not check(expected, ts="1767225601")  # the timestamp is signed
    assert not check(expected, event_id="abd") and not check(expected, alert_id="0123456789abcdee")
    # replay window: a captured request is refused once it is older than REPLAY_WINDOW_S (300 s)
    assert check(expected, now=1767225600.0 + REPLAY_WINDOW_S)
    assert not check(expected, now=1767225600.0 + REPLAY_WINDOW_S + 1)
    assert not check(expected, now=1767225600.0 - REPLAY_WINDOW_S - 1)
    assert not check(expected, ts="not-a-number")
    # the HMAC is the standard library's: RFC 4231 test case 2 through signed_payload
    assert hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert signed_payload("1", "e", "a", b"{}") == b"1\ne\na\n{}"


def test_backoff_is_exponential_capped_and_jittered_within_half_to_full() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        d = min(3600.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(20):
            v = backoff_delay(attempt, base_s=2.0, max_s=3600.0, rng=rng)
            assert d / 2 <= v <= d
    # the schedule's upper bounds: 2, 4, 8, ... capped at 1 h
    highs = [backoff_delay(a, rng=_Fixed(1.0)) for a in range(1, 14)]
    assert highs == [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
    lows = [backoff_delay(a, rng=_Fixed(0.0)) for a in range(1, 4)]
    assert lows == [1, 2, 4]
    # jitter actually spreads the retries
    assert len({round(backoff_delay(5, rng=rng), 6) for _ in range(50)}) > 40
    with pytest.raises(ValueError):
        backoff_delay(0)
    assert backoff_delay(10_000, max_s=60.0, rng=_Fixed(1.0)) == 60.0  # no overflow


class _Fixed(random.Random):
    def __init__(self, v: float) -> None:
        super().__init__()
        self.v = v

    def random(self) -> float:
        return self.v


def _row(eid: str, n: int, target: str = "http://hook/a", channel: str = WEBHOOK) -> OutboxRow:
    body = json.dumps({"event_id": eid, "n": n}).encode()
    return OutboxRow(channel, target, eid, alert_id(eid, str(n)), body)


class _Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


async def test_outbox_survives_reopen_and_is_delivered_with_signature_after_failures(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = StateDB(path)
    await db.open()
    clock = _Clock()
    await db.call(lambda c: _enqueue(c, [_row("E1", 1), _row("E1", 2)], clock.t))
    await db.close()

    # a restart: a new database object on the same file still holds both rows
    db = StateDB(path)
    await db.open()
    assert await db.call(lambda c: pending_count(c)) == 2
    mode = await db.call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    sync = await db.call(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert (mode, sync) == ("wal", 2)  # WAL, synchronous=FULL

    seen: list[httpx.Request] = []
    status = {"code": 500}

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(status["code"])

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = WebhookSettings(urls=("http://hook/a",), secret=SECRET, base_delay_s=10.0, max_delay_s=100.0)
    d = OutboxDispatcher(db, settings, client=client, time_fn=clock, rng=_Fixed(1.0))
    # receiver down: the first row fails; the second waits behind it (same event, same target)
    assert await d.run_once() == 0
    assert [json.loads(r.content)["n"] for r in seen] == [1]
    assert await db.call(lambda c: pending_count(c)) == 2
    # not due before the back-off (10 s for attempt 1 with this rng)
    clock.t += 9.0
    assert await d.run_once() == 0 and len(seen) == 1
    clock.t += 1.5
    assert await d.run_once() == 0 and len(seen) == 2  # second failure: next in 20 s
    attempts, err = await db.call(
        lambda c: c.execute("SELECT attempts, last_error FROM outbox ORDER BY id LIMIT 1").fetchone()
    )
    assert attempts == 2 and "HTTP 500" in err
    status["code"] = 204
    clock.t += 20.0
    assert await d.run_once() == 1  # row 1 delivered; row 2 becomes eligible on the next pass
    assert await d.run_once() == 1
    assert await d.run_once() == 0
    assert await db.call(lambda c: pending_count(c)) == 0
    ok = seen[-2:]
    assert [json.loads(r.content)["n"] for r in ok] == [1, 2]
    for r in ok:
        ts = r.headers[TIMESTAMP_HEADER]
        eid, aid, sig = r.headers[EVENT_ID_HEADER], r.headers[ALERT_ID_HEADER], r.headers[SIGNATURE_HEADER]
        assert verify(r.content, SECRET, sig, timestamp=ts, event_id=eid, alert_id=aid, now=time.time())
        assert not verify(r.content + b" ", SECRET, sig, timestamp=ts, event_id=eid, alert_id=aid, now=time.time())
        assert r.headers[EVENT_ID_HEADER] == "E1"
        assert r.headers["content-type"] == "application/json"
        assert len(r.headers[ALERT_ID_HEADER]) == 16
    await client.aclose()
    await db.close()


def _enqueue(c: sqlite3.Connection, rows: list[OutboxRow], ts: float) -> None:
    with transaction(c):
        enqueue(c, rows, ts)


async def test_one_failing_receiver_does_not_block_others_or_other_events(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    clock = _Clock()
    rows = [_row("E1", 1, "http://down/"), _row("E1", 2, "http://up/"), _row("E2", 3, "http://down/")]
    rows.append(_row("E1", 4, "cems/alerts/v1/x", MQTT))
    await db.call(lambda c: _enqueue(c, rows, clock.t))
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, body: bytes) -> None:
        published.append((topic, body))

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if req.url.host == "down" else 200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    d = OutboxDispatcher(db, WebhookSettings(secret=SECRET), publish=publish, client=client, time_fn=clock)
    assert await d.run_once() == 2  # "up" and the MQTT alert; both "down" rows retried later
    assert [t for t, _ in published] == ["cems/alerts/v1/x"]
    left = await db.call(lambda c: [r[0] for r in c.execute("SELECT target FROM outbox WHERE status='pending'")])
    assert left == ["http://down/", "http://down/"]
    await client.aclose()
    await db.close()


async def test_gives_up_after_the_configured_age(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    clock = _Clock()
    await db.call(lambda c: _enqueue(c, [_row("E1", 1)], clock.t))
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    d = OutboxDispatcher(db, WebhookSettings(secret=SECRET, give_up_after_s=60.0), client=client, time_fn=clock)
    await d.run_once()
    clock.t += 3600.0
    await d.run_once()
    status = await db.call(lambda c: c.execute("SELECT status FROM outbox").fetchone()[0])
    assert status == "failed"
    await client.aclose()
    await db.close()


def test_transition_keys_and_alert_ids_are_stable() -> None:
    j = {"hours": 2, "peak": 51.5}
    assert transition_key("opened", j) == "opened" and transition_key("closed", j) == "closed"
    assert transition_key("updated", j) == "updated:2:51.5"
    # a late close (a revision of a closed event) is a new transition per (end, hours, peak)
    late = {**j, "late": True, "end": "2026-01-01T10:00:00+08:00"}
    assert transition_key("closed", late) == "closed:late:2026-01-01T10:00:00+08:00:2:51.5"
    assert transition_key("closed", {**late, "hours": 3}) != transition_key("closed", late)
    assert alert_id("abc", "opened") == alert_id("abc", "opened") != alert_id("abc", "closed")


def test_parse_ack() -> None:
    from datetime import datetime

    from cems.model import BEIJING

    fixed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=BEIJING)
    assert parse_ack(b'{"event_id": "e1", "by": "\xe5\xbc\xa0\xe4\xb8\x89"}', lambda: fixed) == (
        "e1",
        "张三",
        "2026-01-02T03:04:05+08:00",
        None,
        None,
    )
    cmd = parse_ack('{"event_id":"e1","by":"x","note":" 已通知企业 ","reply_to":"ab-12"}'.encode(), lambda: fixed)
    assert (cmd.note, cmd.reply_to) == ("已通知企业", "ab-12")
    assert parse_ack(b'{"event_id":"e1","by":"x","at":"2026-01-02T00:00:00Z"}')[2] == "2026-01-02T08:00:00+08:00"
    assert parse_ack(b'{"event_id":"e1","by":"x","at":"2026-01-02T00:00:00"}')[2] == "2026-01-02T00:00:00+08:00"
    for bad in (
        b"nope",
        b"[]",
        b'{"by":"x"}',
        b'{"event_id":"e1"}',
        b'{"event_id":"e1","by":"x","at":5}',
        b'{"event_id":"e1","by":"x","at":"yesterday"}',
        b'{"event_id":"e1","by":"x","note":5}',
        b'{"event_id":"e1","by":"x","reply_to":"a/b"}',
        b'{"event_id":"e1","by":"x","reply_to":"#"}',
        ('{"event_id":"e1","by":"x","note":"' + "长" * 1001 + '"}').encode(),
    ):
        with pytest.raises(ValueError):
            parse_ack(bad)


def test_ack_text_loses_control_characters_and_the_time_is_bounded() -> None:
    from datetime import datetime

    from cems.model import BEIJING
    from cems.service.compliance._runtime import bound_ack_time, clean_text

    cmd = parse_ack('{"event_id":"e1","by":"张三\\u001b[2J\\r\\nINFO forged","note":"a\\u202eb\\u0007"}'.encode())
    assert (cmd.by, cmd.note) == ("张三[2J  INFO forged", "ab")
    assert clean_text("\x9b31m x\t") == "31m x"
    with pytest.raises(ValueError):
        parse_ack(b'{"event_id":"e1","by":"\\u001b\\u0007"}')  # nothing left: no one acknowledged
    opened = "2026-01-02T08:00:00+08:00"
    now = datetime(2026, 1, 3, 9, 0, tzinfo=BEIJING)
    assert bound_ack_time("2000-01-01T00:00:00+08:00", opened, now) == opened
    assert bound_ack_time("2099-01-01T00:00:00+08:00", opened, now) == now.isoformat()
    assert bound_ack_time("2026-01-02T09:00:00+08:00", opened, now) == "2026-01-02T09:00:00+08:00"
