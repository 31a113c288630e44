"""Authentication, authorisation and audit of the FHIR API.

- server.py: the OAuth2 authorisation server (authlib): client credentials, client secret or
  private_key_jwt (SMART Backend Services), short-lived opaque bearer tokens, SMART scopes.
- principal.py: who makes a request (a software client now, a web user later), `g.principal`.
- policy.py: what a principal may do, applied by one request interceptor, the storage layer's
  access hook and the write hooks, so every interaction path is covered.
- audit.py: an AuditEvent for every access to patient data, by one after-interaction interceptor.
- `python -m fhir_server.auth clients register|list|rotate|revoke`: the operators' command.

`install(app, settings, store)` is called by the application factory.
"""

from __future__ import annotations

from ..settings import Settings
from ..storage import Store
from ..storage.accounts import Accounts
from ..storage.audit import AuditLog
from . import audit, policy
from .principal import Principal, current_principal  # noqa: F401
from .server import blueprint, create_authorization_server

# The request interceptors of the FHIR API, in the order they run (the application factory
# installs them on the pipeline): authentication and authorisation before every interaction,
# audit after it.
BEFORE_INTERACTION = (policy.authorize_request,)
AFTER_INTERACTION = (audit.after_request,)


def install(app, settings: Settings, store: Store) -> None:
    """Turn on OAuth2, authorisation and audit for this app (nothing but the read-only rule for
    AuditEvent when settings.auth_enabled is false)."""
    if not settings.auth_enabled:
        return
    accounts = Accounts(store.db)
    if settings.create_indexes:
        accounts.ensure_indexes()  # the owners' indexes (org) are the store's (storage.mongo.index_plan)
    app.extensions["sidep.accounts"] = accounts
    app.extensions["sidep.restrict_plans"] = policy.restrict_plans
    store.access = policy.OrganisationAccess()
    server = create_authorization_server(app, accounts, settings)
    app.register_blueprint(blueprint(server, settings))
    if settings.audit_enabled:
        app.extensions["sidep.audit"] = AuditLog(store, settings.audit_flush_interval)
