"""``mypyc_attr`` for the optional mypyc build (``scripts/compile``, docs/benchmark.md) without a runtime dependency.

mypyc reads the decorator (mypy's ``mypy_extensions.mypyc_attr``) when it compiles a module and does not call it;
pure Python, the default, runs the no-op below, so ``mypy_extensions`` (installed with mypy, a dev dependency) is
needed only to type-check and compile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:

    def mypyc_attr(*attrs, **kwattrs):
        return lambda cls: cls
