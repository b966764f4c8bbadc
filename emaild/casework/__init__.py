"""Case operations shared by the HTTP API and the command line.

Every change to a case (status, priority, owner, category, tags, a note, a
reply queued) goes through here so it bumps the case's ``version`` and
writes its ``case_events`` row in the caller's transaction. This package
never imports the pipeline or the HTTP layer.
"""
