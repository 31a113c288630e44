"""The epidemiological aggregates (fhir_server/aggregates.py): counts against records inserted
here and counted again by the test itself, the all-ages rows, the filters, the CSV's exact
layout, the JSON, the `$aggregates` operation's answers (400, 403, 406, its audit), the SVG chart
(well-formed, its figures present) and the indicators page of the web UI, in the real browser."""

from __future__ import annotations

import csv
import io
import random
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, timedelta

import pytest
from pymongo import MongoClient
from werkzeug.serving import make_server

from fhir_server import aggregate_chart, aggregates, create_app
from fhir_server.embedded import free_port
from fhir_server.outcome import FhirError
from fhir_server.settings import Settings
from fhir_server.storage.pseudonymised import PseudonymisedRecords
from fhir_server.synthetic.pseudonymised import records as synthetic_records

from .browser import check_page
from .test_web_browser import by_id, sign_in
from .test_web_ui import Web, add_user, text

TODAY = aggregates.today()
SVG = "{http://www.w3.org/2000/svg}"
FILENAME = re.compile(r'^attachment; filename="sp-pos-quot-dep-\d{4}-\d{2}-\d{2}-\d{2}h\d{2}\.csv"$')


def rec(day: date, dep: str | None = "75", age: str | None = "29", result="detected", test_type="naat") -> dict:
    return {
        "pseudonym": f"v1.t.{uuid.uuid4().hex[:26]}",
        "key_version": 1,
        "age_class": age,
        "sex": "F",
        "departement": dep,
        "test_type": test_type,
        "result": result,
        "sampling_date": day.isoformat(),
        "performer_type": "laboratoire",
        "finess": "750000001",
    }


def item(record: dict | None, key: str | None = None) -> dict:
    key = key or f"v1.r.{uuid.uuid4().hex}"
    return {"result": key, "rid": f"report-{key}", "rec": record}


@pytest.fixture
def store(mongo_uri) -> PseudonymisedRecords:
    return PseudonymisedRecords(MongoClient(mongo_uri)[f"t_{uuid.uuid4().hex[:12]}"])


def expected_rows(items: list[dict], query: aggregates.Query) -> dict[tuple, tuple[int, int]]:
    """The file's rows counted here, from the items as appended: (dep, jour, cl_age90) -> (P, T)."""
    current = {}
    for one in items:  # a later item of the same result replaces it; None withdraws it
        current[one["result"]] = one["rec"]
    counts: Counter = Counter()
    for record in current.values():
        if record is None or record["result"] not in ("detected", "not-detected") or record["departement"] is None:
            continue
        if not query.start.isoformat() <= record["sampling_date"] <= query.end.isoformat():
            continue
        if query.test_type and record["test_type"] != query.test_type:
            continue
        if query.departement and record["departement"] != query.departement:
            continue
        ages = ["0"] + ([record["age_class"]] if record["age_class"] else [])
        for age in ages:
            key = (record["departement"], record["sampling_date"], age)
            counts[key + ("P",)] += record["result"] == "detected"
            counts[key + ("T",)] += 1
    keys = {k[:3] for k in counts}
    return {k: (counts[k + ("P",)], counts[k + ("T",)]) for k in keys}


def as_table(rows: list[dict]) -> dict[tuple, tuple[int, int]]:
    table = {(r["dep"], r["jour"], r["cl_age90"]): (r["P"], r["T"]) for r in rows}
    assert len(table) == len(rows)  # one row per (dep, jour, cl_age90)
    return table


def mixed_items() -> list[dict]:
    """Synthetic records, then what the counts must leave out or replace: inconclusive results,
    unknown départements and age classes, a withdrawn result, a corrected one, records outside
    the 90 days."""
    items = list(synthetic_records(1500, seed=11, days=100, end=TODAY))
    items += [item(rec(TODAY, result="inconclusive")), item(rec(TODAY, dep=None)), item(rec(TODAY, age=None))]
    items.append(item(None, key=items[0]["result"]))  # withdrawn
    corrected = dict(items[1]["rec"], result="detected" if items[1]["rec"]["result"] != "detected" else "not-detected")
    items.append(item(corrected, key=items[1]["result"]))
    items.append(item(rec(TODAY + timedelta(days=1))))  # sampled "tomorrow" (clock skew): outside
    return items


# -- the counts ----------------------------------------------------------------------------------
def test_rows_count_what_the_records_say(store):
    items = mixed_items()
    store.append(items[:1000])
    store.append(items[1000:])
    query = aggregates.parse_query({}, max_days=366)
    assert (query.start, query.end) == (TODAY - timedelta(days=89), TODAY)
    rows = aggregates.rows(store, query)
    assert as_table(rows) == expected_rows(items, query)
    assert sum(r["T"] for r in rows if r["cl_age90"] == "0") > 1000
    # the public file's order: département, day, then age class with all ages first
    order = [(aggregates.DEPARTEMENTS.index(r["dep"]), r["jour"], int(r["cl_age90"])) for r in rows]
    assert order == sorted(order)


def test_the_kept_counts_follow_every_change_of_a_result(store):
    """The counts move with each append: results changed again and again, within one batch and
    across batches, withdrawn and published anew, and a batch appended twice (a job run again)."""
    rng = random.Random(5)
    items = list(synthetic_records(300, seed=12, days=30, end=TODAY))
    history = list(items)
    store.append(items[:150])
    store.append(items[150:])
    for round in range(4):
        batch = []
        for chosen in rng.sample(items, 60):
            record = (
                None
                if rng.random() < 0.2
                else rec(
                    TODAY - timedelta(days=rng.randrange(30)),
                    dep=rng.choice(["75", "2A", "971"]),
                    result=rng.choice(["detected", "not-detected", "inconclusive"]),
                )
            )
            batch.append(item(record, key=chosen["result"]))
        store.append(batch)
        history += batch
        if round == 2:
            store.append(batch)  # the same batch again changes nothing
            history += batch
    query = aggregates.parse_query({}, max_days=366)
    assert as_table(aggregates.rows(store, query)) == expected_rows(history, query)


def test_all_ages_rows_count_every_age_and_the_classes_their_own(store):
    day = TODAY - timedelta(days=3)
    store.append(
        [
            item(rec(day, age="09")),
            item(rec(day, age="09")),
            item(rec(day, age="29", result="not-detected")),
            item(rec(day, age=None)),  # in the all-ages row only
            item(rec(day, age="90", result="inconclusive")),  # in no row
            item(rec(day, dep="2A", age="90", result="not-detected")),
        ]
    )
    rows = aggregates.rows(store, aggregates.parse_query({}, max_days=366))
    assert [(r["dep"], r["cl_age90"], r["P"], r["T"]) for r in rows] == [
        ("2A", "0", 0, 1),
        ("2A", "90", 0, 1),
        ("75", "0", 3, 4),
        ("75", "09", 2, 2),
        ("75", "29", 0, 1),
    ]
    assert {r["jour"] for r in rows} == {day.isoformat()}


def test_filters_by_test_type_departement_and_days(store):
    items = list(synthetic_records(1200, seed=5, days=30, end=TODAY))
    store.append(items)
    for values in (
        {"test-type": "antigen"},
        {"dep": "2b"},  # codes are read in upper case
        {"from": (TODAY - timedelta(days=9)).isoformat(), "to": (TODAY - timedelta(days=2)).isoformat()},
        {"test-type": "naat", "dep": "13", "from": (TODAY - timedelta(days=20)).isoformat()},
    ):
        query = aggregates.parse_query(values, max_days=366)
        rows = aggregates.rows(store, query)
        assert rows and as_table(rows) == expected_rows(items, query), values
    narrow = aggregates.parse_query({"from": TODAY.isoformat(), "to": TODAY.isoformat()}, max_days=1)
    assert {r["jour"] for r in aggregates.rows(store, narrow)} == {TODAY.isoformat()}
    assert {r["dep"] for r in aggregates.rows(store, aggregates.parse_query({"dep": "2B"}, 366))} == {"2B"}


def test_daily_totals_give_every_day_national_or_for_one_departement(store):
    items = list(synthetic_records(800, seed=3, days=40, end=TODAY))
    store.append(items)
    for values in ({}, {"dep": "59", "test-type": "antigen"}):
        query = aggregates.parse_query(values, max_days=366)
        days = aggregates.daily(store, query)
        assert [d.jour for d in days] == query.days and len(days) == 90
        all_ages = {k: v for k, v in expected_rows(items, query).items() if k[2] == "0"}
        for day in days:
            in_day = [v for k, v in all_ages.items() if k[1] == day.jour.isoformat()]
            assert (day.P, day.T) == (sum(p for p, _ in in_day), sum(t for _, t in in_day))
        assert sum(d.T for d in days) > 0 and any(d.T == 0 for d in days)  # 40 days of records in 90


# -- the files -------------------------------------------------------------------------------------
def test_csv_has_exactly_the_public_files_columns():
    rows = [
        {"dep": "01", "jour": "2026-11-02", "P": 3, "T": 40, "cl_age90": "0"},
        {"dep": "01", "jour": "2026-11-02", "P": 1, "T": 7, "cl_age90": "09"},
    ]
    assert aggregates.to_csv(rows) == "dep;jour;P;T;cl_age90\n01;2026-11-02;3;40;0\n01;2026-11-02;1;7;09\n"
    query = aggregates.Query(date(2026, 11, 1), date(2026, 11, 2), "antigen", "01")
    body = aggregates.to_json(rows, query)
    assert body["rows"][0] == {"dep": "01", "jour": "2026-11-02", "P": 3, "T": 40, "cl_age90": "0", "positivity": 7.5}
    assert (body["from"], body["to"], body["test-type"], body["dep"]) == ("2026-11-01", "2026-11-02", "antigen", "01")
    assert aggregates.positivity(0, 0) is None and aggregates.positivity(1, 3) == 33.33


@pytest.mark.parametrize(
    "values, where",
    [
        ({"from": "2026-02-30"}, "from"),
        ({"to": "26-11-01"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "from"),
        ({"from": "2026-01-01", "to": "2026-04-11"}, "to"),  # 101 days, the limit is 100
        ({"test-type": "pcr"}, "test-type"),
        ({"dep": "20"}, "dep"),
    ],
)
def test_bad_parameters_name_themselves(values, where):
    with pytest.raises(FhirError) as raised:
        aggregates.parse_query(values, max_days=100)
    assert raised.value.status == 400 and where in raised.value.issues[0].expression
    assert len(aggregates.parse_query({"from": "2026-01-01", "to": "2026-04-10"}, max_days=100).days) == 100


# -- the chart -------------------------------------------------------------------------------------
def test_the_svg_is_well_formed_and_carries_its_figures():
    days = [
        aggregates.Day(TODAY - timedelta(days=2 - n), p, t) for n, (p, t) in enumerate(((12, 150), (0, 0), (30, 1200)))
    ]
    drawing = aggregate_chart.svg(days, "France entière, tous types de test")
    root = ET.fromstring(drawing.encode("utf-8"))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.get("aria-labelledby") == "graphique-titre graphique-desc"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert "France entière" in title.text and title.get("id") == "graphique-titre"
    assert "1\u202f350 tests, dont 42 positifs, taux de positivité 3,1\u00a0%" in desc.text
    assert f"Dernier jour : {TODAY:%d/%m/%Y}, 1\u202f200 tests, taux de positivité 2,5\u00a0%" in desc.text
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [b.find(f"{SVG}title").text.split(" : ")[1] for b in bars] == [
        "150 tests, 12 positifs, taux 8,0\u00a0%",
        "0 test, 0 positif, taux —",
        "1\u202f200 tests, 30 positifs, taux 2,5\u00a0%",
    ]
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] == 0 and heights[2] > heights[0] > 0
    path = next(root.iter(f"{SVG}path")).get("d")
    assert path.count("M") == 2 and "L" not in path  # the line breaks over the day without a test
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "Tests par jour" in labels and "Taux de positivité" in labels and f"{TODAY:%d/%m}" in labels


# -- the operation over HTTP -----------------------------------------------------------------------
@pytest.fixture
def api(secured_factory):
    server = secured_factory(aggregates_max_days=120)
    server.items = list(synthetic_records(600, seed=9, days=30, end=TODAY))
    PseudonymisedRecords(server.store.db).append(server.items)
    return server


def test_public_health_and_operators_get_the_csv_and_the_json(api):
    health = api.client_session(None, scope="system/*.read", role="public-health")
    answer = health.get("$aggregates", params={"_format": "csv", "dep": "75"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert FILENAME.match(answer.headers["Content-Disposition"]) and answer.headers["Cache-Control"] == "no-store"
    lines = answer.content.decode("utf-8").split("\n")
    assert lines[0] == "dep;jour;P;T;cl_age90" and lines[-1] == ""
    parsed = list(csv.DictReader(io.StringIO(answer.text), delimiter=";"))
    query = aggregates.parse_query({"dep": "75"}, max_days=120)
    assert {(r["dep"], r["jour"], r["cl_age90"]): (int(r["P"]), int(r["T"])) for r in parsed} == expected_rows(
        api.items, query
    )

    operator = api.client_session(None, scope="system/*.read", role="operator")
    answer = operator.get("$aggregates", params={"test-type": "antigen"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json; charset=utf-8"
    body = answer.json()
    assert body["test-type"] == "antigen" and body["dep"] == "all" and body["to"] == TODAY.isoformat()
    expected = expected_rows(api.items, aggregates.parse_query({"test-type": "antigen"}, 120))
    assert {(r["dep"], r["jour"], r["cl_age90"]): (r["P"], r["T"]) for r in body["rows"]} == expected
    assert all(r["positivity"] == round(100 * r["P"] / r["T"], 2) for r in body["rows"])
    as_csv = operator.get("$aggregates", headers={"Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.text.startswith("dep;jour;P;T;cl_age90\n")


def test_laboratories_and_other_roles_are_refused(api):
    from fhir_server.synthetic.generator import make_laboratories

    lab = make_laboratories(random.Random(3), 1)[0]
    for session in (
        api.client_session(lab),
        api.client_session(None, scope="system/*.read", role="dmp-connector"),
        api.client_session(None, scope="system/Organization.read", role="public-health"),
    ):
        answer = session.get("$aggregates", params={"_format": "csv"})
        assert answer.status_code == 403 and answer.json()["resourceType"] == "OperationOutcome"
    assert api.session(None).get("$aggregates").status_code == 401


@pytest.mark.parametrize(
    "params, status, where",
    [
        ({"from": "2026-13-01"}, 400, "from"),
        ({"from": (TODAY - timedelta(days=120)).isoformat()}, 400, "to"),  # 121 days, the setting says 120
        ({"test-type": "rapid"}, 400, "test-type"),
        ({"dep": "XX"}, 400, "dep"),
        ({"departement": "75"}, 400, "departement"),
        ({"dep": ["75", "13"]}, 400, "dep"),
        ({"_format": "xml"}, 406, "_format"),
    ],
)
def test_bad_parameters_are_operation_outcomes_at_the_parameter(api, params, status, where):
    health = api.client_session(None, scope="system/*.read", role="public-health")
    answer = health.get("$aggregates", params=params)
    assert answer.status_code == status, answer.text
    issue = answer.json()["issue"][0]
    assert answer.json()["resourceType"] == "OperationOutcome" and where in issue["expression"]


def test_every_call_is_audited_once_refusals_included(api):
    health = api.client_session(None, scope="system/*.read", role="public-health")
    from fhir_server.synthetic.generator import make_laboratories

    lab = api.client_session(make_laboratories(random.Random(4), 1)[0])
    assert health.get("$aggregates", params={"dep": "75"}).status_code == 200
    assert health.get("$aggregates", params={"dep": "XX"}).status_code == 400
    assert lab.get("$aggregates").status_code == 403
    events = [e for e in api.audit_events() if e["subtype"][0]["code"] == "operation"]
    assert [(e["agent"][0]["altId"], e["outcome"]) for e in events] == [
        (health.client_id, "0"),
        (health.client_id, "4"),
        (lab.client_id, "8"),
    ]
    query = next(e for e in events[0]["entity"] if e["role"]["code"] == "24")
    assert query["description"] == "GET /fhir/$aggregates" and query["query"]  # the query asked, base64


def test_max_days_is_a_setting(secured_factory):
    server = secured_factory(aggregates_max_days=3)
    health = server.client_session(None, scope="system/*.read", role="public-health")
    start = (TODAY - timedelta(days=2)).isoformat()
    assert health.get("$aggregates", params={"from": start}).status_code == 200
    assert health.get("$aggregates").status_code == 400  # the default 90 days are more than 3
    assert Settings.from_env().aggregates_max_days == 366


# -- the web page ----------------------------------------------------------------------------------
def web_app(settings_for) -> object:
    app = create_app(settings_for)
    users = app.extensions["sidep.users"]
    add_user(users, "sante.publique", role="public-health", lab=None, name="Santé Publique")
    add_user(users, "operateur", role="operator", lab=None, name="Olivier Opérateur")
    add_user(users, "pharmacien", name="Pierre Pharmacien")
    items = list(synthetic_records(400, seed=21, days=60, end=TODAY))
    PseudonymisedRecords(app.extensions["sidep.store"].db).append(items)
    app.items = items
    return app


def secured_settings(mongo_uri, tmp_path, base_url="http://testserver/fhir") -> Settings:
    return Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url=base_url,
        var_dir=str(tmp_path / "var"),
        create_indexes=False,
        enforce_profiles=False,
        store_code_lists=False,
        auth_enabled=True,
        audit_flush_interval=0,
    )


def test_the_page_for_public_health_and_operators_only(mongo_uri, tmp_path):
    app = web_app(secured_settings(mongo_uri, tmp_path))
    health = Web(app).signed_in("sante.publique")
    page = health.get("/ui/aggregates?dep=75&test-type=naat")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'href="/ui/aggregates"' in html  # in the navigation
    shown = aggregates.daily(
        PseudonymisedRecords(app.extensions["sidep.store"].db),
        aggregates.parse_query({"dep": "75", "test-type": "naat"}, 366),
    )
    total = sum(d.T for d in shown)
    assert "Département 75, test PCR (TAAN), du " in text(page)
    assert f"{aggregate_chart.counted(total, 'test')}, dont" in text(page)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in html and "<?xml" not in html
    assert 'href="/ui/aggregates/data.csv?dep=75&amp;test-type=naat"' in html

    download = health.get("/ui/aggregates/data.csv?dep=75&test-type=naat")
    assert download.status_code == 200 and download.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert FILENAME.match(download.headers["Content-Disposition"])
    parsed = list(csv.DictReader(io.StringIO(download.get_data(as_text=True)), delimiter=";"))
    assert sum(int(r["T"]) for r in parsed if r["cl_age90"] == "0") == total
    drawing = health.get("/ui/aggregates/chart.svg")
    assert drawing.status_code == 200 and drawing.headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert ET.fromstring(drawing.get_data()).find(f"{SVG}desc").text.startswith("France entière, tous types de test")
    assert health.get("/ui/aggregates?dep=20").status_code == 400
    events = [d["res"] for d in app.extensions["sidep.store"].db["AuditEvent"].find().sort("ts", 1)]
    seen = [(e["source"]["site"], e["subtype"][0]["code"], e["outcome"]) for e in events]
    assert seen == [("SI-DEP web", "operation", "0")] * 3 + [("SI-DEP web", "operation", "4")]
    assert {e["agent"][0]["altId"] for e in events} == {"sante.publique"}

    assert Web(app).signed_in("operateur").get("/ui/aggregates").status_code == 200
    pharmacist = Web(app).signed_in("pharmacien")
    assert pharmacist.get("/ui/aggregates").status_code == 403
    assert pharmacist.get("/ui/aggregates/data.csv").status_code == 403
    assert 'href="/ui/aggregates"' not in pharmacist.get("/ui/results").get_data(as_text=True)


def test_weeks_count_back_from_the_last_day():
    from fhir_server.web.indicators import weeks

    days = [aggregates.Day(date(2026, 11, 1) + timedelta(days=n), 1, 10) for n in range(10)]
    assert [(w["start"].day, w["end"].day, w["T"], w["P"]) for w in weeks(days)] == [(1, 3, 30, 3), (4, 10, 70, 7)]


@pytest.fixture(scope="module")
def site(mongo_uri, tmp_path_factory):
    port = free_port()
    config = secured_settings(mongo_uri, tmp_path_factory.mktemp("web"), f"http://127.0.0.1:{port}/fhir")
    app = web_app(config)
    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    app.ui_url = f"http://127.0.0.1:{port}/ui"
    yield app
    http.shutdown()


def test_the_page_in_the_browser(site, browser):
    sign_in(browser, site, "sante.publique")
    browser.get(f"{site.ui_url}/aggregates")
    from selenium.webdriver.support.ui import Select

    Select(by_id(browser, "dep")).select_by_value("13")
    Select(by_id(browser, "test-type")).select_by_value("antigen")
    by_id(browser, "dep").submit()
    assert "dep=13" in browser.current_url and "Département 13, test antigénique" in by_id(browser, "resume").text
    chart = browser.find_element("css selector", "figure.graphique svg")
    assert chart.size["width"] > 600  # drawn at the page's width
    check_page(browser, "ui-aggregates")


def test_records_written_before_the_counts_were_kept_are_counted_once(store):
    items = list(synthetic_records(200, seed=13, days=20, end=TODAY))
    store.append(items)
    store.counts.delete_many({})  # a database of before the counts
    assert store.count_earlier_records() == 200
    assert store.count_earlier_records() == 0  # counted: not again
    query = aggregates.parse_query({}, max_days=366)
    assert as_table(aggregates.rows(store, query)) == expected_rows(items, query)


def test_a_restored_store_is_counted_once_loaded(store):
    items = list(synthetic_records(120, seed=14, days=20, end=TODAY))
    assert store.restore(items[:60]) == 60 and store.restore(items[60:]) == 120
    assert store.count_earlier_records() == 120
    query = aggregates.parse_query({}, max_days=366)
    assert as_table(aggregates.rows(store, query)) == expected_rows(items, query)
    assert [e["_id"] for e in store.after(0, 200)] == list(range(1, 121))
