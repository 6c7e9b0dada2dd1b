"""Who may see and do what in the duty console (pure rules; issue 19 item 4).

* duty officer (值班员): sees everything; acknowledges, dispatches, sends back and closes.
* district officer (区县): sees only the events of its district; answers (feedback) the cases dispatched to it.
* enterprise (企业): sees only the events of its own outlets; answers (feedback) its dispatched cases.
* viewer (只读): sees everything, does nothing.

Marks (标记), stop declarations (停产申报), repairs (修约) and withdrawals (issue 14) are the enterprise's: only an
enterprise account submits them, and only for its own outlets (:func:`can_mark`); the others see them read-only
(:func:`sees_outlet`). The bureau enters one on an enterprise's behalf with ``cems marks … --on-behalf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cems.console._users import DISTRICT, DUTY, ENTERPRISE, VIEWER, User

#: role → the actions it may take (cems.service.compliance._actions)
ROLE_ACTIONS: Final[Mapping[str, frozenset[str]]] = {
    DUTY: frozenset({"ack", "dispatch", "send_back", "close"}),
    DISTRICT: frozenset({"feedback"}),
    ENTERPRISE: frozenset({"feedback"}),
    VIEWER: frozenset(),
}


def can_see(user: User, event: Mapping[str, Any]) -> bool:
    """May ``user`` see ``event`` (a ``cems_event`` row: ``district``, ``enterprise``, ``dispatched_to``)?"""
    if user.role in (DUTY, VIEWER):
        return True
    if user.role == DISTRICT:
        return user.scope in (event.get("district"), event.get("dispatched_to"))
    if user.role == ENTERPRISE:
        return user.scope == event.get("enterprise")
    return False


def can_act(user: User, action: str, event: Mapping[str, Any]) -> bool:
    """May ``user`` take ``action`` on ``event``? (Whether the case's state allows it is the ingester's
    rule; a district answers only what was dispatched to it.)"""
    if action not in ROLE_ACTIONS.get(user.role, frozenset()) or not can_see(user, event):
        return False
    if user.role == DISTRICT:
        return event.get("dispatched_to") == user.scope
    return True


def sees_district(user: User, code: str) -> bool:
    return user.role in (DUTY, VIEWER) or (user.role == DISTRICT and user.scope == code)


def sees_outlet(user: User, enterprise: str, district: str) -> bool:
    """May ``user`` see the outlets (and their marks) of ``enterprise`` in ``district``?"""
    return can_see(user, {"enterprise": enterprise, "district": district})


def can_mark(user: User, enterprise: str) -> bool:
    """May ``user`` submit marks, declarations, repairs and withdrawals for the outlets of ``enterprise``?"""
    return user.role == ENTERPRISE and user.scope == enterprise
