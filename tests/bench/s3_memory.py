"""On demand: peak RSS of `ehr-backup create` local-only vs local + an S3 destination (moto_server), and of a
verify read from S3 only. Usage: .venv/bin/python tests/bench/s3_memory.py [ROWS] (default 1,500,000: ~250 MiB)."""
import os, re, subprocess, sys, tempfile, uuid, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path
import psycopg
from tests.s3server import start
from ehr_backup.keys import generate_key

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
name = f"s3_bench_{uuid.uuid4().hex[:8]}"
tmp = Path(tempfile.mkdtemp(prefix="s3bench-"))
server = start(tmp)
with psycopg.connect(ADMIN, autocommit=True) as c:
    c.execute(f'CREATE DATABASE "{name}"')
url = ADMIN.rsplit("/", 1)[0] + "/" + name
rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_500_000
with psycopg.connect(url, autocommit=True) as c:
    c.execute("CREATE TABLE notes AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
              f"md5(random()::text) || md5(random()::text) AS body FROM generate_series(1, {rows}) g")
    size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AWS_", "EHR_", "BACKUP_"))}
env.update({"DATABASE_URL": url, "BACKUP_ENCRYPTION_KEY": generate_key(), "EHR_BACKUP_DATA_DIR": str(tmp / "data"),
            "EHR_BACKUP_DEFAULT_DIR": str(tmp / "backups"), "EHR_BACKUP_THREADS": "2", "HOME": str(tmp),
            "EHR_BACKUP_DRILL_SCHEDULE": "off", "EHR_BACKUP_VERIFY_AFTER_BACKUP": "0", "EHR_BACKUP_S3_PART_MB": "16",
            "S": server.keys["full"][1]})
bucket = server.bucket()
exe = str(Path(sys.executable).parent / "ehr-backup")
subprocess.run([exe, "destination", "add", "offsite", "--s3", "--bucket", bucket, "--endpoint-url", server.url,
                "--path-style", "--access-key-id", server.keys["full"][0], "--secret-env", "S"], env=env, check=True,
               capture_output=True)
def run(*args):
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", exe, *args], env=env, capture_output=True, text=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return p, rss, time.monotonic() - t
print(f"database {size / 2**20:.0f} MiB")
p, rss, secs = run("create", "--description", "local", "--json")
b = json.loads(p.stdout); print(f"local only: file {b['size'] / 2**20:.0f} MiB, max RSS {rss / 1024:.0f} MiB, {secs:.1f} s")
p, rss, secs = run("create", "--description", "both", "--destination", "offsite", "--json")
b = json.loads(p.stdout); print(f"local + S3 (16 MiB parts): file {b['size'] / 2**20:.0f} MiB, max RSS {rss / 1024:.0f} MiB, {secs:.1f} s, copies {[(c['destination'], c['status']) for c in b['copies']]}")
os.unlink(b["path"])
p, rss, secs = run("verify", b["id"], "--json")
print(f"verify from S3 only: max RSS {rss / 1024:.0f} MiB, {secs:.1f} s, ok={json.loads(p.stdout).get('ok') if p.returncode == 0 else p.stderr}")
server.stop()
with psycopg.connect(ADMIN, autocommit=True) as c:
    c.execute(f'DROP DATABASE "{name}"')
import shutil; shutil.rmtree(tmp, ignore_errors=True)
