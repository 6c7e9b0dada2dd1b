"""The Grafana macro expansion of tests/grafana.py against what Grafana 10.4 sends (values taken from its
InfluxDB datasource and rangeutil): the dashboards' value tests are only as good as this expansion."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from grafana import (  # tests/grafana.py
    ALL,
    Context,
    Variable,
    calculate_interval,
    expand,
    round_interval,
    seconds_to_hms,
    time_filter,
)
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime(2026, 11, 30, 3, 17, 45, tzinfo=UTC)  # 11:17:45 Beijing
BJ = ZoneInfo("Asia/Shanghai")


def test_time_filter_as_grafana_writes_it() -> None:
    assert time_filter("now-6h", "now", NOW, BJ) == "time >= now() - 6h and time <= now()"
    # now/d is resolved in the browser's zone: Beijing midnight of 30 Nov = 29 Nov 16:00 UTC
    start = round(datetime(2026, 11, 29, 16, tzinfo=UTC).timestamp() * 1000)
    assert time_filter("now/d", "now/d", NOW, BJ) == f"time >= {start}ms and time <= {start + 86_400_000 - 1}ms"
    pinned = round(NOW.timestamp() * 1000)
    assert time_filter("now-1h", "now", NOW, BJ, pin_now=True) == (
        f"time >= {pinned - 3_600_000}ms and time <= {pinned}ms"
    )


@pytest.mark.parametrize(
    ("ms", "rounded", "text"),
    [
        (5, 10, "10ms"),
        (20_000, 20_000, "20s"),
        (100_000, 120_000, "2m"),
        (3_000_000, 3_600_000, "1h"),
        (100_000_000, 86_400_000, "1d"),
        (1_000_000_000, 604_800_000, "7d"),
    ],
)
def test_round_interval_table(ms: int, rounded: int, text: str) -> None:
    assert round_interval(ms) == rounded
    assert seconds_to_hms(rounded / 1000) == text


def test_interval_never_below_the_minimum() -> None:
    # 6 h over 1200 px = 18 s → 20 s; with the datasource's 10 s minimum still 20 s, with 1m → 1m
    assert calculate_interval(6 * 3_600_000, 1200, "10s") == (20_000, "20s")
    assert calculate_interval(6 * 3_600_000, 1200, "1m") == (60_000, "1m")


def test_variables_all_multi_single() -> None:
    d = Variable("district", [ALL], ["130602", "130604"], multi=True, include_all=True, all_value=".*")
    m = Variable("mn", ["a.b", "c"], ["a.b", "c", "d"], multi=True, include_all=True)
    one = Variable("mn", ["c"], ["a.b", "c"], multi=True, include_all=True)
    every = Variable("mn", [ALL], ["a", "b"], multi=True, include_all=True)
    q = 'SELECT 1 FROM x WHERE "district" =~ /^$district$/ AND "mn" =~ /^${mn}$/ AND $timeFilter'
    ctx = Context("now-6h", "now", NOW, variables={"district": d, "mn": m}, pin_now=False)
    assert expand(q, ctx) == (
        'SELECT 1 FROM x WHERE "district" =~ /^.*$/ AND "mn" =~ /^(a\\.b|c)$/ AND time >= now() - 6h and time <= now()'
    )
    ctx.variables["mn"] = one
    assert '"mn" =~ /^c$/' in expand(q, ctx)
    ctx.variables["mn"] = every  # All without allValue: every option
    assert '"mn" =~ /^(a|b)$/' in expand(q, ctx)


def test_interval_macros() -> None:
    panel = {"gridPos": {"w": 12}, "maxDataPoints": 360}
    ctx = Context("now-6h", "now", NOW)
    assert expand("GROUP BY time($__interval) -- $__interval_ms", ctx, panel) == "GROUP BY time(1m) -- 60000"


@given(st.integers(min_value=1, max_value=10**12))
def test_round_interval_is_monotonic(ms: int) -> None:
    assert round_interval(ms) <= round_interval(ms + 1)
    assert round_interval(ms) > 0


def test_promql_macros() -> None:
    from grafana import expand_promql  # tests/grafana.py

    ctx = Context("now-1h", "now", NOW)
    panel = {"gridPos": {"w": 12}}
    # 1 h over 960 px = 3.75 s → 5 s, raised to the 15 s scrape interval; rate interval max(15+15, 4·15) = 60 s
    assert expand_promql("rate(x[$__rate_interval]) $__interval", ctx, panel, "15s") == "rate(x[60s]) 15s"
    assert expand_promql("increase(x[$__range])", ctx, panel, "15s") == "increase(x[3600s])"
    wide = Context("now-24h", "now", NOW)  # 86400 s / 960 px = 90 s → 2 m; max(2 m + 15 s, 60 s) = 135 s
    assert expand_promql("rate(x[$__rate_interval])", wide, panel, "15s") == "rate(x[135s])"


def test_literal_now_is_the_tests_instant() -> None:
    """A panel's own ``now()`` (``time > now() - 1h``, not a macro) is written as the test's instant when pinned,
    as ``$timeFilter``'s bounds are: InfluxDB would evaluate it at its wall clock, later than the data set's now."""
    pinned = round(NOW.timestamp() * 1000)
    # the service dashboard's "近 1 小时无数据的排口" target B, as the dashboard has it
    q = (
        'SELECT count("n") AS "reporting" FROM (SELECT count("qn") AS "n" FROM "cems_reading" WHERE '
        '"district" =~ /^$district$/ AND time > now() - 1h GROUP BY "mn")'
    )
    d = Variable("district", ["130602"], ["130602", "130604"], multi=True, include_all=True, all_value=".*")
    ctx = Context("now-6h", "now", NOW, variables={"district": d})
    assert expand(q, ctx) == (
        'SELECT count("n") AS "reporting" FROM (SELECT count("qn") AS "n" FROM "cems_reading" WHERE '
        f'"district" =~ /^130602$/ AND time > {pinned}ms - 1h GROUP BY "mn")'
    )
    both = "SELECT 1 FROM x WHERE time > NOW() - 366d AND $timeFilter"
    assert expand(both, ctx) == (
        f"SELECT 1 FROM x WHERE time > {pinned}ms - 366d AND time >= {pinned - 6 * 3_600_000}ms and time <= {pinned}ms"
    )
    # unpinned, the text Grafana sends: InfluxDB's now() both times
    raw = dataclasses.replace(ctx, pin_now=False)
    assert expand(both, raw) == "SELECT 1 FROM x WHERE time > NOW() - 366d AND time >= now() - 6h and time <= now()"


def test_no_dashboard_query_keeps_a_wall_clock_now() -> None:
    """Every InfluxQL query of the provisioned dashboards (panels and variables), pinned, has no ``now()`` left."""
    root = Path(__file__).resolve().parents[2] / "dashboards"
    queries = []
    for path in sorted(root.glob("*.json")):
        dash = json.loads(path.read_text())
        queries += [v["query"] for v in dash.get("templating", {}).get("list", []) if isinstance(v.get("query"), str)]
        queries += [t["query"] for p in dash["panels"] for t in p.get("targets", []) if "query" in t]
    assert sum("now()" in q for q in queries) > 10  # the dashboards do use it
    for q in queries:
        names = {a or b or c for a, b, c in re.findall(r"\$\{(\w+)(?::regex)?\}|\[\[(\w+)\]\]|\$([A-Za-z_]\w*)", q)}
        names -= {"timeFilter", "__timeFilter", "__interval", "__interval_ms"}
        ctx = Context("now-6h", "now", NOW, variables={n: Variable(n, ["v"]) for n in names})
        assert "now()" not in expand(q, ctx).lower(), q
