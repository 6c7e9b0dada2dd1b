"""Installs :mod:`cems.devtools.stage_trace` in a Python process started with ``CEMS_STAGE_TRACE`` set and this
directory on ``PYTHONPATH`` (the process's start is its entry point: the only place it reads that variable,
through :func:`cems.config.environ`)."""

from cems.config import environ

_prefix = environ().get("CEMS_STAGE_TRACE")
if _prefix:
    from cems.devtools.stage_trace import install

    install(_prefix)
