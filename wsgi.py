"""WSGI entry point: `gunicorn wsgi:app` (settings from the environment)."""

from fhir_server import create_app

app = create_app()
