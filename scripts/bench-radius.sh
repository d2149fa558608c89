#!/usr/bin/env bash
# RADIUS benchmark (issue 8): tapd side by side with FreeRADIUS 3.2 (rlm_ldap, bind
# authentication) on the same throwaway slapd holding USERS users. In one run it measures
# the raw LDAP bind rate slapd sustains (and slapd's CPU per bind), then drives both RADIUS
# servers with examples/radius_load at concurrency 32 and 256 with right passwords and wrong
# passwords, tapd also with users presenting their TAP and with right passwords during a
# concurrent TAP flood; it records CPU seconds per 1,000 requests per process (utime+stime
# deltas from /proc/PID/stat) and tapd's RSS, prints a Markdown section for BENCHMARKS.md and
# tears everything down. Only loopback traffic. Needs root (FreeRADIUS, tapctl break-glass),
# slapd, ldap-utils, freeradius, freeradius-ldap (installed with apt-get when missing).
#
#   scripts/bench-radius.sh [USERS] [SECONDS_PER_RUN]      (defaults 10000 10)
#   PERF_OUT=/tmp/tapd.perf scripts/bench-radius.sh        (also profiles tapd's accept path)
#   NTWOLEG=300: users who register an authenticator app on the web page (their TAP, then the
#   app) for the two-leg row: a second client (127.0.0.2) with second_factor = "totp" in
#   challenge mode, each user signing in once (a code works once) with password,
#   Access-Challenge, then the code with the State; CPU is per completed sign-in.
#   RUNS="right/tapd/32 right/freeradius/32" scripts/bench-radius.sh   (only these runs, for
#   quick iterations; names are RUN/SERVER/CONCURRENCY as in the table, ldap-bind/slapd/C for
#   the raw binds; the published table comes from a full run)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
NUSERS=${1:-10000}
SECONDS_PER_RUN=${2:-10}
NTAPS=100
NTWOLEG=${NTWOLEG:-300}
SECRET=bench-radius-secret-0123456789
export PATH=/usr/sbin:$PATH
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

missing=()
for pair in slapd:slapd ldapsearch:ldap-utils freeradius:freeradius; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -e /usr/lib/freeradius/rlm_ldap.so ] || missing+=(freeradius-ldap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}..." >&2
  # Keep apt from starting the packaged services.
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

wanted() { [ -z "${RUNS:-}" ] || [[ " $RUNS " == *" $1 "* ]]; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Context switches (voluntary and not) of all of a process's threads so far: a sturdier figure
# than CPU time on a shared machine for how often a request moves between threads. Threads
# that exit during a run take their counts with them, so it reads low rather than high.
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
# "BINDS SEARCHES" completed by slapd so far, from cn=Monitor.
ldap_ops() {
  ldapsearch -x -LLL -H "$ldap_url" -D cn=monitor -w bench-monitor -b cn=Operations,cn=Monitor \
    '(|(cn=Bind)(cn=Search))' cn monitorOpCompleted \
    | awk '/^cn: / {cn=$2} /^monitorOpCompleted: / {n[cn]=$2} END {print n["Bind"]+0, n["Search"]+0}'
}

echo "building tapd, tapctl and the load generators..." >&2
cargo build --release --quiet --bins --example radius_load --example ldap_bind_load --example argon2_verify
bin=${CARGO_TARGET_DIR:-target}/release
load=$bin/examples/radius_load

# --- slapd with NUSERS users (100 groups; group00000 and its nested chain hold the TAP users)
echo "generating and loading $NUSERS users..." >&2
python3 scripts/gen-bench-ldif.py "$NUSERS" 100 > "$work/data.ldif"
mkdir "$work/db"
{
  bench_slapd_conf "$work"
  cat <<CONF
index uid eq
# Operation counters (cn=Monitor), read before and after each run: how many binds and
# searches each RADIUS request cost the directory.
database monitor
rootdn "cn=monitor"
rootpw bench-monitor
CONF
} > "$work/slapd.conf"
slapadd -q -f "$work/slapd.conf" -l "$work/data.ldif"
start_bench_slapd "$work"; pids+=("$slapd_pid")

python3 - "$NUSERS" "$work" <<'PY'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
with open(f"{work}/right.txt", "w") as right, open(f"{work}/wrong.txt", "w") as wrong:
    for i in range(n):
        right.write(f"user{i:06d} user{i:06d}-pw\n")
    # Enough distinct wrong passwords that no run repeats one: a repeat is answered from
    # tapd's rejection cache, which would measure the cache instead of a failed bind. After
    # a few per user, tapd's per-(user, source) throttle refuses the rest without a bind,
    # as it would a real password spray.
    for v in range(max(1, 500_000 // max(1, n))):
        for i in range(n):
            wrong.write(f"user{i:06d} not-the-password-{v}-{i}\n")
PY
printf '%s' "$SECRET" > "$work/radius.secret"; chmod 600 "$work/radius.secret"
printf '%s' tapd-service-pw > "$work/ldap.secret"; chmod 600 "$work/ldap.secret"

# --- tapd
tapd_port=$(free_port udp)
web_port=$(free_port tcp)
mkdir "$work/tapd"
cat > "$work/tapd/tapd.toml" <<TOML
[store]
url = "sqlite:$work/tapd/tapd.db"

[directory]
url = "$ldap_url"
preset = "openldap"
base_dn = "dc=example,dc=org"
bind_dn = "cn=tapd,ou=services,dc=example,dc=org"
bind_password_file = "$work/ldap.secret"
sync_interval = "1h"
incremental_interval = "0s"

[admin]
socket = "$work/tapd/admin.sock"

[radius]
listen = ["127.0.0.1:$tapd_port"]
# The suite measures throughput, not the timing defence: answer rejects at once.
reject_delay = "0"

[[radius.clients]]
name = "bench"
address = "127.0.0.1"
secret_file = "$work/radius.secret"

# The two-leg row: password, Access-Challenge, authenticator-app code.
[[radius.clients]]
name = "bench-2fa"
address = "127.0.0.2"
secret_file = "$work/radius.secret"
second_factor = "totp"
second_factor_mode = "challenge"

[web]
listen = "127.0.0.1:$web_port"
public_url = "http://localhost:$web_port"

[log]
level = "info"
format = "stderr"

[security]
# Every request comes from one address: with the default per-(user, source) throttle, a few
# wrong passwords per user lock that user out from there (as designed), the right-password
# rows after them would be refused, and the wrong-password rows would measure throttled
# refusals instead of failed binds. FreeRADIUS has no such throttle; neither has tapd here.
sign_in_max_failures = 1000000000

[audit]
# The default window (group commit of sign-in audit events); a second pass below runs the
# right-password rows again with "0" (each event durable before its answer).
sign_in_flush = "100ms"
TOML
start_tapd() {
  : > "$work/tapd.log"
  "$bin/tapd" --config "$work/tapd/tapd.toml" 2>"$work/tapd.log" </dev/null >/dev/null &
  tapd_pid=$!; pids+=("$tapd_pid")
  for _ in $(seq 600); do grep -q "directory sync from.* users, " "$work/tapd.log" && break; sleep 0.1; done
  grep -q "directory sync from.* users, " "$work/tapd.log" || { cat "$work/tapd.log" >&2; echo "tapd did not sync" >&2; exit 1; }
}
start_tapd
rss_mb() { awk '/VmRSS/ {printf "%d", $2 / 1024}' "/proc/$tapd_pid/status"; }
echo "tapd RSS after the first sync: $(rss_mb) MB" >&2
tapctl() { "$bin/tapctl" --socket "$work/tapd/admin.sock" --json "$@"; }
echo "creating $NTAPS TAPs..." >&2
tapctl policy set --state enabled --include-groups group00000 >/dev/null
: > "$work/tap.txt"
for i in $(seq 0 $((NTAPS - 1))); do
  user=$(printf 'user%06d' "$i")
  code=$(tapctl tap create "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["temporaryAccessPass"])')
  echo "$user $code" >> "$work/tap.txt"
done

echo "tapd RSS after creating the TAPs: $(rss_mb) MB" >&2
if wanted two-leg/tapd/32; then
  echo "registering $NTWOLEG authenticator apps on the web page..." >&2
  : > "$work/twoleg-taps.txt"
  for i in $(seq "$NTAPS" $((NTAPS + NTWOLEG - 1))); do
    user=$(printf 'user%06d' "$i")
    code=$(tapctl tap create "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["temporaryAccessPass"])')
    echo "$user $code" >> "$work/twoleg-taps.txt"
  done
  python3 scripts/enrol-bench-apps.py "127.0.0.1:$web_port" < "$work/twoleg-taps.txt" > "$work/twoleg.txt"
fi

# --- FreeRADIUS 3.2 with rlm_ldap, bind authentication, same slapd
fr_port=$(free_port udp)
fr=$work/freeradius
mkdir -p "$fr/run" "$fr/log"
cat > "$fr/radiusd.conf" <<CONF
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = $fr
sbindir = /usr/sbin
logdir = $fr/log
raddbdir = $fr
radacctdir = $fr/log
name = freeradius
confdir = $fr
modconfdir = $fr
run_dir = $fr/run
db_dir = $fr
libdir = /usr/lib/freeradius
pidfile = $fr/run/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no
log {
  destination = files
  file = $fr/log/radius.log
  auth = no
}
security {
  allow_core_dumps = no
  max_attributes = 200
  # Debian's default is 1 s; 0 so that wrong-password runs measure work, not sleeping.
  reject_delay = 0
  status_server = yes
}
# Debian's defaults, except max_servers raised to 64.
thread pool {
  start_servers = 5
  max_servers = 64
  min_spare_servers = 3
  max_spare_servers = 10
  max_requests_per_server = 0
  auto_limit_acct = no
}
client bench {
  ipaddr = 127.0.0.1
  secret = $SECRET
  require_message_authenticator = yes
}
modules {
  ldap {
    server = '127.0.0.1'
    port = $ldap_port
    identity = 'cn=tapd,ou=services,dc=example,dc=org'
    password = tapd-service-pw
    base_dn = 'dc=example,dc=org'
    user {
      base_dn = "ou=people,dc=example,dc=org"
      filter = "(uid=%{%{Stripped-User-Name}:-%{User-Name}})"
      scope = 'sub'
    }
    options {
      chase_referrals = no
      res_timeout = 10
      srv_timelimit = 3
      net_timeout = 1
    }
    pool {
      start = 16
      min = 16
      max = 64
      spare = 16
      uses = 0
      retry_delay = 1
      lifetime = 0
      idle_timeout = 0
    }
  }
}
server default {
  listen {
    type = auth
    ipaddr = 127.0.0.1
    port = $fr_port
  }
  authorize {
    ldap
    if ((ok || updated) && User-Password) {
      update control {
        Auth-Type := ldap
      }
    }
  }
  authenticate {
    Auth-Type ldap {
      ldap
    }
  }
}
CONF
freeradius -C -d "$fr" >"$fr/check.log" 2>&1 || { cat "$fr/check.log" >&2; exit 1; }
freeradius -f -d "$fr" </dev/null >"$fr/stdout.log" 2>&1 &
fr_pid=$!; pids+=("$fr_pid")
for _ in $(seq 100); do grep -q "Ready to process requests" "$fr/log/radius.log" 2>/dev/null && break; sleep 0.1; done
grep -q "Ready to process requests" "$fr/log/radius.log" || { cat "$fr/log/radius.log" "$fr/stdout.log" >&2; exit 1; }

# --- measurements: one JSON line per run in results.jsonl
results=$work/results.jsonl
: > "$results"
measure() { # name server concurrency credentials [extra-cmd-in-background]
  local name=$1 server=$2 concurrency=$3 credentials=$4
  wanted "$name/$server/$concurrency" || return 0
  local target=127.0.0.1:$tapd_port
  [ "$server" = freeradius ] && target=127.0.0.1:$fr_port
  local s0 t0 f0 s1 t1 f1
  local ops0 ops1
  ops0=$(ldap_ops)
  s0=$(cpu_ticks "$slapd_pid"); t0=$(cpu_ticks "$tapd_pid"); f0=$(cpu_ticks "$fr_pid")
  local x0 x1; x0=$(ctx_switches "$tapd_pid")
  local report perf_pid=""
  # PERF_OUT=FILE: profile tapd with `perf record -g` during its right-password run at 32.
  if [ -n "${PERF_OUT:-}" ] && [ "$name/$server/$concurrency" = right/tapd/32 ]; then
    perf record -q -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$tapd_pid" -o "$PERF_OUT" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  # LOAD_ARGS: extra radius_load arguments for this run (the two-leg row's --two-leg --source).
  # shellcheck disable=SC2086
  report=$("$load" --target "$target" --secret-file "$work/radius.secret" --credentials "$credentials" \
    --concurrency "$concurrency" --duration "$SECONDS_PER_RUN" --timeout-ms 2000 ${LOAD_ARGS:-})
  s1=$(cpu_ticks "$slapd_pid"); t1=$(cpu_ticks "$tapd_pid"); f1=$(cpu_ticks "$fr_pid")
  x1=$(ctx_switches "$tapd_pid")
  ops1=$(ldap_ops)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$tapd_pid/status")
  local ctx=0; [ "$server" = tapd ] && ctx=$((x1 - x0))
  echo "{\"name\":\"$name\",\"server\":\"$server\",\"ctx_switches\":$ctx,\"report\":$report,\"cpu_ticks\":{\"slapd\":$((s1 - s0)),\"tapd\":$((t1 - t0)),\"freeradius\":$((f1 - f0))},\"tapd_rss_kb\":$rss,\"ldap_ops\":[$(( ${ops1% *} - ${ops0% *} )),$(( ${ops1#* } - ${ops0#* } ))]}" >> "$results"
  local sent; sent=$(python3 -c 'import json, sys; print(max(1, json.loads(sys.argv[1])["sent"]))' "$report")
  echo "  $name: $report (tapd RSS $((rss / 1024)) MB: $(awk '/RssAnon|RssFile/ {printf "%s %d MB ", $1, $2 / 1024}' "/proc/$tapd_pid/status"); tapd context switches per request sent: $(python3 -c "print(round(($x1 - $x0) / $sent, 2))"))" >&2
}

load_before=$(cut -d" " -f1 /proc/loadavg)
echo "raw LDAP binds..." >&2
# 4 = tapd's default bind_pool_size: the same number of connections tapd binds on.
for c in 4 32 256; do
  wanted "ldap-bind/slapd/$c" || continue
  s0=$(cpu_ticks "$slapd_pid")
  bind_report=$("$bin/examples/ldap_bind_load" --url "$ldap_url" --credentials "$work/right.txt" --concurrency "$c" --duration "$SECONDS_PER_RUN")
  s1=$(cpu_ticks "$slapd_pid")
  echo "{\"name\":\"ldap-bind\",\"server\":\"slapd\",\"report\":{\"concurrency\":$c},\"bind\":$bind_report,\"cpu_ticks\":{\"slapd\":$((s1 - s0)),\"tapd\":0,\"freeradius\":0},\"tapd_rss_kb\":0}" >> "$results"
  echo "  ldap binds c=$c: $bind_report" >&2
done

# Warm both servers once (connection pools, caches).
"$load" --target 127.0.0.1:$tapd_port --secret-file "$work/radius.secret" --credentials "$work/right.txt" --concurrency 8 --duration 2 >/dev/null
"$load" --target 127.0.0.1:$fr_port --secret-file "$work/radius.secret" --credentials "$work/right.txt" --concurrency 8 --duration 2 >/dev/null

for c in 32 256; do
  echo "concurrency $c..." >&2
  measure right tapd "$c" "$work/right.txt"
  measure right freeradius "$c" "$work/right.txt"
  measure wrong tapd "$c" "$work/wrong.txt"
  measure wrong freeradius "$c" "$work/wrong.txt"
  measure tap tapd "$c" "$work/tap.txt"
done
if wanted two-leg/tapd/32; then
  echo "two-leg sign-ins (password, challenge, code) at concurrency 32..." >&2
  LOAD_ARGS="--two-leg --source 127.0.0.2" measure two-leg tapd 32 "$work/twoleg.txt"
fi
cores=$(nproc)
echo "TAP rejections at concurrency $cores, and right passwords during a TAP flood..." >&2
measure tap-at-cores tapd "$cores" "$work/tap.txt"
if wanted right-during-tap-flood/tapd/32; then
  "$load" --target 127.0.0.1:$tapd_port --secret-file "$work/radius.secret" --credentials "$work/tap.txt" \
    --concurrency 32 --duration "$SECONDS_PER_RUN" --timeout-ms 2000 > "$work/flood.json" &
  flood_pid=$!
  measure right-during-tap-flood tapd 32 "$work/right.txt"
  wait "$flood_pid"
  echo "  flood: $(cat "$work/flood.json")" >&2
fi
load_after=$(cut -d" " -f1 /proc/loadavg)
peak_rss=$(awk '/VmHWM/ {print $2}' "/proc/$tapd_pid/status")

# The cost of one argon2 verification on this machine, for the TAP rejection p99 target.
"$bin/examples/argon2_verify" --count 40 > "$work/argon2.json"
echo "  one argon2 verification: $(cat "$work/argon2.json")" >&2

# Right passwords again with sign_in_flush = "0" (each sign-in event durable before its
# answer), after a restart on the same database.
if wanted right-flush0/tapd/32 || wanted right-flush0/tapd/256; then
  echo "restarting tapd with sign_in_flush = 0..." >&2
  kill "$tapd_pid"; wait "$tapd_pid" 2>/dev/null || true
  sed -i 's/^sign_in_flush = .*/sign_in_flush = "0"/' "$work/tapd/tapd.toml"
  start_tapd
  "$load" --target 127.0.0.1:$tapd_port --secret-file "$work/radius.secret" --credentials "$work/right.txt" --concurrency 8 --duration 2 >/dev/null
  for c in 32 256; do
    measure right-flush0 tapd "$c" "$work/right.txt"
  done
fi

slapd_version=$(slapd -VV 2>&1 | sed -n '1s/.*slapd \([^ ]*\).*/\1/p')
fr_version=$(freeradius -v 2>/dev/null | sed -n '1s/.*Version \([^,]*\).*/\1/p')
tapd_version=$(git describe --always --dirty 2>/dev/null || echo unknown)
python3 - "$results" "$work/flood.json" "$(getconf CLK_TCK)" "$peak_rss" "$cores" \
  "$slapd_version" "$fr_version" "$tapd_version" "$NUSERS" "$SECONDS_PER_RUN" "$load_before" "$load_after" \
  "$work/argon2.json" <<'PY'
import json, sys, datetime, platform
results, flood_path, hz, peak_rss, cores, slapd_v, fr_v, tapd_v, nusers, secs, load_before, load_after, argon2_path = sys.argv[1:]
hz = int(hz)
rows = [json.loads(l) for l in open(results)]
try:
    flood = json.load(open(flood_path))
except FileNotFoundError:
    flood = None
mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"### Run of {datetime.date.today()} on {cores} cores ({cpu}), {int(mem)//1048576} GiB")
print()
print(f"{nusers} users in OpenLDAP slapd {slapd_v} (back_mdb, uid indexed); FreeRADIUS {fr_v} (rlm_ldap: "
      f"search as the service account, then bind as the user; `reject_delay = 0`, 64 threads, 16–64 LDAP "
      f"connections); tapd {tapd_v} (release build, default `bind_pool_size = 4`, log level info). "
      f"{secs} s per run, one load generator process (`examples/radius_load`, one tokio thread) on the "
      f"same 2 cores as the servers, so absolute rates are lower than on a separate client machine. "
      f"CPU is utime+stime from /proc/PID/stat over the run, per 1,000 answered requests.")
print()
print("| run | server | conc. | sent | accepts | rejects | timeouts | answered/s | p50 ms | p99 ms | p99.9 ms | server CPU s/1k | slapd CPU s/1k | LDAP binds + searches per request | tapd ctx switches per request | tapd RSS MB |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
def ops(r, n):
    binds, searches = r.get("ldap_ops", [0, 0])
    # The TAP flood running beside a measured run adds its own (few) operations.
    return f"{binds / n:.2f} + {searches / n:.2f}" if n else "–"
def ctx(r):
    return f"{r.get('ctx_switches', 0) / max(1, r['report']['sent']):.2f}" if r["server"] == "tapd" else "–"
def rss(r):
    return f"{r['tapd_rss_kb'] // 1024}" if r["server"] == "tapd" else "–"
def per_k(ticks, n):
    return f"{ticks / hz / n * 1000:.3f}" if n else "–"
for r in rows:
    rep, cpu_t = r["report"], r["cpu_ticks"]
    if r["name"] == "ldap-bind":
        b = r["bind"]
        print(f"| raw LDAP simple binds | slapd | {b['concurrency']} | {b['binds'] + b['failures']} | {b['binds']} | {b['failures']} | – | "
              f"{b['binds_per_second']:.0f} | {b['latency_ms']['p50']:.2f} | {b['latency_ms']['p99']:.2f} | {b['latency_ms']['p99_9']:.2f} | – | {per_k(cpu_t['slapd'], b['binds'])} | 1 + 0 | – | – |")
        continue
    n = rep["accepts"] + rep["rejects"]
    own = cpu_t[r["server"]]
    lat = rep["latency_ms"]
    print(f"| {r['name']} | {r['server']} | {rep['concurrency']} | {rep['sent']} | {rep['accepts']} | {rep['rejects']} | {rep['timeouts']} | "
          f"{rep['requests_per_second']:.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p99_9']:.2f} | {per_k(own, n)} | {per_k(cpu_t['slapd'], n)} | {ops(r, n)} | {ctx(r)} | {rss(r)} |")
fl = flood
if fl: print(f"| (the concurrent TAP flood) | tapd | {fl['concurrency']} | {fl['sent']} | {fl['accepts']} | {fl['rejects']} | {fl['timeouts']} | "
      f"{fl['requests_per_second']:.0f} | {fl['latency_ms']['p50']:.2f} | {fl['latency_ms']['p99']:.2f} | {fl['latency_ms']['p99_9']:.2f} | | | |")
if any(r["name"] == "two-leg" for r in rows):
    print()
    print("two-leg: one sign-in = password → Access-Challenge → code with State → Access-Accept (two "
          "RADIUS round trips, one LDAP bind, one TOTP check and its store write); `sent` counts sign-ins "
          "begun, accepts the completed ones, answered/s is sign-ins per second and server CPU s/1k is "
          "tapd's CPU seconds per 1,000 completed sign-ins. Each user signs in once (a code works once), so "
          "the run ends when the registered users are used up.")
print()
load_rss = max((r["tapd_rss_kb"] for r in rows if r["server"] == "tapd"), default=0)
print(f"tapd RSS (VmRSS) at the end of each load run: at most {load_rss // 1024} MB. "
      f"Peak (VmHWM) over the whole run, including the first sync of {nusers} users and issuing the TAPs: {int(peak_rss)//1024} MB.")
print(f" 1-minute load average before the runs {load_before}, after {load_after}.")

# The targets, each met or not with its number.
def row(name, server, c):
    return next((r for r in rows if r["name"] == name and r["server"] == server and r["report"].get("concurrency") == c), None)
def answered(r):
    return r["report"]["accepts"] + r["report"]["rejects"] if r else 0
def cpu_per(r):
    n = answered(r)
    return r["cpu_ticks"][r["server"]] / hz / n if r and n else None
def verdict(ok):
    return "met" if ok else "NOT met"
print()
print("| target | figure | verdict |")
print("| --- | --- | --- |")
for c in (32, 256):
    t, f = row("wrong", "tapd", c), row("wrong", "freeradius", c)
    if t and f:
        ratio = t["report"]["requests_per_second"] / max(1e-9, f["report"]["requests_per_second"])
        print(f"| wrong passwords/s ≥ 1.0 × FreeRADIUS at {c}, no timeouts | {ratio:.2f} ×, {t['report']['timeouts']} timeouts | {verdict(ratio >= 1.0 and t['report']['timeouts'] == 0)} |")
for c in (32, 256):
    t, f = row("right", "tapd", c), row("right", "freeradius", c)
    if t and f:
        ratio = t["report"]["requests_per_second"] / max(1e-9, f["report"]["requests_per_second"])
        tp, fp = t["report"]["latency_ms"]["p99"], f["report"]["latency_ms"]["p99"]
        print(f"| accepts/s ≥ 1.5 × FreeRADIUS at {c}, p99 ≤ FreeRADIUS's | {ratio:.2f} ×, p99 {tp:.2f} vs {fp:.2f} ms | {verdict(ratio >= 1.5 and tp <= fp)} |")
for c in (32, 256):
    f = cpu_per(row("right", "freeradius", c))
    for name, label in (("right", "sign_in_flush = 100ms"), ("right-flush0", "sign_in_flush = 0")):
        t = cpu_per(row(name, "tapd", c))
        if t is not None and f:
            target = " (target ≤ 0.3 ×)" if name == "right" else " (reported beside it)"
            print(f"| tapd CPU per accept vs FreeRADIUS at {c}, {label}{target} | {t * 1e6:.0f} µs vs {f * 1e6:.0f} µs = {t / f:.2f} × | {verdict(t / f <= 0.3) if name == 'right' else '–'} |")
tapd_rows = [r for r in rows if r["server"] == "tapd" and r["report"].get("sent")]
if tapd_rows:
    worst = max(tapd_rows, key=lambda r: r.get("ctx_switches", 0) / max(1, r["report"]["sent"]))
    w = worst.get("ctx_switches", 0) / max(1, worst["report"]["sent"])
    print(f"| tapd context switches per request ≤ 0.5 (all threads, every row) | at most {w:.2f} ({worst['name']} at {worst['report']['concurrency']}) | {verdict(w <= 0.5)} |")
    big = max(tapd_rows, key=lambda r: r["tapd_rss_kb"])
    print(f"| RSS ≤ 64 MB in every row | at most {big['tapd_rss_kb'] // 1024} MB ({big['name']} at {big['report']['concurrency']}) | {verdict(big['tapd_rss_kb'] <= 64 * 1024)} |")
try:
    argon2 = json.load(open(argon2_path))
except (FileNotFoundError, ValueError):
    argon2 = None
tap = row("tap-at-cores", "tapd", int(cores))
if tap and argon2:
    p99 = tap["report"]["latency_ms"]["p99"]
    print(f"| TAP rejections at concurrency {cores}: p99 ≤ 2 × one argon2 verification | p99 {p99:.1f} ms vs one verification {argon2['p50_ms']:.1f} ms (median of {argon2['count']}) = {p99 / argon2['p50_ms']:.2f} × | {verdict(p99 <= 2 * argon2['p50_ms'])} |")
PY
