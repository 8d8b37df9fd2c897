#!/usr/bin/env python3
"""Fleet mode benchmark: three gatehouse instances sharing one control
database (and one bucket) on this machine.

    loadtest/fleet-bench.py                 # builds the release binary first
    loadtest/fleet-bench.py -T 10 -r 3 -n 50

Measures, side by side in one run:

1. Prepared point selects (pgbench -S -M prepared): one instance alone,
   then all three at once (the clients split over them). The figure
   compared is throughput per CPU-second of the gatehouse processes (from
   /proc/<pid>/stat), so that the machine's two cores shared by
   PostgreSQL, pgbench and three proxies do not decide it.
2. The approval round trip across instances: a write held on A is
   approved through B's admin API; the time from sending the approval to
   the statement's completion on A (p50, p99 over N holds), and the
   time from the statement's start to its review appearing on B.
3. Recording upload throughput: short sessions recorded on A (results
   "full"), uploaded to an s3s-fs bucket; recordings and bytes per second
   from the first seal to the last verified upload.

Everything talks to 127.0.0.1. Needs: PostgreSQL on 127.0.0.1:5432 (trust
for postgres), pgbench and psql, s3s-fs (./dev.sh test installs it).
Output: a markdown report on stdout and under loadtest/results/.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S3S = "/opt/gatehouse-test-tools/bin/s3s-fs"
TOKEN = "fleet-bench-agent-token"
ADMIN = "fleet-bench-admin-token"
APPROVER = "fleet-bench-approver-token"
S3_KEY, S3_SECRET = "fleet-bench-key", "fleet-bench-secret"
BUCKET = "gh-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sha(s):
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(db, sql):
    return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def http(port, method, path, token, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=body.encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Instance:
    def __init__(self, binary, tmp, name, control_db, data_db, bucket_port, workers):
        self.name, self.port, self.admin = name, free_port(), free_port()
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        bucket = ""
        if bucket_port:
            bucket = f"""
[fleet.bucket]
endpoint = "http://127.0.0.1:{bucket_port}"
bucket = "{BUCKET}"
access_key_id = "{S3_KEY}"
secret_access_key = "{S3_SECRET}"
"""
        conf = f"""
[server]
listen = ["127.0.0.1:{self.port}"]
workers = {workers}
allow_cleartext_on_loopback = true
max_connections = 2000

[log]
level = "warn"

[[target]]
name = "{data_db}"
database = "{data_db}"
host = "127.0.0.1"
port = 5432
user = "postgres"
tls = "disable"

[[identity]]
name = "agent"
token_hash = "{sha(TOKEN)}"
targets = ["*"]

[admin]
listen = "127.0.0.1:{self.admin}"
[[admin.token]]
name = "ops"
token_hash = "{sha(ADMIN)}"
roles = ["admin"]
[[admin.token]]
name = "dba"
token_hash = "{sha(APPROVER)}"
roles = ["approver", "dba"]

[policy]
default_role = "agent"
[policy.roles.agent]
read = "allow"
write = "approve"
approvers = ["dba"]
approval_timeout_secs = 60

[recording]
dir = "{self.dir}/recordings"
results = "summary"
sync_interval_ms = 100

[fleet]
instance = "{name}"
control = "host=127.0.0.1 port=5432 user=postgres dbname={control_db}"
tls = "disable"
{bucket}
"""
        self.conf = os.path.join(self.dir, "gatehouse.toml")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            code, body = http(self.admin, "GET", "/readyz", ADMIN) if self.listening() else (0, "")
            if code == 200 and json.loads(body).get("fleet", {}).get("control_database") == "connected":
                return
            time.sleep(0.1)
        raise SystemExit(f"{name} did not come up: see {self.dir}/log")

    def listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.admin), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def env(self, db):
        e = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="agent", PGPASSWORD=TOKEN,
                 PGDATABASE=db, PGSSLMODE="disable")
        return e


def pgbench(inst, db, clients, secs):
    """Starts pgbench -S -M prepared against an instance; returns the Popen."""
    return subprocess.Popen(["pgbench", "-n", "-S", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
                             "-T", str(secs), db], env=inst.env(db), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def tps_of(out):
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise SystemExit("pgbench: " + out[-500:])


def throughput(members, db, clients, secs, rounds):
    """Rounds of: A alone, then the three at once. Per round: total TPS and
    TPS per CPU-second of the proxies."""
    rows = []
    for _ in range(rounds):
        for label, used in (("one instance", members[:1]), ("three instances", members)):
            per = max(1, clients // len(used))
            cpu0 = [cpu_secs(m.proc.pid) for m in used]
            t0 = time.time()
            procs = [pgbench(m, db, per, secs) for m in used]
            outs = [p.communicate()[0] for p in procs]
            wall = time.time() - t0
            cpu = sum(cpu_secs(m.proc.pid) - c for m, c in zip(used, cpu0))
            tps = sum(tps_of(o) for o in outs)
            rows.append({"case": label, "clients": per * len(used), "tps": tps, "proxy_cpu_s": cpu,
                         "tps_per_proxy_cpu_s": tps * wall / cpu if cpu else 0.0,
                         "cpu_us_per_tx": cpu * 1e6 / (tps * wall) if tps else 0.0})
    return rows


def approvals(a, b, db, n):
    psql(db, "create table if not exists fleet_bench_held (id int)")
    rtt, seen = [], []
    for i in range(n):
        t_start = time.time()
        p = subprocess.Popen(["psql", "-X", "-At", "-c", f"insert into fleet_bench_held values ({i})"],
                             env=a.env(db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rid = None
        while rid is None:
            code, body = http(b.admin, "GET", "/api/v1/reviews?state=pending", ADMIN)
            pend = [r for r in json.loads(body).get("reviews", []) if r["status"]["state"] == "pending"]
            if pend:
                rid = pend[0]["id"]
            else:
                time.sleep(0.002)
        seen.append(time.time() - t_start)
        t0 = time.time()
        code, body = http(b.admin, "POST", f"/api/v1/reviews/{rid}/approve", APPROVER, "{}")
        if code != 200:
            raise SystemExit(f"approve: {code} {body}")
        p.wait()
        rtt.append(time.time() - t0)
        if p.returncode != 0:
            raise SystemExit("held insert failed: " + p.stderr.read())
    psql(db, "drop table fleet_bench_held")
    return rtt, seen


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def uploads(a, db, sessions, bucket_dir):
    rec_dir = os.path.join(a.dir, "recordings")

    def local():
        n = 0
        for d, _, fs in os.walk(rec_dir):
            if "/." in d:
                continue
            n += sum(1 for f in fs if f.endswith(".ghrec") and f != "audit.ghrec")
        return n

    # The earlier phases' recordings go first: this phase times its own.
    deadline = time.time() + 600
    while local() > 0 and time.time() < deadline:
        time.sleep(0.05)
    # Short sessions with a result each (-C: a connection per transaction).
    t0 = time.time()
    subprocess.run(["pgbench", "-n", "-C", "-S", "-c", "4", "-t", str(sessions // 4), db], env=a.env(db),
                   check=True, capture_output=True)
    made = time.time() - t0

    deadline = time.time() + 600
    while local() > 0 and time.time() < deadline:
        time.sleep(0.05)
    done = time.time() - t0
    new_bytes = 0
    for d, _, fs in os.walk(os.path.join(bucket_dir, "recordings")):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.getmtime(p) >= t0:
                new_bytes += os.path.getsize(p)
    return {"sessions": sessions, "made_s": made, "all_uploaded_s": done, "bytes": new_bytes}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-T", type=int, default=10, help="seconds per pgbench run")
    ap.add_argument("-r", type=int, default=3, help="rounds of the throughput comparison")
    ap.add_argument("-c", type=int, default=24, help="pgbench clients in all (split over the instances)")
    ap.add_argument("-n", type=int, default=50, help="held writes for the approval round trip")
    ap.add_argument("-u", type=int, default=400, help="sessions for the upload throughput")
    ap.add_argument("--workers", type=int, default=1, help="data-plane workers per instance")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "gatehouse"], cwd=REPO, check=True)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "gatehouse")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    control, data = "gh_fleet_bench_control", "gh_fleet_bench"
    for db in (control, data):
        psql("postgres", f"drop database if exists {db} with (force)")
        psql("postgres", f"create database {db}")
    subprocess.run(["pgbench", "-q", "-i", "-s", "10", "-h", "127.0.0.1", "-U", "postgres", data], check=True,
                   capture_output=True)
    tmp = tempfile.mkdtemp(prefix="gh-fleet-bench-")
    s3root = os.path.join(tmp, "bucket")
    os.makedirs(os.path.join(s3root, BUCKET))
    s3port = free_port()
    s3 = subprocess.Popen([S3S, "--host", "127.0.0.1", "--port", str(s3port), "--access-key", S3_KEY,
                           "--secret-key", S3_SECRET, s3root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    members = []
    try:
        members = [Instance(binary, tmp, f"gw-{x}", control, data, s3port, args.workers) for x in "abc"]
        thr = throughput(members, data, args.c, args.T, args.r)
        rtt, seen = approvals(members[0], members[1], data, args.n)
        up = uploads(members[0], data, args.u, os.path.join(s3root, BUCKET))
        bytes_up = up["bytes"]
    finally:
        for m in members:
            m.stop()
        s3.kill()
        for db in (control, data):
            subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c",
                            f"drop database if exists {db} with (force)"], capture_output=True)
    one = [r for r in thr if r["case"] == "one instance"]
    three = [r for r in thr if r["case"] == "three instances"]
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    ratio = med(three, "tps_per_proxy_cpu_s") / med(one, "tps_per_proxy_cpu_s")
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    out = [f"# Fleet mode benchmark, {stamp}", "",
           f"`loadtest/fleet-bench.py -T {args.T} -r {args.r} -c {args.c} -n {args.n} -u {args.u} "
           f"--workers {args.workers}`; {os.cpu_count()} cores ({cpu}), PostgreSQL, pgbench and the "
           "three instances on one machine.", "",
           "## Prepared point selects (pgbench -S -M prepared), medians of the rounds", "",
           "| case | clients | TPS | proxy CPU µs/tx | TPS per proxy CPU-second |", "|---|---:|---:|---:|---:|"]
    for label, rows in (("one instance", one), ("three instances at once", three)):
        out.append(f"| {label} | {rows[0]['clients']} | {med(rows, 'tps'):.0f} | {med(rows, 'cpu_us_per_tx'):.1f} | "
                   f"{med(rows, 'tps_per_proxy_cpu_s'):.0f} |")
    out += ["", f"Throughput per proxy core, three instances / one: **{ratio:.2f}**.", "",
            "## Approval round trip across instances (held on A, approved through B's API)", "",
            f"{len(rtt)} holds. Approval sent → statement complete on A: p50 {pct(rtt, 50) * 1000:.1f} ms, "
            f"p99 {pct(rtt, 99) * 1000:.1f} ms, max {max(rtt) * 1000:.1f} ms. Statement sent on A → review "
            f"listed on B: p50 {pct(seen, 50) * 1000:.1f} ms, p99 {pct(seen, 99) * 1000:.1f} ms.", "",
            "## Recording upload (results \"summary\", s3s-fs bucket on loopback)", "",
            f"{up['sessions']} sessions made in {up['made_s']:.1f} s; all uploaded, read back and hash-checked "
            f"{up['all_uploaded_s']:.1f} s after the first began: {up['sessions'] / up['all_uploaded_s']:.0f} "
            f"recordings/s, {bytes_up / up['all_uploaded_s'] / 1e6:.2f} MB/s ({bytes_up / 1e6:.2f} MB in all, one "
            f"recording of one statement per session). Each recording is checked against its seal, sent, "
            f"read back whole, indexed and put on record in the audit log one after another.", ""]
    text = "\n".join(out)
    print(text)
    res = os.path.join(REPO, "loadtest", "results")
    os.makedirs(res, exist_ok=True)
    with open(os.path.join(res, f"fleet-{stamp}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(res, f"fleet-{stamp}.json"), "w") as f:
        json.dump({"throughput": thr, "approval_rtt_s": rtt, "review_seen_s": seen, "upload": up,
                   "bytes_uploaded": bytes_up}, f, indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
