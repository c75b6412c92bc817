"""The emergency recipe in docs/FORMAT.md decrypts a real backup with openssl and gunzip alone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ehr_backup.config import Settings
from ehr_backup.service import BackupService

from .conftest import ACTOR, run_sql
from .helpers import AWKWARD_SQL, dump_text

DOC = Path(__file__).parent.parent / "docs" / "FORMAT.md"


def recipe() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def run_recipe(tmp_path: Path, file: Path, key: str) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "emergency-decrypt.sh"
    script.write_text(recipe())
    return subprocess.run(["bash", str(script), str(file)], capture_output=True, env={"KEY": key, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("compression,key", [("gzip", None), ("zstd", None),
                                              ("gzip", "passphrase:correct horse battery staple"),
                                              ("gzip", "base64:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=")])
def test_the_documented_recipe_reproduces_the_dump_and_it_restores(
        tmp_path: Path, env: dict[str, str], make_db, compression: str, key: str | None) -> None:
    if key:
        env = {**env, "BACKUP_ENCRYPTION_KEY": key}
    svc = BackupService(Settings.from_env(env))
    run_sql(env["DATABASE_URL"], AWKWARD_SQL)
    record = svc.create(ACTOR, description="emergency", compression=compression)
    file = Path(record.directory) / record.id
    res = run_recipe(tmp_path, file, env["BACKUP_ENCRYPTION_KEY"])
    assert res.returncode == 0, res.stderr.decode()
    ours = tmp_path / "ours.sql"
    svc.decrypt_file(ACTOR, file, ours)
    assert res.stdout == ours.read_bytes()
    target = make_db()
    (tmp_path / "dump.sql").write_bytes(res.stdout)
    from ehr_backup.pg import ConnInfo
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f",
                    str(tmp_path / "dump.sql")], env=ConnInfo.parse(target).child_env(), check=True,
                   capture_output=True)
    assert dump_text(target) == dump_text(env["DATABASE_URL"])


def test_the_recipe_refuses_a_modified_file_and_a_wrong_key(tmp_path: Path, service: BackupService,
                                                             env: dict[str, str]) -> None:
    record = service.create(ACTOR, description="tampered")
    file = Path(record.directory) / record.id
    wrong = run_recipe(tmp_path, file, "hex:" + "11" * 32)
    assert wrong.returncode != 0 and b"NOT AUTHENTIC" in wrong.stderr and wrong.stdout == b""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 1
    file.write_bytes(bytes(data))
    res = run_recipe(tmp_path, file, env["BACKUP_ENCRYPTION_KEY"])
    assert res.returncode != 0 and b"NOT AUTHENTIC" in res.stderr and res.stdout == b""


def test_on_a_bare_server_psql_alone_loads_the_recipes_globals_and_dump(tmp_path: Path, service: BackupService,
                                                                       env: dict[str, str], cluster) -> None:
    role = "clinic_owner_" + env["DATABASE_URL"].rsplit("_", 1)[-1]
    run_sql(env["DATABASE_URL"], f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 7; CREATE TABLE visits (a int);"
                                 f"INSERT INTO visits VALUES (1), (2); ALTER TABLE visits OWNER TO {role};")
    try:
        record = service.create(ACTOR, description="for a bare server")
        file = Path(record.directory) / record.id
        globals_sql = subprocess.run(["bash", str(_script(tmp_path)), str(file)], capture_output=True,
                                     env={"KEY": env["BACKUP_ENCRYPTION_KEY"], "PART": "globals",
                                          "PATH": "/usr/bin:/bin"})
        assert globals_sql.returncode == 0, globals_sql.stderr.decode()
        assert f"CREATE ROLE {role};".encode() in globals_sql.stdout
        dump = run_recipe(tmp_path, file, env["BACKUP_ENCRYPTION_KEY"])
        (tmp_path / "globals.sql").write_bytes(globals_sql.stdout)
        (tmp_path / "dump.sql").write_bytes(dump.stdout)
        from ehr_backup.pg import ConnInfo
        bare = ConnInfo.parse(cluster.url())
        subprocess.run(["psql", "-X", "-q", "-f", str(tmp_path / "globals.sql")], env=bare.child_env(),
                       capture_output=True, check=True)  # "postgres" exists already: that error is expected
        run_sql(cluster.url(), "CREATE DATABASE clinic TEMPLATE template0")
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f",
                        str(tmp_path / "dump.sql")], env=bare.with_dbname("clinic").child_env(), check=True,
                       capture_output=True)
        from .conftest import query
        assert query(cluster.url("clinic"), "SELECT count(*), pg_get_userbyid(c.relowner) FROM visits, "
                                            "pg_class c WHERE c.relname = 'visits' GROUP BY 2") == [(2, role)]
        assert query(cluster.url(), f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{role}'") == [(7,)]
    finally:
        run_sql(env["DATABASE_URL"], f"DROP TABLE IF EXISTS visits; DROP ROLE IF EXISTS {role}")


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "emergency-decrypt.sh"
    script.write_text(recipe())
    return script
