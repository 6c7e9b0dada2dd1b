"""The duty console (值班台, 电子督办; issue 19): ``cems console serve`` — a server-rendered web application
(Starlette on uvicorn, Jinja2 templates, a few lines of vanilla JS) where the monitoring room sees the open
events and acknowledges, dispatches, answers and closes them. See docs/console.md.

* :mod:`cems.console._app`: :func:`create_app` and :class:`ConsoleSettings`.
* :mod:`cems.console._users`: accounts (SQLite, Argon2id hashes).
* :mod:`cems.console._access`: who may see and do what (pure).
* :mod:`cems.console._data`: what the pages show, read from InfluxDB; the SVG chart.
"""

from cems.console._access import ROLE_ACTIONS, can_act, can_see
from cems.console._app import ConsoleSettings, create_app
from cems.console._users import ROLES, USERS_FILE, User, UserStore

__all__ = [
    "ROLES",
    "ROLE_ACTIONS",
    "USERS_FILE",
    "ConsoleSettings",
    "User",
    "UserStore",
    "can_act",
    "can_see",
    "create_app",
]
