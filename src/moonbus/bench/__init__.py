"""The benchmark suites behind ``moonbus bench`` (one module per area).

A regular package, not a namespace one, so that tools that walk packages
(``pkgutil.walk_packages``, the import test in tests/test_package.py) see its
modules; ``moonbus.cli.bench_cmd`` discovers the suites from ``__path__``.
"""
