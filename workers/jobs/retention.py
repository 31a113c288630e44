"""`purge(now=None)`: what the retention rules no longer allow, removed. Enqueued by the
dispatcher every RETENTION_SWEEP_SECONDS; `now` (ISO 8601) lets a test or an operator run it as of
another moment.

- MSSanté message copies (and their PDFs): 72 hours after sampling for a negative result, 6 months
  for a positive one (their date is set when the message is built);
- delivery records, with the Communications recording them, and deep links: the result's
  retention (RESULT_RETENTION_MONTHS after sampling);
- TousAntiCovid declaration codes: the result's retention too;
- results of asynchronous requests: ASYNC_RESULT_MINUTES after they were asked;
- the portal's one-time code records (with their deep link) and its ended sessions.
"""

from __future__ import annotations

from fhir_server.search.dates import parse_range, utc_now
from fhir_server.storage import otps, portal_sessions
from fhir_server.storage.declaration_codes import DeclarationCode, DeclarationCodes
from fhir_server.storage.deliveries import MODELS, DeepLinks, Deliveries
from fhir_server.storage.tasks import AsyncTask
from workers.context import context


def purge(now: str | None = None) -> dict[str, int]:
    ctx = context()
    ctx.connect_records(*MODELS, DeclarationCode, AsyncTask, *otps.MODELS, *portal_sessions.MODELS)
    moment = parse_range(now)[0] if now else utc_now()
    deliveries = Deliveries()
    communications = ctx.store.purge("Communication", deliveries.expired_communications(moment))
    removed = {**deliveries.purge(moment), **DeepLinks().purge(moment), "Communication": communications}
    removed["declaration codes"] = DeclarationCodes().purge_expired(moment)
    removed["asynchronous results"] = AsyncTask.purge(moment)
    removed.update(otps.Otps().purge(moment))
    removed.update(portal_sessions.PortalSessions().purge(moment))
    return removed
