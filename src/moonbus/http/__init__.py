"""The HTTP management API (SPEC §11): server, auth, JSON API, live streams, metrics.

Starlette, uvicorn, sse-starlette and prometheus-client are the optional
``http`` extra (``pip install 'moonbus[http]'``); nothing here imports them
at package import time, so ``import moonbus`` keeps its small dependency set.
"""
