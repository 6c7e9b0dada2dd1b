"""The case of an event (电子督办, issue 19): which action may follow which, and what a command must carry."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.errors import InvalidTransition
from cems.service.compliance import ACTIONS, CaseState, apply_action, parse_action

AT = "2026-11-30T10:00:00+08:00"
DEADLINE = "2026-12-01T10:00:00+08:00"


def cmd(action: str, **extra: str) -> bytes:
    body = {"action": action, "event_id": "e1", "by": "张三", "note": "处理意见", **extra}
    if action == "dispatch" and "deadline" not in extra:
        body["deadline"] = DEADLINE
    return json.dumps(body).encode()


def test_the_electronic_supervision_flow() -> None:
    case = CaseState()
    for action, expected in [
        ("ack", "acknowledged"),
        ("dispatch", "dispatched"),
        ("feedback", "answered"),
        ("send_back", "dispatched"),
        ("feedback", "answered"),
        ("close", "closed"),
    ]:
        case = apply_action(case, parse_action(cmd(action)), AT, "130602")
        assert case.case_status == expected
    assert (case.dispatched_to, case.deadline, case.dispatched_at) == ("130602", DEADLINE, AT)


def test_close_without_dispatch_and_dispatch_to_another_district() -> None:
    acked = apply_action(CaseState(), parse_action(cmd("ack")), AT, "130602")
    assert apply_action(acked, parse_action(cmd("close")), AT, "130602").case_status == "closed"
    other = apply_action(acked, parse_action(cmd("dispatch", dispatched_to="130603")), AT, "130602")
    assert other.dispatched_to == "130603"


#: the transitions of docs/events.md, written out independently of the module's table
EXPECTED = {
    ("new", "ack"): "acknowledged",
    ("acknowledged", "dispatch"): "dispatched",
    ("acknowledged", "close"): "closed",
    ("dispatched", "feedback"): "answered",
    ("answered", "send_back"): "dispatched",
    ("answered", "close"): "closed",
}


@given(st.lists(st.sampled_from(ACTIONS), max_size=12))
def test_any_sequence_follows_the_table(actions: list[str]) -> None:
    case = CaseState()
    for a in actions:
        want = EXPECTED.get((case.case_status, a))
        if want is None:
            with pytest.raises(InvalidTransition):
                apply_action(case, parse_action(cmd(a)), AT, "130602")
        else:
            case = apply_action(case, parse_action(cmd(a)), AT, "130602")
            assert case.case_status == want


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "ack", "event_id": "e1", "by": "张三"}, "note"),
        ({"action": "ack", "event_id": "e1", "by": "张三", "note": "\x1b\x07 "}, "note"),
        ({"action": "approve", "event_id": "e1", "by": "张三", "note": "x"}, "action must be"),
        ({"action": "dispatch", "event_id": "e1", "by": "张三", "note": "x"}, "deadline"),
        ({"action": "feedback", "event_id": "e1", "by": "李四", "note": "x", "deadline": DEADLINE}, "no deadline"),
        ({"action": "ack", "event_id": "", "by": "张三", "note": "x"}, "event_id"),
        ({"action": "ack", "event_id": "e1", "by": "", "note": "x"}, "by"),
        ({"action": "ack", "event_id": "e1", "by": "a", "note": "x" * 1001}, "note"),
        ({"action": "ack", "event_id": "e1", "by": "a", "note": "x", "reply_to": "a/b"}, "reply_to"),
        ({"action": "dispatch", "event_id": "e1", "by": "a", "note": "x", "deadline": "tomorrow"}, "ISO 8601"),
    ],
)
def test_bad_commands_say_what_is_wrong(body: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_action(json.dumps(body).encode())


def test_text_is_cleaned_and_times_are_beijing() -> None:
    c = parse_action(cmd("dispatch", deadline="2026-12-01T10:00", note="请\u202e核查\n"))
    assert (c.note, c.deadline) == ("请核查", DEADLINE)
