"""Destinations and copies through the REST API, against a real S3 server process (moto_server)."""

from __future__ import annotations

from nicegui.testing import User

from ehr_backup.audit import Actor

from .conftest import run_sql

API = "/api/admin/backup"


async def test_destinations_through_the_api(user: User, accounts, web_env, s3_server) -> None:
    h = {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}
    run_sql(web_env["DATABASE_URL"], "CREATE TABLE t AS SELECT generate_series(1, 50) g;")
    bucket = s3_server.bucket()
    key_id, secret = s3_server.keys["full"]
    body = {"name": "offsite", "bucket": bucket, "prefix": "api", "endpointUrl": s3_server.url, "pathStyle": True,
            "accessKeyId": key_id, "secretAccessKey": secret}
    r = await user.http_client.post(f"{API}/destinations", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["credentials"] == "stored" and secret not in r.text
    listed = await user.http_client.get(f"{API}/destinations", headers=h)
    assert [d["name"] for d in listed.json()["destinations"]] == ["offsite"] and secret not in listed.text
    bad = await user.http_client.post(f"{API}/destinations", json={**body, "name": "x", "bucket": "No"}, headers=h)
    assert bad.status_code == 422 and "bucket" in bad.json()["error"]
    t = await user.http_client.post(f"{API}/destinations/offsite/test", headers=h)
    assert t.status_code == 200 and t.json()["ok"] is True
    missing = await user.http_client.post(f"{API}/destinations/nope/test", headers=h)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    c = await user.http_client.post(f"{API}/create?wait=true", json={"description": "api", "destinations": ["offsite"]},
                                    headers=h)
    assert c.status_code == 200, c.text
    backup = c.json()
    assert [(x["destination"], x["status"]) for x in backup["copies"]] == [("default", "ok"), ("offsite", "ok")]
    assert s3_server.keys_in(bucket) == [f"api/{backup['id']}"]
    unknown = await user.http_client.post(f"{API}/copy", json={"backupId": backup["id"], "to": "nowhere"}, headers=h)
    assert unknown.status_code == 404
    again = await user.http_client.post(f"{API}/copy", json={"backupId": backup["id"], "to": "offsite"}, headers=h)
    assert again.status_code == 200 and again.json()["sha256"] == backup["sha256"]
    gone = await user.http_client.delete(f"{API}/destinations/offsite", headers=h)
    assert gone.status_code == 200 and gone.json() == {"removed": "offsite"}
    assert (await user.http_client.get(f"{API}/destinations", headers=h)).json() == {"destinations": []}
