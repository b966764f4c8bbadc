"""Operating emaild: Prometheus instruments, scrape-time figures, readiness.

``metrics`` holds the process's instruments (any package may import it: it
imports nothing of emaild); ``figures`` reads what comes from the database at
scrape time, behind a short cache; ``spool`` carries the message counts of
short-lived processes (``emaild ingest``, ``emaild import``) to the daemon's
``/metrics``; ``readiness`` answers ``/readyz``.
"""
