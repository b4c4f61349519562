"""The build of outlay's one C extension; everything else is declared in pyproject.toml.

``outlay.ledger._speedups`` builds the SQLite ledger's rows in C (docs/benchmarks.md). It is
optional: where no C compiler or Python headers are found the install goes on without it, and the
ledger runs the same code in Python (``outlay.ledger.speedups()`` says which one is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("outlay.ledger._speedups", ["src/outlay/ledger/_speedups.c"], optional=True),
    ]
)
