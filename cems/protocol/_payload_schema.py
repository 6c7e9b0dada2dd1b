"""The ``cems.reading/1`` payload's schema classes (pydantic and msgspec), used by :mod:`cems.protocol.payload`.

Kept apart from the decoding functions so that the mypyc build measured in docs/benchmark.md
(:mod:`cems.devtools.compile`) can compile :mod:`cems.protocol.payload` while these classes stay Python classes:
a compiled module loses the class keywords of ``msgspec.Struct`` (``kw_only``, ``frozen``), and mypyc cannot
name pydantic's ``BaseModel`` as a base class.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from pydantic import BaseModel, ConfigDict, Field, Strict

from cems.model import Stream

_Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class PayloadModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: Annotated[str | None, Field(alias="schema")] = None
    mn: Annotated[str | None, Field(max_length=24)] = None
    stream: Stream | None = None
    data_time: Annotated[str, Field(min_length=8, max_length=40)]
    qn: Annotated[str | None, Field(max_length=20)] = None
    values: Annotated[dict[str, dict[str, _Number | str]], Field(max_length=256)]


class FastPayload(msgspec.Struct, kw_only=True, frozen=True):
    """:class:`PayloadModel` for msgspec, without the length and finiteness constraints (checked after decoding)."""

    schema: str | None = None
    mn: str | None = None
    stream: str | None = None
    data_time: str
    qn: str | None = None
    values: dict[str, dict[str, float | str]]
