"""Database profiles through REST: add, list, test, remove; `database` on create, restore, list and status."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from nicegui.testing import User

from ehr_backup.audit import Actor

from .conftest import run_sql

API = "/api/admin/backup"


def _bearer(accounts) -> dict[str, str]:
    return {"Authorization": f"Bearer {accounts.create_token(Actor('t'), 'alice')}"}


async def test_profiles_through_rest_and_a_backup_of_one(user: User, accounts, make_db: Callable[[str], str]) -> None:
    h = _bearer(accounts)
    url = make_db(f"prof_api_{uuid.uuid4().hex[:10]}")
    run_sql(url, "CREATE TABLE notes (id int); INSERT INTO notes VALUES (1), (2)")
    bad = await user.http_client.post(f"{API}/databases", json={"name": "site-b", "url": url.replace(
        "postgres@", "postgres:topsecret@")}, headers=h)
    assert bad.status_code == 422 and "holds a password" in bad.json()["error"]
    assert "topsecret" not in bad.text
    r = await user.http_client.post(f"{API}/databases", json={"name": "site-b", "url": url, "password": "pw-9"},
                                    headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["passwordSource"] == "stored encrypted" and "pw-9" not in r.text
    listed = (await user.http_client.get(f"{API}/databases", headers=h)).json()["databases"]
    assert [p["name"] for p in listed] == ["default", "site-b"]
    tested = await user.http_client.post(f"{API}/databases/site-b/test", headers=h)
    assert tested.status_code == 200 and tested.json()["ok"], tested.text
    made = await user.http_client.post(f"{API}/create?wait=true", json={"description": "b", "database": "site-b"},
                                       headers=h)
    assert made.status_code == 200, made.text
    assert made.json()["profile"] == "site-b" and made.json()["tableRowCounts"] == {"public.notes": 2}
    page = (await user.http_client.get(f"{API}/list?database=site-b&limit=10", headers=h)).json()
    assert [b["id"] for b in page["backups"]] == [made.json()["id"]]
    assert (await user.http_client.get(f"{API}/list?database=default&limit=10", headers=h)).json()["total"] == 0
    status = (await user.http_client.get(f"{API}/status?database=site-b", headers=h)).json()
    assert [d["profile"] for d in status["databases"]] == ["site-b"]
    run_sql(url, "DELETE FROM notes")
    restored = await user.http_client.post(f"{API}/restore?wait=true", json={"backupId": made.json()["id"]},
                                           headers=h)
    assert restored.status_code == 200, restored.text
    from .conftest import query
    assert query(url, "SELECT count(*) FROM notes") == [(2,)]  # into its own profile's database
    unknown = await user.http_client.post(f"{API}/create", json={"description": "x", "database": "nowhere"},
                                          headers=h)
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    gone = await user.http_client.delete(f"{API}/databases/site-b", headers=h)
    assert gone.status_code == 200
    assert (await user.http_client.delete(f"{API}/databases/site-b", headers=h)).status_code == 404
