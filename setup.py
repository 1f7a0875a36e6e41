"""Build the optional C fast paths; everything else is configured in pyproject.toml.

The extensions are ``optional``: without a C compiler the install still
succeeds and moonbus runs on its pure-Python reference paths (same behaviour,
slower). ``moonbus bench`` says which path it measured.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "moonbus.bus._fastemit",
            ["src/moonbus/bus/_fastemit.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
        ),
        Extension(
            "moonbus.lua._fastcall",
            ["src/moonbus/lua/_fastcall.c"],
            optional=True,
            libraries=["dl"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
        ),
        Extension(
            "moonbus.shared._fastint",
            ["src/moonbus/shared/_fastint.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
        ),
    ],
)
