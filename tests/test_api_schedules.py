"""The schedules through REST: create, preview, read, change, run, delete; 422 with a message for bad input."""

from __future__ import annotations

from nicegui.testing import User

from ehr_backup.audit import Actor

API = "/api/admin/backup"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_schedules_through_the_api(user: User, accounts) -> None:
    auth = bearer(accounts.create_token(Actor("t"), "alice"))
    http = user.http_client
    body = {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "description": "Nightly {date}",
            "policy": {"daily": 3, "weekly": 2, "monthly": 0, "yearly": 0}, "compression": "zstd"}
    made = await http.post(f"{API}/schedules", json=body, headers=auth)
    assert made.status_code == 201, made.text
    got = made.json()
    assert got["reading"] == "At 02:30, every day" and got["timezone"] == "Europe/Berlin"
    assert got["policy"]["daily"] == 3 and got["policy"]["timezone"] == "Europe/Berlin"
    assert len(got["nextRuns"]) == 5 and got["nextRuns"][0].endswith("T02:30:00+01:00")

    again = await http.post(f"{API}/schedules", json=body, headers=auth)
    assert again.status_code == 422 and "already exists" in again.json()["error"]
    for field, value, says in (("cron", "30 2 * *", "five fields"), ("timezone", "Mars/Olympus", "unknown time zone"),
                               ("description", "{date.__init__}", "unknown placeholder"),
                               ("name", "../x", "schedule name")):
        bad = await http.post(f"{API}/schedules", json={**body, "name": "other", field: value}, headers=auth)
        assert bad.status_code == 422 and says in bad.json()["error"], (field, bad.text)

    preview = await http.get(f"{API}/schedules/preview", params={"cron": "0 */6 * * 1-5", "timezone": "UTC",
                                                                 "description": "Every {time}"}, headers=auth)
    assert preview.status_code == 200
    assert preview.json()["reading"] == "Every 6 hours, Monday through Friday"
    assert len(preview.json()["nextRuns"]) == 5 and preview.json()["exampleDescription"].startswith("Every ")
    bad = await http.get(f"{API}/schedules/preview", params={"cron": "99 * * * *"}, headers=auth)
    assert bad.status_code == 422 and "out of range" in bad.json()["error"]

    changed = await http.patch(f"{API}/schedules/nightly", json={"enabled": False, "rotation": False}, headers=auth)
    assert changed.status_code == 200 and changed.json()["enabled"] is False and changed.json()["policy"] is None
    assert changed.json()["nextRuns"] == []
    assert (await http.patch(f"{API}/schedules/nightly", json={"bogus": 1}, headers=auth)).status_code == 422
    assert (await http.get(f"{API}/schedules/nope", headers=auth)).status_code == 404

    ran = await http.post(f"{API}/schedules/nightly/run", params={"wait": "true"}, headers=auth)
    assert ran.status_code == 200, ran.text
    assert ran.json()["kind"] == "scheduled" and ran.json()["schedule"] == "nightly"
    assert ran.json()["compression"] == "zstd" and ran.json()["createdBy"] == "scheduler"
    detail = (await http.get(f"{API}/schedules/nightly", headers=auth)).json()
    assert detail["runs"][0]["trigger"] == "manual" and detail["runs"][0]["status"] == "succeeded"
    listed = (await http.get(f"{API}/schedules", headers=auth)).json()["schedules"]
    assert [s["name"] for s in listed] == ["nightly"] and listed[0]["lastRun"]["status"] == "succeeded"

    gone = await http.delete(f"{API}/schedules/nightly", headers=auth)
    assert gone.status_code == 200 and gone.json() == {"removed": "nightly"}
    assert (await http.get(f"{API}/schedules", headers=auth)).json()["schedules"] == []
    backups = (await http.get(f"{API}/list", headers=auth)).json()["backups"]
    assert [b["schedule"] for b in backups] == ["nightly"]  # its backups stay


async def test_non_admins_cannot_touch_schedules(user: User, accounts) -> None:
    auth = bearer(accounts.create_token(Actor("t"), "bob"))
    for method, path in (("GET", "/schedules"), ("POST", "/schedules"), ("POST", "/schedules/x/run"),
                         ("DELETE", "/schedules/x"), ("GET", "/schedules/preview?cron=*")):
        res = await user.http_client.request(method, f"{API}{path}", json={}, headers=auth)
        assert res.status_code == 403, (method, path)
