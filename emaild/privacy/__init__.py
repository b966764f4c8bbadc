"""Retention, erasure and export of personal data.

``retention`` applies the ``[retention]`` rules (the daily job, ``emaild
purge``); ``erase`` removes one person's data and leaves a tombstone on their
cases; ``export`` writes one person's data as an mbox plus JSON. Blobs are
shared between rows, so every deletion goes through ``blobrefs``: a blob is
removed only once no remaining row refers to it.
"""
