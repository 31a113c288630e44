"""The indicators page of the web UI (`/ui/aggregates`), for operators and public-health users:
the chart of the last DEFAULT_DAYS days (tests per day, positivity rate), nationally or for one
département, for all test types or one, with its description, a table by week as the text
alternative, and the same data as the `$aggregates` CSV and the chart as an SVG file.

Every view is audited as a call of `$aggregates` is (subtype operation, the query as entity).
"""

from __future__ import annotations

from flask import Response, abort, current_app, render_template, request, url_for
from markupsafe import Markup

from .. import aggregate_chart, aggregates
from ..auth.policy import PUBLIC_HEALTH_READERS
from ..http import private_response
from ..outcome import FhirError
from ..storage.pseudonymised import PseudonymisedRecords
from . import audit
from .session import login_required

READERS = tuple(sorted(PUBLIC_HEALTH_READERS))
INTERACTION = "operation-system"
WEEK = 7


def _records() -> PseudonymisedRecords:
    return PseudonymisedRecords(current_app.extensions["sidep.store"].db)


def _query() -> aggregates.Query:
    """The page's choices (département, test type) over the last DEFAULT_DAYS days; a value no
    form offers is the error page (400), audited as refused."""
    values = {"dep": request.args.get("dep"), "test-type": request.args.get("test-type")}
    try:
        return aggregates.parse_query(values, current_app.config["SETTINGS"].aggregates_max_days)
    except FhirError as exc:
        audit.refused(INTERACTION, None, exc)
        abort(400, description="; ".join(issue.fr or issue.en for issue in exc.issues))


def scope(query: aggregates.Query) -> str:
    """What the figures count, in words: "France entière, tous types de test"."""
    where = f"Département {query.departement}" if query.departement else "France entière"
    what = aggregates.TEST_TYPE_LABELS[query.test_type] if query.test_type else "tous types de test"
    return f"{where}, {what}"


def weeks(days: list[aggregates.Day]) -> list[dict]:
    """Runs of seven days counted back from the last one (the first run may be shorter)."""
    runs = []
    for end in range(len(days), 0, -WEEK):
        run = days[max(0, end - WEEK) : end]
        tests, positives = sum(d.T for d in run), sum(d.P for d in run)
        runs.append(
            {
                "start": run[0].jour,
                "end": run[-1].jour,
                "T": tests,
                "P": positives,
                "positivity": aggregates.positivity(positives, tests),
            }
        )
    return runs[::-1]


def _choices(query: aggregates.Query) -> dict:
    return {k: v for k, v in (("dep", query.departement), ("test-type", query.test_type)) if v}


@login_required(*READERS)
def page():
    query = _query()
    days = aggregates.daily(_records(), query)
    audit.record(INTERACTION, None, None)
    label = scope(query)
    return render_template(
        "aggregates.html",
        query=query,
        chart=Markup(aggregate_chart.svg(days, label, declaration=False)),  # built from numbers and our words
        summary=aggregate_chart.describe(days, label),
        weeks=weeks(days),
        departements=aggregates.DEPARTEMENTS,
        test_types=aggregates.TEST_TYPE_LABELS,
        csv_url=url_for("web.aggregates_csv", **_choices(query)),
        svg_url=url_for("web.aggregates_chart", **_choices(query)),
        fr_integer=aggregate_chart.french_integer,
        fr_percent=aggregate_chart.french_percent,
        fr_day=aggregate_chart.french_day,
    )


@login_required(*READERS)
def chart() -> Response:
    query = _query()
    days = aggregates.daily(_records(), query)
    audit.record(INTERACTION, None, None)
    body = aggregate_chart.svg(days, scope(query)).encode("utf-8")
    name = f"tests-positivite-{query.departement or 'france'}-{query.end.isoformat()}.svg"
    return private_response(body, "image/svg+xml; charset=utf-8", name)


@login_required(*READERS)
def data() -> Response:
    query = _query()
    table = aggregates.rows(_records(), query)
    audit.record(INTERACTION, None, None)
    body = aggregates.to_csv(table).encode("utf-8")
    return private_response(body, "text/csv; charset=utf-8", aggregates.filename(), attachment=True)
