"""The HTTP API (``/api/v1``), served by uvicorn inside ``emaild run``.

``app.create_app`` builds the FastAPI application; ``auth`` checks Bearer
tokens and scopes; ``problems`` turns errors into RFC 9457 problem details;
one module per resource under ``routes``; ``server`` runs it as a daemon
component. Blocking work (the database, the pipeline, the blob store) runs in
the daemon's bounded worker pool, never on the event loop.
"""
