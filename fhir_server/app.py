"""The application factory."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask_smorest import Api

import operations
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list

from . import auth, identity, logs, pipeline, portal, submission, subscriptions, tac, web
from .auth import policy
from .code_lists import store_code_lists
from .interactions.write_hooks import WriteHooks
from .resources import SUPPORTED_TYPES
from .routes import fhir_blueprint
from .settings import Settings
from .storage import Store, declaration_codes, deliveries, mailboxes, otps, portal_sessions, records, tasks


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.mongodb_uri:
        raise RuntimeError(
            "MONGODB_URI is not set: start the platform with `make run` "
            "(embedded database) or point MONGODB_URI at a MongoDB replica set"
        )
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="SI-DEP FHIR API",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
    )
    logging.basicConfig(level=logging.INFO)
    logs.install(app)  # nothing personal or secret in any log record of this process
    store = Store(
        settings.mongodb_uri,
        settings.mongodb_db,
        SUPPORTED_TYPES,
        settings.base_url,
        settings.create_indexes,
        settings.max_document_bytes,
        keyed_types=submission.UNIQUE_IDENTIFIERS,
    )
    app.extensions["sidep.store"] = store
    records.connect(
        settings.mongodb_uri,
        settings.mongodb_db,
        *deliveries.MODELS,
        *mailboxes.MODELS,
        *declaration_codes.MODELS,
        tasks.AsyncTask,
        *otps.MODELS,
        *portal_sessions.MODELS,
    )
    install_write_hooks(app, store)
    if settings.store_code_lists:
        with app.app_context():  # written through the write hooks, like any other write
            store_code_lists(store)
    auth.install(app, settings, store)
    web.install(app, settings, store)  # the professionals' web UI at /ui
    tac.install(app, settings)  # TousAntiCovid declaration codes: the provider, POST /tac/verify
    portal.install(app, settings, store)  # the citizen portal at /portail
    operations.load_all()
    api = Api(app)
    blueprint = fhir_blueprint()
    pipeline.install(blueprint, settings.max_body_bytes, before=auth.BEFORE_INTERACTION, after=auth.AFTER_INTERACTION)
    api.register_blueprint(blueprint)
    pipeline.install_app_handlers(app, "/fhir")
    portal.install_app_handlers(app)

    @app.get("/")
    def home():
        return jsonify(
            {
                "fhir": settings.base_url,
                "metadata": f"{settings.base_url}/metadata",
                "openapi": "/openapi.json",
                "trustList": "/trust-list",
                "token": settings.token_endpoint,
            }
        )

    @app.get("/trust-list")
    def published_trust_list():
        """The DCC signing certificates (kid -> DER) verifiers need: public, no token."""
        return jsonify(trust_list(load_keyring(settings.var_dir)))

    return app


def install_write_hooks(app: Flask, store: Store) -> None:
    """What else happens in the transaction of every write, in this order: authorisation first
    (nothing else runs for a refused write), then the submission contract (matching, change
    records, notifications), then the person links across laboratories; Subscriptions' rules
    (subscriptions.py) run before theirs is stored."""
    hooks = WriteHooks()
    policy.register(hooks)
    submission.register(hooks)
    identity.register(hooks)
    subscriptions.register(hooks)
    app.extensions["sidep.write_hooks"] = hooks
    store.commit_check = hooks.commit_check
