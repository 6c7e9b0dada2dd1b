"""HJ 212 passwords (``PW``) of the registry's outlets, resolved in one place for the bridge and the ingester.

An outlet has ``password`` (in the registry), or ``password_env`` (the name of an environment variable that
holds it), or neither (no PW check).  A ``password_env`` whose variable is unset or empty is a configuration
error: ``cems run``, ``cems-gateway hj212-bridge`` and ``cems registry check`` refuse it, naming every outlet
and variable (fail closed).  An outlet whose variable was never resolved rejects every HJ 212 packet as
``bad_password`` (see :attr:`cems.registry.Outlet.hj212_password`), never accepts any PW.

The functions take the environment as a mapping: the entry points pass :func:`cems.config.environ`.
"""

from __future__ import annotations

from collections.abc import Mapping

from cems.errors import ConfigError
from cems.registry._model import Outlet, Registry


def expected_password(outlet: Outlet, environ: Mapping[str, str]) -> str | None:
    """The PW an outlet's packets must carry: ``password``, else the value of the variable ``password_env``
    names; ``None`` when the outlet has neither (no check).  Raises :class:`ConfigError` when the variable is
    unset or empty."""
    if outlet.password_env:
        value = environ.get(outlet.password_env)
        if not value:
            raise ConfigError(f"outlet {outlet.mn}: password_env {outlet.password_env!r} is not set in the environment")
        return value
    return outlet.password


def missing_credentials(registry: Registry, environ: Mapping[str, str]) -> list[str]:
    """One line per outlet whose ``password_env`` variable is unset or empty (empty: all resolve)."""
    return [
        f"enterprise {info.enterprise.id} outlet {info.outlet.mn}: "
        f"password_env {info.outlet.password_env!r} is not set in the environment"
        for info in registry.outlets()
        if info.outlet.password_env and not environ.get(info.outlet.password_env)
    ]


def check_credentials(registry: Registry, environ: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` naming every outlet and variable missing (what refuses to start)."""
    missing = missing_credentials(registry, environ)
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise ConfigError(
            f"{len(missing)} outlet(s) have no HJ 212 password: set the variable(s) their password_env names "
            f"(refusing to start rather than accept any PW)\n{lines}"
        )


def with_credentials(registry: Registry, environ: Mapping[str, str], *, strict: bool = True) -> Registry:
    """The registry with every ``password_env`` resolved from ``environ`` into the outlet's ``password``
    (what :attr:`~cems.registry.Outlet.hj212_password` then returns).

    ``strict`` (``cems run``): a missing variable raises :class:`ConfigError` (:func:`check_credentials`).
    Not strict (``cems replay``, the simulator): outlets whose variable is missing stay unresolved and
    their HJ 212 packets are rejected as ``bad_password``.
    """
    if strict:
        check_credentials(registry, environ)
    resolved: dict[str, str] = {}
    for info in registry.outlets():
        o = info.outlet
        if o.password_env and environ.get(o.password_env):
            resolved[o.mn] = environ[o.password_env]
    if not resolved:
        return registry
    enterprises = []
    for e in registry.enterprise:
        if any(o.mn in resolved for o in e.outlet):
            outlets = [o.model_copy(update={"password": resolved[o.mn]}) if o.mn in resolved else o for o in e.outlet]
            e = e.model_copy(update={"outlet": outlets})
        enterprises.append(e)
    return registry.reindexed(enterprises)
