"""Web-to-Case: a form on a web page opens a case through the one pipeline.

- ``challenge``: the ALTCHA proof-of-work challenge, issued and verified
  with the ``altcha`` library; it also carries the signed fill-time start.
- ``guard``: the other defences (rate limit per client IP, replayed
  challenges, Origin/Referer allow-list, honeypot, minimum fill time).
- ``submission``: what a posted form is, checked against the form's config.
- ``message``: the RFC 5322 message emaild builds from a submission, with
  the signed ``X-Emaild-Web`` header (``stamp``) the ``route`` stage reads.
- ``cap``: the daily cap; over it a submission is held in quarantine and
  released the next day or by an admin.
- ``confirm``: optional: the case opens when the submitter follows a
  signed link mailed to the address they gave.
- ``page``: the form snippet, the served page and the thank-you page.

Nothing here imports the pipeline; ``emaild.http.routes.webform`` is the channel.
"""
