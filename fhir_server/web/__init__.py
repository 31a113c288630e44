"""The professionals' web UI, mounted at /ui: login with a password and a TOTP
second factor (standing in for Pro Santé Connect), the result-entry form of pharmacists, nurses and
doctors, results lists, search and correction, and the operators' console.

- session.py: web sessions -> `flask.g.principal` (kind "user"), CSRF, roles;
- forms.py: form fields checked with profiles/validators.py (French messages next to the fields);
- results.py: results through the FHIR machinery (transaction, search, read);
- console.py: the RQ queue and the outbox for operators;
- audit.py: AuditEvents of the pages, built by fhir_server.auth.audit;
- views.py: the pages (Jinja2 templates under templates/, one CSS file under static/);
- throttle.py: the login's throttles (flask-limiter), lock-out clients and trusted browsers;
- `python -m fhir_server.web users add|list|unlock|disable|password`: the command that creates users.

`install(app, settings, store)` is called by the application factory. The UI needs authorisation
to be on (settings.auth_enabled): without it every user would see every organisation's data, so
/ui answers 404.
"""

from __future__ import annotations

from ..settings import Settings
from ..storage import Store
from ..storage.outbox import Outbox
from ..storage.persons import Persons
from ..storage.users import Users


def install(app, settings: Settings, store: Store) -> None:
    from . import throttle
    from .views import blueprint

    users = Users(store.db)
    if settings.create_indexes:
        users.ensure_indexes()
    app.extensions["sidep.users"] = users
    app.extensions["sidep.outbox"] = Outbox(store.db)
    app.extensions["sidep.persons"] = Persons(store.db)
    app.register_blueprint(blueprint(throttle.install(app, settings), settings), url_prefix="/ui")
