"""A demo PostgreSQL cluster of our own, with a small synthetic EHR database, for trying the product."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from . import pg
from .errors import ConfigError, ToolError
from .keys import generate_key

DB_NAME = "ehr_demo"
DB_USER = "ehr_admin"
INSTALL_HINT = ("PostgreSQL server programs (initdb, pg_ctl) were not found: install them, e.g. "
                "`apt-get install postgresql` (Debian/Ubuntu) or `dnf install postgresql-server`, "
                "or set DATABASE_URL to an existing database")

SCHEMA_SQL = r"""
CREATE TABLE patients (
  id bigserial PRIMARY KEY, mrn text UNIQUE NOT NULL, family_name text NOT NULL, given_name text NOT NULL,
  birth_date date NOT NULL, sex char(1) CHECK (sex IN ('F','M','X')), created_at timestamptz DEFAULT now());
CREATE TABLE encounters (
  id bigserial PRIMARY KEY, patient_id bigint NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
  kind text NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz, clinician text);
CREATE TABLE observations (
  id bigserial PRIMARY KEY, encounter_id bigint NOT NULL REFERENCES encounters(id) ON DELETE CASCADE,
  code text NOT NULL, value numeric, unit text, observed_at timestamptz NOT NULL);
CREATE TABLE notes (
  id bigserial PRIMARY KEY, encounter_id bigint NOT NULL REFERENCES encounters(id) ON DELETE CASCADE,
  author text NOT NULL, body text NOT NULL, written_at timestamptz NOT NULL);
CREATE TABLE documents (
  id bigserial PRIMARY KEY, patient_id bigint NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
  title text NOT NULL, mime_type text NOT NULL, content bytea NOT NULL, added_at timestamptz NOT NULL);
CREATE INDEX ON encounters (patient_id);
CREATE INDEX ON observations (encounter_id);
CREATE INDEX ON notes (encounter_id);

INSERT INTO patients (mrn, family_name, given_name, birth_date, sex)
SELECT 'MRN' || lpad(g::text, 7, '0'),
       (ARRAY['Okafor','Müller','García','Nguyen','Smith','Kowalski','Haddad','Tanaka','O''Brien','Silva'])[1 + g % 10],
       (ARRAY['Ada','Björn','Chloé','Dmitri','Esi','Farah','Gus','Hana','Ivan','Jun'])[1 + (g * 7) % 10],
       date '1940-01-01' + (g * 37) % 29000, (ARRAY['F','M','X'])[1 + g % 3]
FROM generate_series(1, 500) g;
INSERT INTO encounters (patient_id, kind, started_at, ended_at, clinician)
SELECT 1 + g % 500, (ARRAY['outpatient','inpatient','emergency','telehealth'])[1 + g % 4],
       timestamptz '2024-01-01' + g * interval '97 minutes',
       timestamptz '2024-01-01' + g * interval '97 minutes' + interval '40 minutes', 'Dr. ' || (g % 23)
FROM generate_series(1, 2000) g;
INSERT INTO observations (encounter_id, code, value, unit, observed_at)
SELECT 1 + g % 2000, (ARRAY['8867-4','8480-6','8462-4','29463-7','8310-5'])[1 + g % 5],
       round((40 + (g * 13) % 120)::numeric, 1), (ARRAY['/min','mm[Hg]','mm[Hg]','kg','Cel'])[1 + g % 5],
       timestamptz '2024-01-01' + g * interval '19 minutes'
FROM generate_series(1, 8000) g;
INSERT INTO notes (encounter_id, author, body, written_at)
SELECT 1 + g % 2000, 'Dr. ' || (g % 23),
       'Patient seen for follow-up. Vitals stable. Plan: continue current medication; review in '
       || (g % 12 + 1) || ' weeks.', timestamptz '2024-01-01' + g * interval '211 minutes'
FROM generate_series(1, 1500) g;
INSERT INTO documents (patient_id, title, mime_type, content, added_at)
SELECT 1 + g % 500, 'Scan ' || g, 'application/octet-stream',
       decode(repeat(md5(g::text), 64), 'hex'), timestamptz '2024-01-01' + g * interval '1 day'
FROM generate_series(1, 200) g;
"""


def _dir(data_dir: Path) -> Path:
    return data_dir / "demo"


def _state_path(data_dir: Path) -> Path:
    return _dir(data_dir) / "state.json"


def _state(data_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_state_path(data_dir).read_text()))
    except (OSError, ValueError):
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def database_url(data_dir: Path) -> str | None:
    """The demo database's URL, if a demo cluster has been set up here."""
    state = _state(data_dir)
    return str(state["url"]) if state else None


def pgdata_dir(data_dir: Path) -> Path | None:
    """The demo cluster's data directory, if set up."""
    state = _state(data_dir)
    return Path(state["pgdata"]) if state else None


def demo_key(data_dir: Path) -> str:
    """The demo's encryption key, generated once and kept 0600 in the data directory."""
    path = _dir(data_dir) / "demo.key"
    if not path.exists():
        _write_private(path, generate_key() + "\n")
    return path.read_text().strip()


def find_server_bin() -> Path:
    """The newest PostgreSQL server bin directory (with initdb and pg_ctl)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"),
                  key=lambda d: [int(x) for x in re.findall(r"\d+", d)], reverse=True)
    for d in dirs:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    raise ToolError(INSTALL_HINT)


def _run_as() -> str | None:
    """As root, the unprivileged user that runs the server (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ToolError("running as root, but no unprivileged user (postgres) exists to run the demo server")


def _cluster_base(data_dir: Path, user: str | None) -> Path:
    if user is None:
        return _dir(data_dir) / "cluster"
    # root's home is not reachable by the server's user, so the cluster lives outside it
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"ehr-backup-demo-{tag}"


def _cmd(argv: list[str], user: str | None, **kw: Any) -> subprocess.CompletedProcess[str]:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=pg.base_child_env(), cwd="/", **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _running(bindir: Path, pgdata: Path, user: str | None) -> bool:
    return _cmd([str(bindir / "pg_ctl"), "-D", str(pgdata), "status"], user).returncode == 0


def _start(bindir: Path, state: dict[str, Any], user: str | None) -> None:
    base = Path(state["base"])
    if not _port_free(int(state["port"])):
        state["port"] = _free_port()
    opts = (f"-c port={state['port']} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={base}")
    res = _cmd([str(bindir / "pg_ctl"), "-D", state["pgdata"], "-l", str(base / "server.log"), "-w", "-t", "60",
                "-o", opts, "start"], user)
    if res.returncode != 0:
        raise ToolError(f"the demo PostgreSQL server did not start: {(res.stderr or res.stdout).strip()[:300]}"
                        f" (log: {base / 'server.log'})")


def ensure_running(data_dir: Path) -> str | None:
    """Start the demo server if it is set up but stopped; return its URL (None: no demo here)."""
    state = _state(data_dir)
    if state is None:
        return None
    bindir = Path(state["bindir"]) if Path(state.get("bindir", "")).exists() else find_server_bin()
    user = _run_as()
    if not _running(bindir, Path(state["pgdata"]), user):
        old_port = state["port"]
        _start(bindir, state, user)
        if state["port"] != old_port:
            state["url"] = _url(state["password"], int(state["port"]))
            _write_private(_state_path(data_dir), json.dumps(state))
    return str(state["url"])


def _url(password: str, port: int) -> str:
    return f"postgresql://{DB_USER}:{password}@127.0.0.1:{port}/{DB_NAME}"


def start(data_dir: Path) -> dict[str, Any]:
    """Start (or reuse) the demo cluster; create and fill the demo database the first time."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = _state(data_dir)
    if existing and Path(existing["pgdata"], "PG_VERSION").exists():
        url = ensure_running(data_dir)
        return {"url": url, "created": False, "pgdata": existing["pgdata"], "keyFile": str(_dir(data_dir) / "demo.key")}
    bindir = find_server_bin()
    user = _run_as()
    base = _cluster_base(data_dir, user)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(mode=0o700, parents=True)
    pgdata = base / "pgdata"
    password = secrets.token_urlsafe(24)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if user:
        info = pwd.getpwnam(user)
        for p in (base, pwfile):
            os.chown(p, info.pw_uid, info.pw_gid)
    try:
        res = _cmd([str(bindir / "initdb"), "-D", str(pgdata), "-U", DB_USER, "-A", "scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"], user, timeout=300)
    finally:
        pwfile.unlink(missing_ok=True)
    if res.returncode != 0:
        raise ToolError(f"initdb failed: {(res.stderr or res.stdout).strip()[:300]}")
    state = {"url": "", "pgdata": str(pgdata), "base": str(base), "bindir": str(bindir), "port": _free_port(),
             "password": password}
    _start(bindir, state, user)
    state["url"] = _url(password, int(state["port"]))
    _load(state)
    _write_private(_state_path(data_dir), json.dumps(state))
    demo_key(data_dir)
    return {"url": state["url"], "created": True, "pgdata": str(pgdata), "keyFile": str(_dir(data_dir) / "demo.key")}


def _load(state: dict[str, Any]) -> None:
    import psycopg
    from psycopg import sql
    admin = f"postgresql://{DB_USER}:{state['password']}@127.0.0.1:{state['port']}/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
        with psycopg.connect(_url(state["password"], int(state["port"]))) as conn:
            conn.execute(SCHEMA_SQL)
    except psycopg.Error as exc:
        raise ConfigError(f"could not load the demo data: {str(exc).splitlines()[0]}") from None


def stop(data_dir: Path) -> bool:
    """Stop the demo server; return whether one was running."""
    state = _state(data_dir)
    if state is None:
        return False
    bindir = Path(state["bindir"])
    user = _run_as()
    if not _running(bindir, Path(state["pgdata"]), user):
        return False
    _cmd([str(bindir / "pg_ctl"), "-D", state["pgdata"], "-m", "fast", "-w", "stop"], user)
    return True
