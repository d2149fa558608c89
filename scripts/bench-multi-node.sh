#!/usr/bin/env bash
# Several tapd nodes on one PostgreSQL database (issue 6): web TAP sign-ins per second and
# RADIUS accepts per second with one node, then with two nodes on the same database, on this
# machine. Self-contained and re-runnable: it builds tapd, starts a throwaway PostgreSQL
# cluster (Debian's postgresql, default durability: fsync and synchronous_commit on) and a
# throwaway slapd holding USERS generated users (scripts/gen-bench-ldif.py), both on private
# loopback ports. As a baseline it first measures one node on SQLite (the embedded default,
# same directory, same load), then node A on PostgreSQL, then A and B on the same database with
# the load split across both; tears everything down and prints a Markdown section for
# BENCHMARKS.md. Only loopback traffic. Needs root (initdb runs as the postgres account, tapctl
# is the break-glass administrator); installs slapd, ldap-utils and postgresql when missing.
#
#   scripts/bench-multi-node.sh [USERS] [SIGN_INS] [SECONDS_PER_RUN]   (defaults 10000 600 10)
#
# - Web: each sign-in is a fresh one-time TAP (created beforehand, untimed, through the admin
#   socket), signed in once by `examples/web_sign_in_load` with 16 browsers on keep-alive
#   connections (8 on each node with two nodes): CSRF and origin checks, user and TAP lookup,
#   one argon2id verification, the one-time use consumed with a conditional update, session
#   and audit in one transaction. SIGN_INS users per configuration, different users each time.
# - RADIUS: PAP Access-Requests with the right password (LDAP bind to slapd) from
#   `examples/radius_load`, users holding no TAP, at concurrency 32 and 256; with two nodes,
#   one load generator per node at half the concurrency each, rates added.
# - The directory is slapd, not the LDIF file source: the LDIF source re-reads its file for
#   every password check (it is for demos), and nodes of a cluster share a directory server.
# - CPU is utime+stime from /proc/PID/stat over each timed run (tapd nodes together; the
#   PostgreSQL postmaster and its backends; slapd), per 1,000 successful requests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
NUSERS=${1:-10000}
NSIGNINS=${2:-600}
SECONDS_PER_RUN=${3:-10}
SECRET=bench-radius-secret-0123456789
PUBLIC_URL=http://localhost:8080
export PATH=/usr/sbin:$PATH
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ $((3 * NSIGNINS + 1000)) -le "$NUSERS" ] || { echo "USERS must be at least 3 x SIGN_INS + 1000" >&2; exit 1; }

missing=()
for pair in slapd:slapd ldapsearch:ldap-utils; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..." >&2
  # Keep apt from starting the packaged services (PostgreSQL's main cluster, slapd); a
  # policy-rc.d that was there already is left as it is.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

work=$(mktemp -d)
chmod 711 "$work"
pids=()
pg_started=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$pg_started" ]; then
    (cd "$work/pg" && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1) || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Busy ticks of the whole machine (all cores, everything but idle and iowait) and the time.
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
now() { date +%s.%N; }
cpu_ticks() { local total=0 pid t; for pid in "$@"; do t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0); total=$((total + t)); done; echo "$total"; }

echo "building tapd, tapctl and the load generators..." >&2
cargo build --release --quiet --bins --example radius_load --example web_sign_in_load
bin=${CARGO_TARGET_DIR:-target}/release
radius_load=$bin/examples/radius_load
web_load=$bin/examples/web_sign_in_load

# --- PostgreSQL: a throwaway cluster on a private loopback port, default durability
echo "starting PostgreSQL..." >&2
mkdir "$work/pg"; chown postgres: "$work/pg"
pg_port=$(free_port)
(cd "$work/pg" && runuser -u postgres -- "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 \
  --locale=C.UTF-8 --no-instructions >/dev/null)
(cd "$work/pg" && runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w -t 60 \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work/pg" start >/dev/null)
pg_started=yes
pg_pid=$(head -1 "$work/pg/data/postmaster.pid")
"$pgbin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "CREATE DATABASE tapd" >/dev/null
pg_pids() { echo "$pg_pid" $(pgrep -P "$pg_pid" || true); }
# Transactions committed in the tapd database so far. Backends report their statistics at most
# once a second, so this waits two seconds first: called before and after each run.
pg_commits() {
  sleep 2
  "$pgbin/psql" -qAt -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'tapd'"
}

# --- slapd with NUSERS users (as scripts/bench-radius.sh)
echo "generating and loading $NUSERS users..." >&2
python3 scripts/gen-bench-ldif.py "$NUSERS" 100 > "$work/data.ldif"
mkdir "$work/db"
{ bench_slapd_conf "$work"; echo "index uid eq"; } > "$work/slapd.conf"
slapadd -q -f "$work/slapd.conf" -l "$work/data.ldif"
start_bench_slapd "$work"; pids+=("$slapd_pid")

# SIGN_INS users sign in on each setup (different users each time); RADIUS uses the rest.
python3 - "$NUSERS" "$NSIGNINS" "$work" <<'PY'
import sys
n, s, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for k, setup in enumerate(["sqlite", "pg1", "pg2"]):
    with open(f"{work}/web-{setup}.txt", "w") as f:
        f.writelines(f"user{i:06d}\n" for i in range(k * s, (k + 1) * s))
with open(f"{work}/right.txt", "w") as f:
    f.writelines(f"user{i:06d} user{i:06d}-pw\n" for i in range(3 * s, n))
PY
printf '%s' "$SECRET" > "$work/radius.secret"; chmod 600 "$work/radius.secret"
printf '%s' tapd-service-pw > "$work/ldap.secret"; chmod 600 "$work/ldap.secret"

# --- tapd nodes: the same configuration but for their listeners
start_node() { # name store-url
  local name=$1 store_url=$2 dir=$work/$1
  mkdir "$dir"
  local web_port radius_port
  web_port=$(free_port); radius_port=$(free_port udp)
  cat > "$dir/tapd.toml" <<TOML
[store]
url = "$store_url"

[directory]
url = "$ldap_url"
preset = "openldap"
base_dn = "dc=example,dc=org"
bind_dn = "cn=tapd,ou=services,dc=example,dc=org"
bind_password_file = "$work/ldap.secret"
sync_interval = "1h"
incremental_interval = "0s"

[admin]
socket = "$dir/admin.sock"

[radius]
listen = ["127.0.0.1:$radius_port"]
# The suite measures throughput, not the timing defence: answer rejects at once.
reject_delay = "0"

[[radius.clients]]
name = "bench"
address = "127.0.0.1"
secret_file = "$work/radius.secret"

[web]
listen = "127.0.0.1:$web_port"
public_url = "$PUBLIC_URL"

[log]
level = "info"
format = "stderr"

[metrics]
enabled = false
TOML
  "$bin/tapd" --config "$dir/tapd.toml" 2>"$dir/tapd.log" </dev/null >/dev/null &
  local pid=$!; pids+=("$pid")
  for _ in $(seq 600); do grep -q "directory sync from.* users, " "$dir/tapd.log" && break; sleep 0.1; done
  grep -q "directory sync from.* users, " "$dir/tapd.log" || { cat "$dir/tapd.log" >&2; echo "tapd $name did not sync" >&2; exit 1; }
  echo "$pid" > "$dir/pid"; echo "127.0.0.1:$web_port" > "$dir/web"; echo "127.0.0.1:$radius_port" > "$dir/radius"
}
stop_node() { # name
  local pid; pid=$(cat "$work/$1/pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
pg_url="postgres://postgres@127.0.0.1:$pg_port/tapd?sslmode=disable"

results=$work/results.jsonl
: > "$results"
record() { # setup kind concurrency report-json cpu-tapd cpu-pg cpu-slapd machine-busy seconds commits
  echo "{\"setup\":\"$1\",\"kind\":\"$2\",\"concurrency\":$3,\"report\":$4,\"cpu\":{\"tapd\":$5,\"postgres\":$6,\"slapd\":$7,\"machine\":$8},\"seconds\":$9,\"commits\":${10}}" >> "$results"
}

measure_web() { # setup users-file
  local setup=$1 users=$2 webs=() node admin
  for node in $node_names; do webs+=(--web "$(cat "$work/$node/web")"); done
  admin=$work/${node_names%% *}/admin.sock
  echo "  creating $(wc -l < "$users") one-time TAPs..." >&2
  "$web_load" create --admin-socket "$admin" --users "$users" > "$work/codes-$setup.txt"
  local t0 p0 s0 m0 w0 c0 t1 p1 s1 m1 w1 c1 report
  c0=$(pg_commits)
  t0=$(cpu_ticks $tapd_pids); p0=$(cpu_ticks $(pg_pids)); s0=$(cpu_ticks "$slapd_pid"); m0=$(machine); w0=$(now)
  report=$("$web_load" run "${webs[@]}" --public-url "$PUBLIC_URL" --codes "$work/codes-$setup.txt" --concurrency 16)
  t1=$(cpu_ticks $tapd_pids); p1=$(cpu_ticks $(pg_pids)); s1=$(cpu_ticks "$slapd_pid"); m1=$(machine); w1=$(now)
  c1=$(pg_commits)
  record "$setup" web 16 "$report" $((t1 - t0)) $((p1 - p0)) $((s1 - s0)) $((m1 - m0)) "$(python3 -c "print($w1 - $w0)")" $((c1 - c0))
  echo "  web sign-ins: $report" >&2
}

measure_radius() { # setup concurrency
  local setup=$1 concurrency=$2 node i=0 out=()
  local nodes; nodes=$(echo $node_names | wc -w)
  local each=$((concurrency / nodes))
  local t0 p0 s0 m0 w0 c0 t1 p1 s1 m1 w1 c1 lpids=()
  c0=$(pg_commits)
  t0=$(cpu_ticks $tapd_pids); p0=$(cpu_ticks $(pg_pids)); s0=$(cpu_ticks "$slapd_pid"); m0=$(machine); w0=$(now)
  for node in $node_names; do
    "$radius_load" --target "$(cat "$work/$node/radius")" --secret-file "$work/radius.secret" \
      --credentials "$work/right.txt" --concurrency "$each" --duration "$SECONDS_PER_RUN" \
      --timeout-ms 2000 > "$work/radius-$setup-$concurrency-$i.json" &
    lpids+=($!); out+=("$work/radius-$setup-$concurrency-$i.json"); i=$((i + 1))
  done
  for pid in "${lpids[@]}"; do wait "$pid"; done
  t1=$(cpu_ticks $tapd_pids); p1=$(cpu_ticks $(pg_pids)); s1=$(cpu_ticks "$slapd_pid"); m1=$(machine); w1=$(now)
  local report
  report=$(python3 -c 'import json,sys; print(json.dumps([json.load(open(p)) for p in sys.argv[1:]]))' "${out[@]}")
  c1=$(pg_commits)
  record "$setup" radius "$concurrency" "$report" $((t1 - t0)) $((p1 - p0)) $((s1 - s0)) $((m1 - m0)) "$(python3 -c "print($w1 - $w0)")" $((c1 - c0))
  echo "  RADIUS c=$concurrency: $report" >&2
}

warm_radius() {
  local node
  for node in $node_names; do
    "$radius_load" --target "$(cat "$work/$node/radius")" --secret-file "$work/radius.secret" \
      --credentials "$work/right.txt" --concurrency 8 --duration 2 >/dev/null
  done
}

enable_policy() { # node
  "$bin/tapctl" --socket "$work/$1/admin.sock" policy set --state enabled >/dev/null
}

load_before=$(cut -d" " -f1 /proc/loadavg)
echo "baseline: one node on SQLite..." >&2
start_node s "sqlite:$work/s/tapd.db"
node_names="s"; tapd_pids=$(cat "$work/s/pid")
enable_policy s
warm_radius
measure_web sqlite "$work/web-sqlite.txt"
measure_radius sqlite 32
measure_radius sqlite 256
stop_node s

echo "one node on PostgreSQL..." >&2
start_node a "$pg_url"
node_names="a"; tapd_pids=$(cat "$work/a/pid")
enable_policy a
warm_radius
measure_web pg1 "$work/web-pg1.txt"
measure_radius pg1 32
measure_radius pg1 256

echo "two nodes on the same PostgreSQL database..." >&2
start_node b "$pg_url"
node_names="a b"; tapd_pids="$(cat "$work/a/pid") $(cat "$work/b/pid")"
warm_radius
measure_web pg2 "$work/web-pg2.txt"
measure_radius pg2 32
measure_radius pg2 256
load_after=$(cut -d" " -f1 /proc/loadavg)

pg_version=$("$pgbin/postgres" --version | sed 's/.*) //')
slapd_version=$(slapd -VV 2>&1 | sed -n '1s/.*slapd \([^ ]*\).*/\1/p')
tapd_version=$(git describe --always --dirty 2>/dev/null || echo unknown)
rustc_version=$(rustc --version | cut -d" " -f2)
python3 - "$results" "$(getconf CLK_TCK)" "$(nproc)" "$pg_version" "$slapd_version" "$tapd_version" \
  "$rustc_version" "$NUSERS" "$NSIGNINS" "$SECONDS_PER_RUN" "$load_before" "$load_after" <<'PY'
import json, sys, datetime, platform
(results, hz, cores, pg_v, slapd_v, tapd_v, rustc_v, nusers, nsignins, secs,
 load_before, load_after) = sys.argv[1:]
hz = int(hz)
rows = [json.loads(l) for l in open(results)]
mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"### Run of {now} on {cores} cores ({cpu}), {int(mem)//1048576} GiB")
print()
print(f"tapd {tapd_v} (release build, rustc {rustc_v}, default `pool_size = 16`, `bind_pool_size = 4`, "
      f"`argon2_max_concurrent` = cores, log level info); PostgreSQL {pg_v} (throwaway cluster, default "
      f"settings: fsync and synchronous_commit on); OpenLDAP slapd {slapd_v} with {nusers} users. "
      f"Load generators on the same {cores} cores. 1-minute load average {load_before} before, {load_after} after.")
print()
print("| setup | measure | conc. | ok | failed / timeouts | per second | p50 ms | p99 ms | tapd CPU s/1k | PostgreSQL CPU s/1k | PostgreSQL commits per request | slapd CPU s/1k | machine busy | of it tapd+PG+slapd |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
setups = {"sqlite": "1 node, SQLite (baseline)", "pg1": "1 node, PostgreSQL", "pg2": "2 nodes, one PostgreSQL"}
def share(ticks, seconds):
    return f"{100 * ticks / hz / (seconds * int(cores)):.0f} %"
def per_k(ticks, n):
    return f"{ticks / hz / n * 1000:.2f}" if n else "–"
for r in rows:
    cpu_t, setup = r["cpu"], r["setup"]
    nodes = 2 if setup == "pg2" else 1
    if r["kind"] == "web":
        rep = r["report"]
        ok, bad, rate = rep["succeeded"], rep["failed"], rep["sign_ins_per_second"]
        p50, p99 = rep["latency_ms"]["p50"], rep["latency_ms"]["p99"]
        split = " / ".join(str(l["succeeded"]) for l in rep["per_listener"])
        what = "web TAP sign-ins (one-time TAP each)" + (f", {split} per node" if nodes > 1 else "")
    else:
        reps = r["report"]
        ok = sum(x["accepts"] for x in reps)
        bad = sum(x["rejects"] + x["timeouts"] + x["bad_replies"] for x in reps)
        rate = sum(x["accepts_per_second"] for x in reps)
        p50 = max(x["latency_ms"]["p50"] for x in reps)
        p99 = max(x["latency_ms"]["p99"] for x in reps)
        what = "RADIUS accepts (right password)" + (f", {' + '.join(str(x['concurrency']) for x in reps)} per node" if nodes > 1 else "")
    pg_cpu = per_k(cpu_t['postgres'], ok) if setup != "sqlite" else "–"
    commits = f"{r['commits'] / ok:.2f}" if setup != "sqlite" and ok else "–"
    print(f"| {setups[setup]} | {what} | {r['concurrency']} | {ok} | {bad} | {rate:.1f} | {p50:.1f} | {p99:.1f} | "
          f"{per_k(cpu_t['tapd'], ok)} | {pg_cpu} | {commits} | {per_k(cpu_t['slapd'], ok)} | "
          f"{share(cpu_t['machine'], r['seconds'])} | {share(cpu_t['tapd'] + cpu_t['postgres'] + cpu_t['slapd'], r['seconds'])} |")
print()
print(f"{nsignins} sign-ins per web run (16 browsers), {secs} s per RADIUS run; with two nodes the p50/p99 "
      f"shown for RADIUS is the higher of the two load generators'. CPU columns: utime+stime per 1,000 "
      f"successful requests. *Commits per request*: transactions committed in the tapd database "
      f"(`pg_stat_database.xact_commit`, read-only ones included) per successful request. *Machine busy*: all {cores} cores' non-idle time during the run (load "
      f"generators and other work on the machine included); *of it tapd+PG+slapd*: the servers' share "
      f"of the machine.")
PY
