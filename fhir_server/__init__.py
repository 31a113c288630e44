"""SI-DEP FHIR server: the Flask application factory lives in fhir_server.app."""


def create_app(settings=None):
    from .app import create_app as factory

    return factory(settings)
