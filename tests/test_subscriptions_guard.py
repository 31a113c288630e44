"""Subscriptions (fhir_server/subscriptions.py): who may subscribe to what, that a Subscription is
its creator's alone, what a stored one may say, and that its channel headers never come back."""

from __future__ import annotations

import pytest

from tests.test_auth_access import LAB_A, LAB_B, not_there, refused

SECRET = "Bearer s3cr3t-t0ken-of-lab"
RESULTS = "system/*.read system/*.write"


def subscription(criteria="Observation?status=final", endpoint="https://hooks.example.org/notify", **extra) -> dict:
    channel = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}
    channel["header"] = [f"Authorization: {SECRET}"]
    resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Résultats à transmettre",
        "criteria": criteria,
        "channel": channel,
    }
    for key, value in extra.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return resource


def with_channel(**changes) -> dict:
    resource = subscription()
    channel = {**resource["channel"], **changes}
    resource["channel"] = {k: v for k, v in channel.items() if v is not None}
    return resource


def unprocessable(response, expression: str) -> None:
    """Refused at the element: 400 where R4 itself forbids it (a code outside a required binding),
    422 for this server's rules."""
    assert response.status_code in (400, 422), response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expression in outcome["issue"][0].get("expression", []), outcome


@pytest.fixture
def labs(secured):
    return secured, secured.client_session(LAB_A), secured.client_session(LAB_B)


def created(session, resource=None) -> dict:
    response = session.post("Subscription", json=resource or subscription())
    assert response.status_code == 201, response.text
    return response.json()


def stored(secured, rid: str) -> dict:
    return secured.store.current("Subscription", rid).resource


def test_the_creator_reads_its_subscription_with_the_headers_masked(labs):
    secured, a, _ = labs
    mine = created(a)
    assert mine["channel"]["header"] == ["Authorization: ***"]
    assert stored(secured, mine["id"])["channel"]["header"] == [f"Authorization: {SECRET}"]  # kept for delivery
    answers = [
        a.get(f"Subscription/{mine['id']}"),
        a.get(f"Subscription/{mine['id']}/_history/1"),
        a.get(f"Subscription/{mine['id']}/_history"),
        a.get("Subscription/_history"),
        a.get("Subscription", params={"_id": mine["id"]}),
        a.post(
            "",
            json={
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": f"Subscription/{mine['id']}"}}],
            },
        ),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        assert SECRET not in response.text and "s3cr3t" not in response.text
        assert "Authorization: ***" in response.text


def test_a_masked_header_sent_back_keeps_its_stored_value(labs):
    secured, a, _ = labs
    mine = created(a)
    mine["reason"] = "Autre motif"
    assert a.put(f"Subscription/{mine['id']}", json=mine).status_code == 200
    assert stored(secured, mine["id"])["channel"]["header"] == [f"Authorization: {SECRET}"]


def test_another_laboratory_s_subscription_is_missing_for_it(labs):
    secured, a, b = labs
    mine = created(a)
    created(b)
    rid = mine["id"]
    not_there(b.get(f"Subscription/{rid}"), "Subscription", rid)
    not_there(b.get(f"Subscription/{rid}/_history/1"), "Subscription", rid)
    not_there(b.get(f"Subscription/{rid}/_history"), "Subscription", rid)
    assert b.get("Subscription", params={"_summary": "count"}).json()["total"] == 1
    assert rid not in b.get("Subscription").text
    assert a.get("Subscription", params={"_summary": "count"}).json()["total"] == 1
    not_there(b.put(f"Subscription/{rid}", json={**subscription(), "id": rid}), "Subscription", rid)
    b.delete(f"Subscription/{rid}")
    assert a.get(f"Subscription/{rid}").status_code == 200  # still there, unchanged
    assert secured.store.current("Subscription", rid).version == 1


def test_public_health_sees_every_result_but_only_its_own_subscriptions(labs):
    secured, a, _ = labs
    health = secured.client_session(None, RESULTS, role="public-health")
    operator = secured.client_session(None, "system/*.*", role="operator")
    mine = created(a)
    theirs = created(health, subscription("DiagnosticReport?status=final"))
    not_there(health.get(f"Subscription/{mine['id']}"), "Subscription", mine["id"])
    assert health.get("Subscription", params={"_summary": "count"}).json()["total"] == 1
    assert health.get(f"Subscription/{theirs['id']}").status_code == 200
    assert mine["id"] not in health.get("_history").text
    # operators manage every Subscription, and see no secret either
    every = operator.get("Subscription")
    assert every.json()["total"] == 2 and SECRET not in every.text
    assert operator.delete(f"Subscription/{mine['id']}").status_code in (200, 204)


def test_a_dmp_connector_may_subscribe_to_results(secured):
    dmp = secured.client_session(None, RESULTS, role="dmp-connector")
    assert created(dmp, subscription("DiagnosticReport?status=final"))["status"] == "requested"
    refused(dmp.post("Subscription", json=subscription("Patient?family=x")))


def test_what_a_role_or_its_scopes_do_not_cover_is_refused(labs):
    secured, a, _ = labs
    refused(a.post("Subscription", json=subscription("Patient?gender=female")))
    refused(a.post("Subscription", json=subscription("AuditEvent?type=rest")))
    narrow = secured.client_session(LAB_A, "system/DiagnosticReport.rs system/Subscription.cruds")
    refused(narrow.post("Subscription", json=subscription("Observation?status=final")))
    assert narrow.post("Subscription", json=subscription("DiagnosticReport?status=final")).status_code == 201
    no_scope = secured.client_session(LAB_A, "system/Observation.read")
    refused(no_scope.post("Subscription", json=subscription()))


def test_the_server_alone_sets_the_status(labs):
    secured, a, _ = labs
    unprocessable(a.post("Subscription", json=subscription(status="active")), "Subscription.status")
    mine = created(a)
    assert stored(secured, mine["id"])["status"] == "requested"
    unprocessable(a.put(f"Subscription/{mine['id']}", json={**mine, "status": "active"}), "Subscription.status")
    patch = [{"op": "replace", "path": "/status", "value": "active"}]
    response = a.patch(
        f"Subscription/{mine['id']}", json=patch, headers={"Content-Type": "application/json-patch+json"}
    )
    unprocessable(response, "Subscription.status")
    assert stored(secured, mine["id"])["status"] == "requested"


def test_a_transaction_entry_is_held_to_the_same_rules(labs):
    _, a, _ = labs
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": subscription(status="active"), "request": {"method": "POST", "url": "Subscription"}}],
    }
    unprocessable(a.post("", json=bundle), "Subscription.status")
    assert a.get("Subscription", params={"_summary": "count"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (with_channel(type="carrier-pigeon"), "Subscription.channel.type"),
        (with_channel(endpoint=None), "Subscription.channel.endpoint"),
        (with_channel(endpoint="not a url"), "Subscription.channel.endpoint"),
        (with_channel(endpoint="ftp://hooks.example.org/x"), "Subscription.channel.endpoint"),
        (with_channel(endpoint="http://hooks.example.org/x"), "Subscription.channel.endpoint"),
        (with_channel(endpoint="http://127.0.0.1:9/x"), "Subscription.channel.endpoint"),
        (with_channel(endpoint="https://user:pw@hooks.example.org/x"), "Subscription.channel.endpoint"),
        (with_channel(payload="text/plain"), "Subscription.channel.payload"),
        (with_channel(header=["no colon here"]), "Subscription.channel.header[0]"),
        (with_channel(header=["Bad Name: x"]), "Subscription.channel.header[0]"),
        (with_channel(header=["X-Ok: a\r\nX-Injected: b"]), "Subscription.channel.header[0]"),
        (subscription("NotAType?foo=bar"), "Subscription.criteria"),
        (subscription("Observation?foo=bar"), "Subscription.criteria"),
        (subscription("Observation?_count=5"), "Subscription.criteria"),
        (subscription("Observation?date=notadate"), "Subscription.criteria"),
    ],
)
def test_what_a_subscription_may_not_say_is_refused_at_its_element(labs, resource, expression):
    secured, a, _ = labs
    response = a.post("Subscription", json=resource)
    unprocessable(response, expression)
    assert "s3cr3t" not in response.text
    assert secured.store.count("Subscription", {}) == 0


def test_status_bogus_and_a_missing_reason_are_not_r4_and_a_past_end_is(labs):
    _, a, _ = labs
    assert created(a, subscription(end="2001-01-01T00:00:00Z"))["status"] == "requested"
    assert a.post("Subscription", json=subscription(reason=None)).status_code == 400
    assert a.post("Subscription", json=subscription(status="bogus")).status_code in (400, 422)


def test_supported_parameters_are_accepted(labs):
    _, a, _ = labs
    for criteria in (
        "Observation",
        "Observation?code=http://loinc.org|94500-6&status=final",
        "Observation?subject.identifier=urn:oid:1.2.250.1.213.1.4.8|123",
        "Observation?value-concept:missing=false",
        "DiagnosticReport?issued=ge2026-01-01&_lastUpdated=gt2026-01-01T00:00:00Z",
    ):
        created(a, subscription(criteria))


def test_loopback_http_endpoints_with_the_setting(secured_factory):
    server = secured_factory(subscription_allow_http_loopback=True)
    a = server.client_session(LAB_A)
    for endpoint in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x"):
        created(a, with_channel(endpoint=endpoint))
    unprocessable(
        a.post("Subscription", json=with_channel(endpoint="http://hooks.example.org/x")),
        "Subscription.channel.endpoint",
    )


def test_headers_are_masked_without_auth_too(client):
    response = client.post("/fhir/Subscription", json=subscription())
    assert response.status_code == 201, response.get_data(as_text=True)
    read = client.get(f"/fhir/Subscription/{response.get_json()['id']}")
    assert SECRET not in read.get_data(as_text=True)
    assert read.get_json()["channel"]["header"] == ["Authorization: ***"]


def test_a_patch_cannot_test_a_header_s_secret_and_keeps_it(labs):
    secured, a, _ = labs
    mine = created(a)
    patch_type = {"Content-Type": "application/json-patch+json"}
    guess = [{"op": "test", "path": "/channel/header/0", "value": f"Authorization: {SECRET}"}]
    assert a.patch(f"Subscription/{mine['id']}", json=guess, headers=patch_type).status_code == 422
    change = [{"op": "replace", "path": "/reason", "value": "Autre motif"}]
    assert a.patch(f"Subscription/{mine['id']}", json=change, headers=patch_type).status_code == 200
    assert stored(secured, mine["id"])["channel"]["header"] == [f"Authorization: {SECRET}"]
