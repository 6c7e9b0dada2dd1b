"""Mark types (标记), stop declarations and caps, loaded from ``marks.toml`` and validated with pydantic (issue 14
item 1).  Data, not code: ``marks.toml`` says per type whether a marked hour is judged for exceedance, how it
counts for the 90 % rule and which annual cap it uses, with its citation; the registry's ``[marks]`` table
overrides it per city (:meth:`MarkCatalog.with_overrides`)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: How a marked hour counts for the 90 % rule (marks.toml explains each).
RateEffect = Literal["as_measured", "removed", "invalid", "valid"]
RATE_EFFECTS: tuple[RateEffect, ...] = ("as_measured", "removed", "invalid", "valid")
ALL_INDUSTRIES = "all"

_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_POLLUTANT = re.compile(r"^[A-Za-z0-9_\-]{1,16}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MarkType(_Model):
    code: str
    name: str
    industry: str
    judged: bool
    rate: RateEffect
    stop: bool = False
    cap: str | None = None
    judged_above: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    declaration: bool = False
    verified: bool = False
    citation: str
    note: str = ""

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError(f"mark type code {v!r} must be 1-32 lower-case letters, digits or '_'")
        return v

    @field_validator("judged_above")
    @classmethod
    def _codes(cls, v: dict[str, float]) -> dict[str, float]:
        for code in v:
            if not _POLLUTANT.match(code):
                raise ValueError(f"judged_above: {code!r} is not a pollutant code")
        return v


class CapGroup(_Model):
    """An annual cap on the hours of some mark types, per unit (outlet) and calendar year."""

    code: str
    name: str
    #: ``None``: the rules set a cap whose figure is unknown (no cap until the registry sets one).
    hours: Annotated[float, Field(gt=0)] | None = None
    per: Literal["year"] = "year"
    verified: bool = False
    citation: str
    note: str = ""


class Industry(_Model):
    code: str
    name: str
    profiles: list[str] = Field(default_factory=list)


class Deadline(_Model):
    #: Days after an hour's end within which it may be marked or repaired (修约/补遗: 10 days, DOMAIN.md §5).
    window_days: Annotated[int, Field(ge=1, le=10)] = 10
    #: The month's figures are final after this day of the next month (DOMAIN.md §5).
    month_final_day: Annotated[int, Field(ge=1, le=28)] = 10
    citation: str = ""


class Suspicious(_Model):
    flow_share: Annotated[float, Field(gt=0, le=2)] = 0.5
    o2_below: Annotated[float, Field(gt=0, lt=21)] = 19.0
    note: str = ""


class MarkCatalog(_Model):
    """Every mark type, cap group and industry, with the deadline and suspicion settings."""

    types: dict[str, MarkType]
    caps: dict[str, CapGroup] = Field(default_factory=dict)
    industries: dict[str, Industry] = Field(default_factory=dict)
    deadline: Deadline = Field(default_factory=Deadline)
    suspicious: Suspicious = Field(default_factory=Suspicious)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for code, t in self.types.items():
            if t.code != code:
                raise ValueError(f"type {code!r} carries code {t.code!r}")
            if t.industry != ALL_INDUSTRIES and t.industry not in self.industries:
                raise ValueError(f"type {code!r}: unknown industry {t.industry!r}")
            if t.cap is not None and t.cap not in self.caps:
                raise ValueError(f"type {code!r}: unknown cap group {t.cap!r}")
            if t.declaration and t.judged:
                raise ValueError(f"type {code!r}: a stop declaration cannot leave hours judged")
        return self

    def industry_of(self, profile: str, explicit: str | None = None) -> str | None:
        """The outlet's industry: ``explicit`` (the registry's ``mark_industry``), else the first industry
        listing the outlet's limit profile, else ``None`` (device marks only)."""
        if explicit is not None:
            return explicit
        for code, ind in self.industries.items():
            if profile in ind.profiles:
                return code
        return None

    def allowed(self, code: str, industry: str | None, *, declaration: bool = False) -> MarkType | None:
        """The type ``code`` when an outlet of ``industry`` may use it (for a mark or a declaration)."""
        t = self.types.get(code)
        if t is None or t.declaration != declaration:
            return None
        if t.industry != ALL_INDUSTRIES and t.industry != industry:
            return None
        return t

    def cap_hours(self, group: str | None) -> float | None:
        if group is None:
            return None
        g = self.caps.get(group)
        return None if g is None else g.hours

    def with_overrides(self, overrides: Mapping[str, Any]) -> MarkCatalog:
        """The catalog with a registry's ``[marks]`` table applied (``window_days``, ``month_final_day``,
        ``caps = {group = hours}``, ``type = {CODE = {field = value}}``, ``suspicious = {...}``).  Raises
        ValueError saying what is wrong."""
        if not overrides:
            return self
        data = self.model_dump()
        known = {"window_days", "month_final_day", "caps", "type", "suspicious"}
        extra = sorted(set(overrides) - known)
        if extra:
            raise ValueError(f"[marks]: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(known))})")
        for k in ("window_days", "month_final_day"):
            if k in overrides:
                data["deadline"][k] = overrides[k]
        for group, hours in dict(overrides.get("caps", {})).items():
            if group not in data["caps"]:
                raise ValueError(
                    f"[marks] caps: unknown cap group {group!r} (known: {', '.join(sorted(data['caps']))})"
                )
            data["caps"][group]["hours"] = hours
            data["caps"][group]["note"] = "set by the registry"
        for code, fields in dict(overrides.get("type", {})).items():
            if code not in data["types"]:
                raise ValueError(f"[marks] type: unknown mark type {code!r}")
            if not isinstance(fields, Mapping):
                raise ValueError(f"[marks] type.{code} must be a table")
            data["types"][code].update(fields)
        data["suspicious"].update(dict(overrides.get("suspicious", {})))
        try:
            return MarkCatalog.model_validate(data)
        except ValidationError as e:
            raise ValueError(
                "[marks]: " + "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            ) from None


def parse_catalog(raw: Mapping[str, Any]) -> MarkCatalog:
    """A catalog from the TOML layout of ``marks.toml`` (``[type.CODE]``, ``[cap.CODE]``, ``[industry.CODE]``)."""
    return MarkCatalog.model_validate(
        {
            "types": {c: {"code": c, **t} for c, t in raw.get("type", {}).items()},
            "caps": {c: {"code": c, **g} for c, g in raw.get("cap", {}).items()},
            "industries": {c: {"code": c, **i} for c, i in raw.get("industry", {}).items()},
            "deadline": raw.get("deadline", {}),
            "suspicious": raw.get("suspicious", {}),
        }
    )


@cache
def builtin_mark_catalog() -> MarkCatalog:
    """The mark types shipped in ``cems/limits/marks.toml``."""
    text = resources.files(__package__).joinpath("marks.toml").read_text(encoding="utf-8")
    return parse_catalog(tomllib.loads(text))
