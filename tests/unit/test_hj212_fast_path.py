"""The HJ 212 fast path (``fast_reading``, used by ``cems run`` and ``cems replay``) is an optimisation only:
whenever it answers, the answer equals the full lenient decoder's (``decode`` + ``to_reading``) on a packet
the full decoder accepts without any deviation.  Differential property test over mutated packets."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.model import BEIJING
from cems.protocol.hj212 import HJ212Error, decode, encode, fast_reading, frame, to_reading

_CODES = ["a34013", "a21026", "a21002", "a19001", "a01012", "a00000", "w01018", "SB1", "02", "S01", "B02"]
_SUFFIXES = ["Rtd", "Rtd", "Avg", "ZsRtd", "ZsAvg", "Min", "Max", "Cou", "Flag", "Flag", "RS", "Info", "EFlag"]
_ALPHABET = "#&;,=-_.+0123456789eENaFlgRtdAvgZsCPQNSTMW \t\r\né"

values = st.dictionaries(
    st.sampled_from(_CODES),
    st.dictionaries(
        st.sampled_from(_SUFFIXES),
        st.one_of(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
            st.floats(min_value=0, max_value=1000, allow_nan=False).map(lambda x: round(x, 2)),
            st.integers(-1000, 100000),
            st.sampled_from(["N", "F", "M", "D", "C", "T", "B", "n", "1", "abc"]),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=6,
)

mutation = st.tuples(
    st.sampled_from(["none", "none", "none", "replace", "insert", "delete", "duplicate"]),
    st.integers(0, 10_000),
    st.sampled_from(list(_ALPHABET)),
    st.sampled_from([True, True, True, False]),  # re-frame (right length and CRC) after the mutation
)


def _packet(cn: str, flag: int | None, when: int, vals: dict[str, dict[str, object]], ms: bool) -> str:
    t = datetime(2026, 3, 1, tzinfo=BEIJING) + timedelta(seconds=when)
    data_time: datetime | str = t.strftime("%Y%m%d%H%M%S") + ("123" if ms else "") if ms else t
    return encode(cn=cn, qn=t.strftime("%Y%m%d%H%M%S000"), st="31", pw="123456", mn="010000A8900016F000169DC0",
                  flag=flag, data_time=data_time, values=vals, crlf=False)  # type: ignore[arg-type]  # fmt: skip


def _mutate(packet: str, how: tuple[str, int, str, bool]) -> str:
    kind, pos, ch, reframe = how
    seg = packet[6:-4]
    i = pos % (len(seg) + 1)
    if kind == "replace" and seg:
        seg = seg[: i % len(seg)] + ch + seg[i % len(seg) + 1 :]
    elif kind == "insert":
        seg = seg[:i] + ch + seg[i:]
    elif kind == "delete" and seg:
        seg = seg[: i % len(seg)] + seg[i % len(seg) + 1 :]
    elif kind == "duplicate":
        j = seg.find(";", i)
        k = seg.find(";", j + 1) if j >= 0 else -1
        if j >= 0 and k > j:
            seg = seg[:k] + seg[j:k] + seg[k:]
    if reframe:
        try:
            return frame(seg, crlf=False)
        except HJ212Error:
            return packet
    return packet[:6] + seg + packet[-4:]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["2011", "2011", "2051", "2061", "2031", "2021", "9014"]),
    st.sampled_from([None, 0, 1, 4, 5, 5, 5, 7, 8, 9, 11, 13]),
    st.integers(0, 86400 * 400),
    values,
    st.sampled_from([False, False, False, True]),  # DataTime with milliseconds
    st.lists(mutation, max_size=2),
    st.sampled_from(["", "\r\n"]),
)
def test_fast_path_answers_only_what_the_full_decoder_answers(
    cn: str, flag: int | None, when: int, vals: dict[str, dict[str, object]], ms: bool,
    mutations: list[tuple[str, int, str, bool]], tail: str,
) -> None:  # fmt: skip
    try:
        text = _packet(cn, flag, when, vals, ms)
    except HJ212Error:
        return  # not encodable (e.g. a text value where the encoder wants a number)
    for m in mutations:
        text = _mutate(text, m)
    text += tail
    fast = fast_reading(text, BEIJING)
    if fast is None:
        return
    packet = decode(text)  # the fast path must not accept what the full decoder rejects
    assert packet.deviations == [], packet.deviations
    assert fast == (packet.mn, packet.pw, to_reading(packet, BEIJING))


def test_fast_path_takes_clean_data_packets() -> None:
    """The common packet does take the fast path (otherwise the optimisation is silently lost)."""
    vals = {"a21026": {"Rtd": 12.5, "ZsRtd": 15.1, "Flag": "N"}, "a19001": {"Rtd": 8.2, "Flag": "N"}}
    for cn in ("2011", "2051", "2061", "2031"):
        text = _packet(cn, 5, 3600, vals, False)
        fast = fast_reading(text, BEIJING)
        assert fast is not None, cn
        assert fast[2] == to_reading(decode(text), BEIJING)
