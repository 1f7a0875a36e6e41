"""The Redis client layer shared by the shared store and the event store.

Below both storage layers (``shared`` and ``store`` import it; it imports
neither, nor anything of moonbus but ``errors``):

- ``batch``: ``CommandBatcher`` sends the commands of many threads over one
  connection, pipelined, with the retry rules (``LinkDown``: nothing sent,
  retried; ``LinkLost``: reads retried, writes fail as "may or may not have
  been applied"; ``NOSCRIPT``: the script is re-loaded and the call re-sent;
  ``LOADING``/``BUSY``/...: retried), plus the RESP encoder (``pack``) and
  ``public_url`` (a URL with its password hidden).
- ``link``: ``connect`` (one redis-py connection, the part's server-side Lua
  scripts loaded once) and ``RedisLink``, the redis-py adapter. Only this
  module imports ``redis``, so importing the package needs no Redis client.

Each part keeps its own scripts and key layout (``shared/redis_scripts.py``,
``store/redis_scripts.py``) and translates failures into its own errors.
"""
