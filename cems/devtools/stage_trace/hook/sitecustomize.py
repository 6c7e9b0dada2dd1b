"""Installs :mod:`cems.devtools.stage_trace` in a Python process started with ``CEMS_STAGE_TRACE`` set and this
directory on ``PYTHONPATH`` (the process's start is its entry point: the only place it reads that variable)."""

import os

if os.environ.get("CEMS_STAGE_TRACE"):
    from cems.devtools.stage_trace import install

    install(os.environ["CEMS_STAGE_TRACE"])
