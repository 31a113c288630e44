"""Gunicorn settings of the platform: `gunicorn -c python:fhir_server.gunicorn_config ... wsgi:app`
(the run command and the README's production command). The access log goes to stdout with request
targets redacted by fhir_server.logs (query values as `*`, personal path segments as `*`)."""

logger_class = "fhir_server.logs.GunicornLogger"
accesslog = "-"
# time, client address, method + redacted target + protocol, status, bytes sent, duration
access_log_format = '%(t)s %(h)s "%(r)s" %(s)s %(b)s %(M)sms'
