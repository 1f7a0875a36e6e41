"""Build the optional C fast paths; everything else is configured in pyproject.toml.

The extensions are ``optional``: without a C compiler the install still
succeeds and moonbus runs on its pure-Python reference paths (same behaviour,
slower). ``moonbus bench`` says which path it measured.
"""

from typing import Any

from setuptools import Extension, setup


def _fast_path(module: str, **extra: Any) -> Extension:
    """One optional extension ``moonbus.<module>`` built from ``src/moonbus/<module>.c``."""
    return Extension(
        f"moonbus.{module.replace('/', '.')}",
        [f"src/moonbus/{module}.c"],
        optional=True,
        depends=["src/moonbus/_capi.h", "src/moonbus/lua/_luaapi.h",
                 "src/moonbus/lua/_callstate.h"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers"],
        **extra,
    )


setup(
    ext_modules=[
        _fast_path("bus/_fastemit"),
        _fast_path("lua/_fastcall", libraries=["dl"]),
        _fast_path("lua/_fastconvert", libraries=["dl"]),
        _fast_path("lua/_arena", libraries=["dl"]),
        _fast_path("shared/_fastint"),
    ],
)
