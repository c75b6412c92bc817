"""S3 destinations against a real S3 server process (moto_server on 127.0.0.1): add, list, test connection
(good credentials, wrong credentials, a missing bucket, a missing permission, an unreachable endpoint), and
the command line that drives them. Secrets are never shown again, logged or audited."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ehr_backup.destinations.plan import split
from ehr_backup.destinations.store import check_name, check_settings
from ehr_backup.errors import InvalidInput

from .conftest import _free_port, cli_env


def cli(env: dict[str, str], *args: str, input_: str | None = None,
        extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ehr_backup.cli", *args], env={**cli_env(env), **(extra or {})},
                          capture_output=True, text=True, input=input_, timeout=300)


def add(env: dict[str, str], s3_server, name: str, bucket: str, user: str = "full", *more: str):
    key_id, secret = s3_server.keys.get(user, (user, "not-the-secret-xyz"))
    return cli(env, "destination", "add", name, "--s3", "--bucket", bucket, "--endpoint-url", s3_server.url,
               "--path-style", "--access-key-id", key_id, "--secret-env", "S3_TEST_SECRET", *more, "--json",
               extra={"S3_TEST_SECRET": secret})


# ----- pure checks ------------------------------------------------------------------------------------------
def test_settings_are_checked_field_by_field() -> None:
    st = check_settings(bucket="ehr-backups", prefix="nightly", region="eu-west-1", storage_class="STANDARD_IA")
    assert st.prefix == "nightly/" and st.region == "eu-west-1"
    for bad, field in (({"bucket": "A"}, "bucket"), ({"bucket": "ok-bucket", "prefix": "../etc"}, "prefix"),
                       ({"bucket": "ok-bucket", "prefix": "/abs"}, "prefix"),
                       ({"bucket": "ok-bucket", "endpoint_url": "ftp://x"}, "endpoint URL"),
                       ({"bucket": "ok-bucket", "endpoint_url": "http://user:pw@host"}, "endpoint URL"),
                       ({"bucket": "ok-bucket", "region": "EU west"}, "region"),
                       ({"bucket": "ok-bucket", "storage_class": "glacier; rm"}, "storage class")):
        with pytest.raises(InvalidInput, match=field):
            check_settings(**bad)


def test_destination_names_are_short_and_never_a_local_location() -> None:
    assert check_name("offsite-1") == "offsite-1"
    for bad in ("default", "custom", "", "Has Space", "../x", "x" * 64):
        with pytest.raises(InvalidInput):
            check_name(bad)


def test_destinations_split_into_the_local_location_and_the_remote_ones() -> None:
    assert split([], "desktop") == ("desktop", [])
    assert split(["default", "offsite"], "default") == ("default", ["offsite"])
    assert split(["documents", "a", "b"], "default") == ("documents", ["a", "b"])
    with pytest.raises(InvalidInput, match="one local location"):
        split(["default", "desktop"], "default")
    with pytest.raises(InvalidInput, match="twice"):
        split(["a", "a"], "default")


# ----- against the S3 server ----------------------------------------------------------------------------------
def test_add_list_test_remove_with_stored_credentials_never_shown(env: dict[str, str], s3_server) -> None:
    bucket = s3_server.bucket()
    res = add(env, s3_server, "offsite", bucket, "full", "--prefix", "ehr/nightly", "--sse")
    assert res.returncode == 0, res.stderr
    added = json.loads(res.stdout)
    assert added["bucket"] == bucket and added["prefix"] == "ehr/nightly/" and added["credentials"] == "stored"
    secret = s3_server.keys["full"][1]
    listed = cli(env, "destination", "list", "--json")
    assert [d["name"] for d in json.loads(listed.stdout)["destinations"]] == ["offsite"]
    assert secret not in listed.stdout and secret not in res.stdout + res.stderr
    tested = cli(env, "destination", "test", "offsite", "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    result = json.loads(tested.stdout)
    assert result["ok"] is True and [c["name"] for c in result["checks"]] == ["list", "write", "read", "delete"]
    assert s3_server.keys_in(bucket) == []  # the probe object is gone again
    human = cli(env, "destination", "list")
    assert "offsite" in human.stdout and "credentials: stored" in human.stdout
    made = cli(env, "create", "--description", "cli copy", "--destination", "offsite", "--json")
    assert made.returncode == 0, made.stderr
    backup = json.loads(made.stdout)
    assert [(c["destination"], c["status"]) for c in backup["copies"]] == [("default", "ok"), ("offsite", "ok")]
    assert s3_server.keys_in(bucket) == [f"ehr/nightly/{backup['id']}"]
    checked = cli(env, "verify", backup["id"], "--destination", "offsite")
    assert checked.returncode == 0 and "authentic, dump complete" in checked.stdout, checked.stderr
    listed_human = cli(env, "list").stdout
    assert f"copy: offsite ok s3://{bucket}/ehr/nightly/{backup['id']}" in listed_human
    assert cli(env, "copy", backup["id"], "--to", "offsite").returncode == 0
    rotation = json.loads(cli(env, "destination", "prune", "offsite", "--dry-run", "--json").stdout)
    assert [d["id"] for d in rotation["keep"]] == [backup["id"]] and rotation["deleted"] == []
    assert cli(env, "delete", backup["id"], "--yes").returncode == 0
    assert s3_server.keys_in(bucket) == []
    assert cli(env, "destination", "remove", "offsite").returncode == 2  # needs --yes
    assert cli(env, "destination", "remove", "offsite", "--yes").returncode == 0
    assert json.loads(cli(env, "destination", "list", "--json").stdout)["destinations"] == []
    audit = cli(env, "audit", "export", "--csv", "/dev/stdout").stdout
    assert "destination.add" in audit and "destination.test" in audit and "destination.remove" in audit
    assert secret not in audit
    assert json.loads(cli(env, "audit", "verify", "--json").stdout)["ok"] is True


def test_wrong_credentials_are_named(env: dict[str, str], s3_server) -> None:
    bucket = s3_server.bucket()
    assert add(env, s3_server, "wrong", bucket, "AKIANOTAREALKEY").returncode == 0
    res = cli(env, "destination", "test", "wrong")
    assert res.returncode == 1
    assert "credentials were refused (InvalidAccessKeyId)" in res.stderr
    assert "FAIL list" in res.stdout


def test_a_missing_bucket_is_named(env: dict[str, str], s3_server) -> None:
    assert add(env, s3_server, "nobucket", "no-such-bucket-here").returncode == 0
    res = cli(env, "destination", "test", "nobucket", "--json")
    assert res.returncode == 1
    result = json.loads(res.stdout)
    assert result["ok"] is False and "the bucket no-such-bucket-here does not exist" in result["message"]


def test_a_missing_permission_is_named(env: dict[str, str], s3_server) -> None:
    bucket = s3_server.bucket()
    assert add(env, s3_server, "ro", bucket, "readonly").returncode == 0
    result = json.loads(cli(env, "destination", "test", "ro", "--json").stdout)
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["list"]["ok"] is True and checks["write"]["ok"] is False
    assert "permission denied for writing a probe object (s3:PutObject)" in result["message"]
    assert "not tried: read, delete" in result["message"]


def test_an_unreachable_endpoint_is_named(env: dict[str, str], s3_server) -> None:
    port = _free_port()  # nothing listens here
    res = cli(env, "destination", "add", "gone", "--s3", "--bucket", "some-bucket", "--endpoint-url",
              f"http://127.0.0.1:{port}", "--path-style", "--access-key-id", "AKIAXXXX", "--secret-env", "S",
              extra={"S": "secret-value"})
    assert res.returncode == 0, res.stderr
    res = cli(env, "destination", "test", "gone")
    assert res.returncode == 1 and f"http://127.0.0.1:{port} is unreachable" in res.stderr


def test_credentials_from_the_standard_aws_chain(env: dict[str, str], s3_server) -> None:
    bucket = s3_server.bucket()
    res = cli(env, "destination", "add", "chain", "--s3", "--bucket", bucket, "--endpoint-url", s3_server.url,
              "--path-style", "--json")
    assert json.loads(res.stdout)["credentials"] == "AWS chain"
    key_id, secret = s3_server.keys["full"]
    ok = cli(env, "destination", "test", "chain", extra={"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = cli(env, "destination", "test", "chain", extra={"AWS_ACCESS_KEY_ID": "AKIAOTHER",
                                                              "AWS_SECRET_ACCESS_KEY": "x"})
    assert refused.returncode == 1 and "credentials were refused" in refused.stderr


def test_bad_input_is_refused_and_audited(env: dict[str, str], s3_server) -> None:
    res = cli(env, "destination", "add", "default", "--s3", "--bucket", "ok-bucket")
    assert res.returncode == 2 and "local location" in res.stderr
    res = cli(env, "destination", "add", "x", "--s3", "--bucket", "Bad_Bucket")
    assert res.returncode == 2 and "bucket:" in res.stderr
    assert cli(env, "destination", "test", "nope").returncode == 1
    assert "refused" in cli(env, "audit", "export", "--csv", "/dev/stdout").stdout


def test_the_table_row_shows_the_copies_and_a_degraded_backup() -> None:
    from datetime import UTC, datetime

    from pages.backups_table import table_row

    b = {"id": "backup_x", "description": "d", "status": "completed", "verifyOk": True, "origin": "created",
         "kind": "manual", "createdAt": "2026-11-30T00:00:00.000Z", "size": 10, "location": "default",
         "path": "/b/backup_x", "verifiedAt": "2026-11-30T00:00:00.000Z", "verifyMessage": "", "keptBy": [],
         "database": "ehr", "createdBy": "alice", "pinned": False, "pinReason": None,
         "degraded": True, "copies": [{"destination": "default", "status": "ok"},
                                      {"destination": "offsite", "status": "ok"},
                                      {"destination": "second", "status": "failed"}]}
    row = table_row(b, datetime(2026, 11, 30, tzinfo=UTC))
    assert row["stateLabel"].endswith("· degraded") and row["stateColor"] == "brown-8"
    assert row["locationLabel"] == "Default + offsite ✓ + second ✗ failed"


def test_an_alert_holds_while_the_newest_backup_of_a_database_has_a_failed_copy() -> None:
    from datetime import UTC, datetime, timedelta

    from ehr_backup.destinations.copies import failed_copies
    from ehr_backup.destinations.tables import BackupCopy
    from ehr_backup.models import BackupRecord

    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def rec(n: int, db: str = "ehr") -> BackupRecord:
        return BackupRecord(id=f"b{n}", location="default", directory="/b", status="completed", database=db,
                            created_at=t0 + timedelta(days=n))

    def copy(n: int, status: str, dest: str = "offsite") -> BackupCopy:
        return BackupCopy(id=n, backup_id=f"b{n}", destination=dest, uri="s3://x/y", status=status,
                          error="unreachable" if status == "failed" else None, created_at=t0 + timedelta(days=n))

    records = [rec(2), rec(1), rec(3, "other")]
    assert failed_copies(records, [copy(1, "ok"), copy(2, "failed"), copy(3, "ok")]) == [
        {"database": "ehr", "destination": "offsite", "backupId": "b2", "status": "failed", "error": "unreachable",
         "at": t0 + timedelta(days=2)}]
    assert failed_copies(records, [copy(1, "failed"), copy(2, "ok")]) == []  # a newer good copy resolves it


def test_a_destination_never_shows_its_secret_in_a_repr() -> None:
    from ehr_backup.destinations.store import Target

    target = Target("x", check_settings(bucket="ok-bucket"), ("AKIAEXAMPLE", "very-secret-value"))
    assert "very-secret-value" not in repr(target) and "very-secret-value" not in str(target)
