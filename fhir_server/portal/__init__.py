"""The citizen portal, mounted at /portail: where every tested person lands from the personal
link of their notification (or FranceConnect) to see their results, download their certificates
and import them into TousAntiCovid. French by default, English on every page; usable without
JavaScript; nothing personal in its URLs.

- session.py: the portal's own session and CSRF; `sign_in(patients, method)`, `current()`,
  `sign_out()` for every sign-in method;
- otp.py: the one-time codes (derived with HMAC, stored hashed: storage/otps.py), sent by the job
  workers/jobs/otp.py;
- results.py: the signed-in person's results, their certificates, the AuditEvent of each access;
- views.py: the pages (templates/portal/, static/portal.js and portal.css);
- messages.py: the words, French and English.

`install(app, settings, store)` and, once the API's handlers are set, `install_app_handlers(app)`
are called by the application factory.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import HTTPException

from ..settings import Settings
from ..storage import Store
from ..storage.persons import Persons
from ..storage.portal_sessions import PortalSessions

PREFIX = "/portail"


def install(app, settings: Settings, store: Store) -> None:
    from .views import blueprint

    app.extensions["sidep.portal.sessions"] = PortalSessions()
    app.extensions["sidep.portal.persons"] = Persons(store.db)
    app.register_blueprint(blueprint(), url_prefix=PREFIX)


def install_app_handlers(app) -> None:
    """Routing errors under /portail (no such page, method not allowed) happen before the blueprint
    is known: the portal's pages for them too. Called after every other app-wide handler is set."""
    from .views import unmatched

    fallback = app.error_handler_spec.get(None, {}).get(None, {}).get(HTTPException)

    def handle(error: HTTPException):  # routing errors happen before the blueprint is known
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            return unmatched(error)
        return fallback(error) if fallback else error

    app.register_error_handler(HTTPException, handle)
