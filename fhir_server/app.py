"""The application factory."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask_smorest import Api

import operations

from . import pipeline, submission  # noqa: F401  (submission registers its write hooks)
from . import auth, web
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list

from .code_lists import store_code_lists
from .resources import SUPPORTED_TYPES
from .routes import fhir_blueprint
from .settings import Settings
from .storage import Store


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.mongodb_uri:
        raise RuntimeError("MONGODB_URI is not set: start the platform with `make run` "
                           "(embedded database) or point MONGODB_URI at a MongoDB replica set")
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
    app.extensions["sidep.store"] = Store(settings.mongodb_uri, settings.mongodb_db, SUPPORTED_TYPES,
                                          settings.base_url, settings.create_indexes, settings.max_document_bytes)
    if settings.store_code_lists:
        store_code_lists(app.extensions["sidep.store"])
    auth.install(app, settings, app.extensions["sidep.store"])
    web.install(app, settings, app.extensions["sidep.store"])  # the professionals' web UI at /ui
    operations.load_all()
    api = Api(app)
    blueprint = fhir_blueprint()
    pipeline.install(blueprint, settings.max_body_bytes)
    api.register_blueprint(blueprint)
    pipeline.install_app_handlers(app, "/fhir")

    @app.get("/")
    def home():
        return jsonify({"fhir": settings.base_url, "metadata": f"{settings.base_url}/metadata",
                        "openapi": "/openapi.json", "trustList": "/trust-list",
                        "token": settings.token_endpoint})

    @app.get("/trust-list")
    def published_trust_list():
        """The DCC signing certificates (kid -> DER) verifiers need: public, no token."""
        return jsonify(trust_list(load_keyring(settings.var_dir)))

    return app
