"""The pipe channel: ``emaild ingest`` from an MTA transport or a shell.

- ``answer``: one message through the pipeline in this process, and what the
  caller prints and exits with (sysexits(3)).
- ``handoff``: the client side of the hand-off to a running daemon over its
  unix socket (standard library only, so ``emaild ingest`` starts fast).
- ``listener``: the daemon side of that socket, a component of ``emaild run``.

This module imports nothing: the hand-off client must not pull in the pipeline.
"""
