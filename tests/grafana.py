"""What Grafana does to an InfluxQL panel query before it sends it (Grafana 10.4, InfluxDB datasource, raw
InfluxQL mode), so that tests can run dashboard queries exactly as the monitoring room's Grafana would.

- ``$timeFilter`` / ``$__timeFilter``: ``time >= FROM and time <= TO``. Grafana writes a relative bound
  ``now-6h`` as ``now() - 6h`` and ``now`` as ``now()``; every other bound (``now/d``, absolute times) is
  resolved in the browser and sent as epoch milliseconds (``1700000000000ms``) — InfluxDB datasource
  ``getInfluxTime``. With ``pin_now`` the harness writes ``now()`` as the test's instant in ms, so that the
  query and the test's expected values see the same "now" (InfluxDB would evaluate ``now()`` a few
  milliseconds later); :func:`time_filter` without it gives Grafana's literal text.
- a literal ``now()`` in the query text (``time > now() - 1h``): Grafana sends it as it is and InfluxDB
  evaluates it at its wall clock. With ``pin_now`` the harness writes it as the test's instant too
  (``1700000000000ms``; InfluxQL 1.6 takes ``1700000000000ms - 1h`` as that instant less an hour), so that
  such a panel counts the same points however long after the data set was built the query runs (a
  ``time > now() - 1h`` panel's count otherwise depended on how long the test took to get to it).
- ``$__interval`` / ``$__interval_ms``: range ÷ resolution (the panel's ``maxDataPoints``, else its width in
  pixels) rounded by Grafana's ``rangeutil.roundInterval`` table, never below the panel's ``interval`` or
  the datasource's ``timeInterval`` (``calculateInterval``), written by ``secondsToHms``.
- template variables ``$v``, ``${v}``, ``[[v]]``, ``${v:regex}``: inside InfluxQL the datasource formats a
  variable that is multi-select or has "All" as a regex (``interpolateQueryExpr``): one value → the value
  regex-escaped, several → ``(a|b)``; "All" → the variable's ``allValue`` when set (unescaped), else every
  option as ``(a|b|…)``. A single-value variable is inserted as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

ALL = "$__all"

_ROUND: tuple[tuple[float, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}


def round_interval(ms: float) -> int:
    """Grafana's ``rangeutil.roundInterval``."""
    for below, rounded in _ROUND:
        if ms < below:
            return rounded
    return 31536000000


def interval_to_ms(text: str) -> int:
    """``10s`` → 10000 (Grafana ``intervalToMs``; a leading ``>`` is a minimum, as in the datasource setting)."""
    m = re.fullmatch(r">?(\d+)(ms|s|m|h|d|w|y)", text.strip())
    if m is None:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def seconds_to_hms(seconds: float) -> str:
    """Grafana's ``rangeutil.secondsToHms``: the largest whole unit (years, days, hours, minutes, seconds, ms)."""
    years = int(seconds // 31536000)
    days = int((seconds % 31536000) // 86400)
    hours = int((seconds % 31536000 % 86400) // 3600)
    minutes = int((seconds % 31536000 % 86400 % 3600) // 60)
    secs = int(seconds % 31536000 % 86400 % 3600 % 60)
    ms = round(seconds * 1000) % 1000
    for n, unit in ((years, "y"), (days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"), (ms, "ms")):
        if n:
            return f"{n}{unit}"
    return "less than a millisecond"


def calculate_interval(range_ms: int, resolution: int, low_limit: str | None) -> tuple[int, str]:
    """Grafana's ``rangeutil.calculateInterval``: ``(interval_ms, interval)``."""
    ms = round_interval(range_ms / resolution)
    if low_limit:
        ms = max(ms, interval_to_ms(low_limit))
    return ms, seconds_to_hms(ms / 1000)


def resolve_bound(text: str, now: datetime, tz: ZoneInfo, *, round_up: bool) -> datetime:
    """Grafana ``dateMath.parse`` for ``now``, ``now-6h``, ``now/d``, ``now-1d/d``, ``now/M`` (browser time zone
    ``tz``; ``round_up`` for the range's end: ``now/d`` as a ``to`` is the end of the day)."""
    m = re.fullmatch(r"now(?:-(\d+)([smhdwMy]))?(?:/([dwMy]))?", text)
    if m is None:
        raise ValueError(f"unsupported time bound {text!r}")
    t = now.astimezone(tz)
    if m.group(1):
        n, unit = int(m.group(1)), m.group(2)
        if unit == "M":
            y, mo = divmod(t.month - 1 - n, 12)
            t = t.replace(year=t.year + y, month=mo + 1)
        elif unit == "y":
            t = t.replace(year=t.year - n)
        else:
            t = t - timedelta(milliseconds=n * _UNIT_MS[unit])
    if m.group(3):
        unit = m.group(3)
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit == "w":
            start -= timedelta(days=start.weekday())  # ISO week (Grafana's default for zh-CN: Monday)
            nxt = start + timedelta(days=7)
        elif unit == "M":
            start = start.replace(day=1)
            nxt = (start + timedelta(days=32)).replace(day=1)
        elif unit == "y":
            start = start.replace(month=1, day=1)
            nxt = start.replace(year=start.year + 1)
        else:
            nxt = start + timedelta(days=1)
        t = nxt - timedelta(milliseconds=1) if round_up else start
    return t.astimezone(UTC)


def _influx_time(text: str, now: datetime, tz: ZoneInfo, *, round_up: bool, pin_now: bool) -> str:
    if not pin_now:
        if text == "now":
            return "now()"
        m = re.fullmatch(r"now-(\d+)([dhms])", text)
        if m:
            return f"now() - {m.group(1)}{m.group(2)}"
    return f"{round(resolve_bound(text, now, tz, round_up=round_up).timestamp() * 1000)}ms"


def time_filter(frm: str, to: str, now: datetime, tz: ZoneInfo, *, pin_now: bool = False) -> str:
    """``$timeFilter`` as the InfluxDB datasource writes it (``getTimeFilter``)."""
    a = _influx_time(frm, now, tz, round_up=False, pin_now=pin_now)
    b = _influx_time(to, now, tz, round_up=True, pin_now=pin_now)
    return f"time >= {a} and time <= {b}"


def _regex_escape(value: str) -> str:
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


@dataclass
class Variable:
    """A dashboard template variable as selected: ``values`` (``[ALL]`` for "All") and its options."""

    name: str
    values: list[str]
    options: list[str] = field(default_factory=list)
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None

    def as_regex(self) -> str:
        if self.values == [ALL]:
            if self.all_value is not None:
                return self.all_value
            vals = self.options
        else:
            vals = self.values
        if not self.multi and not self.include_all and len(vals) == 1:
            return vals[0]
        escaped = [_regex_escape(v) for v in vals]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


@dataclass
class Context:
    """Everything Grafana knows when it runs a panel: range, clock, browser time zone, variables."""

    frm: str
    to: str
    now: datetime
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    variables: dict[str, Variable] = field(default_factory=dict)
    min_interval: str | None = "10s"  # the datasource's timeInterval (dashboards/provisioning/datasources)
    pin_now: bool = True

    def range_ms(self) -> tuple[int, int]:
        a = resolve_bound(self.frm, self.now, self.tz, round_up=False)
        b = resolve_bound(self.to, self.now, self.tz, round_up=True)
        return round(a.timestamp() * 1000), round(b.timestamp() * 1000)


def panel_resolution(panel: dict[str, Any]) -> int:
    """Grafana's query resolution: ``maxDataPoints``, else the panel's width in pixels (1920-px screen)."""
    if panel.get("maxDataPoints"):
        return int(panel["maxDataPoints"])
    return max(1, round(int(panel["gridPos"]["w"]) * 1920 / 24))


def expand(query: str, ctx: Context, panel: dict[str, Any] | None = None) -> str:
    """The query Grafana sends for ``panel`` (or for a template variable when ``panel`` is None)."""
    a, b = ctx.range_ms()
    low = (panel or {}).get("interval") or ctx.min_interval
    interval_ms, interval = calculate_interval(b - a, panel_resolution(panel) if panel else 1000, low)
    tf = time_filter(ctx.frm, ctx.to, ctx.now, ctx.tz, pin_now=ctx.pin_now)
    q = query
    if ctx.pin_now:  # the query's own now(), before $timeFilter (which, pinned, writes none)
        q = re.sub(r"\bnow\(\s*\)", f"{utc_ms(ctx.now)}ms", q, flags=re.IGNORECASE)
    q = q.replace("$__timeFilter", tf).replace("$timeFilter", tf)
    q = q.replace("$__interval_ms", str(interval_ms)).replace("$__interval", interval)

    def var(m: re.Match[str]) -> str:
        name = m.group("a") or m.group("b") or m.group("c")
        v = ctx.variables.get(name)
        if v is None:
            raise KeyError(f"query uses ${name}, which the test did not select: {query}")
        return v.as_regex()

    return re.sub(r"\$\{(?P<a>\w+)(?::regex)?\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>[A-Za-z_]\w*)", var, q)


def bucket(t_ms: int, interval_ms: int) -> int:
    """The start of InfluxDB's ``GROUP BY time(interval)`` bucket holding ``t_ms`` (aligned to the epoch)."""
    return t_ms - t_ms % interval_ms


def utc_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def expand_promql(expr: str, ctx: Context, panel: dict[str, Any], scrape_interval: str) -> str:
    """A PromQL panel query as Grafana's Prometheus datasource sends it: ``$__interval`` as above (never below
    the scrape interval, the datasource's ``timeInterval``), ``$__rate_interval`` = max(``$__interval`` +
    scrape interval, 4 × scrape interval) in seconds (``60s``), ``$__range`` = the range in whole seconds
    (``3600s``)."""
    a, b = ctx.range_ms()
    scrape = interval_to_ms(scrape_interval)
    interval_ms, interval = calculate_interval(b - a, panel_resolution(panel), panel.get("interval") or scrape_interval)
    rate_ms = max(interval_ms + scrape, 4 * scrape)
    q = expr.replace("$__rate_interval", f"{rate_ms // 1000}s")  # getRateIntervalScopedVariable: seconds
    q = q.replace("$__range", f"{round((b - a) / 1000)}s")
    return q.replace("$__interval_ms", str(interval_ms)).replace("$__interval", interval)
