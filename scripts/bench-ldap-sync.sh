#!/usr/bin/env bash
# LDAP sync benchmark (issue 3): loads USERS users and GROUPS groups into a throwaway slapd,
# times `ldapsearch` dumping the same entries with the same attributes and page size, then a
# full tapd sync into a fresh SQLite store (with its peak RSS from /usr/bin/time -v), then one
# changed user and an incremental sync; then the same with RFC 4533 content sync. Needs slapd,
# ldap-utils and time (Debian packages; scripts/test.sh installs the first two). Prints a
# Markdown block for BENCHMARKS.md.
#
#   scripts/bench-ldap-sync.sh [USERS] [GROUPS]      (defaults 100000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
NUSERS=${1:-100000}
NGROUPS=${2:-10000}
PAGE=1000
for tool in slapd slapadd ldapsearch; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "$tool missing: run scripts/test.sh" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing: apt-get install time" >&2; exit 1; }
export PATH=/usr/sbin:$PATH
calc() { python3 -c "print(round($1, 3))"; }

work=$(mktemp -d)
slapd_pid=""
cleanup() {
  if [ -n "$slapd_pid" ]; then kill "$slapd_pid" 2>/dev/null || true; wait "$slapd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "generating $NUSERS users and $NGROUPS groups..." >&2
python3 scripts/gen-bench-ldif.py "$NUSERS" "$NGROUPS" > "$work/data.ldif"

mkdir "$work/db"
# With slapd's syncprov overlay, as a directory offering RFC 4533 content sync would run. The
# service account keeps the size limit of 500, so its incremental syncs fall back to
# modifyTimestamp; the content sync run binds as the rootdn, which has no limit.
bench_slapd_conf "$work" | sed 's/^moduleload back_mdb$/moduleload back_mdb\nmoduleload syncprov/' > "$work/slapd.conf"
cat >> "$work/slapd.conf" <<'CONF'
index entryCSN eq
overlay syncprov
syncprov-checkpoint 1000 10
syncprov-sessionlog 10000
CONF

echo "slapadd..." >&2
start=$(date +%s.%N)
slapadd -q -f "$work/slapd.conf" -l "$work/data.ldif"
load_seconds=$(calc "$(date +%s.%N) - $start")

start_bench_slapd "$work"
url=$ldap_url

bind=(-x -H "$url" -D "cn=tapd,ou=services,dc=example,dc=org" -w tapd-service-pw)
user_attrs="entryUUID uid mail displayName cn pwdAccountLockedTime nsAccountLock modifyTimestamp"
group_attrs="entryUUID cn member modifyTimestamp uniqueMember memberUid"
dump() {
  ldapsearch "${bind[@]}" -E "pr=$PAGE/noprompt" -b "dc=example,dc=org" \
    "(objectClass=inetOrgPerson)" $user_attrs > "$work/users.out"
  ldapsearch "${bind[@]}" -E "pr=$PAGE/noprompt" -b "dc=example,dc=org" \
    "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))" $group_attrs > "$work/groups.out"
}
echo "warming up and timing ldapsearch..." >&2
dump
best=""
for _ in 1 2 3; do
  start=$(date +%s.%N)
  dump
  t=$(calc "$(date +%s.%N) - $start")
  if [ -z "$best" ] || [ "$(calc "int($t < $best)")" = 1 ]; then best=$t; fi
done
dumped=$(grep -c '^dn:' "$work/users.out" "$work/groups.out" | awk -F: '{s+=$2} END {print s}')

# slapadd stamped every entry within a second or two. An incremental read starts at the newest
# modifyTimestamp minus the read time and a second, so it would read the whole bulk load again;
# a live directory's newest change is recent. Make it so: one unrelated change, later.
sleep 5
printf 'dn: uid=user000000,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: description\ndescription: touched by the benchmark\n' |
  ldapmodify -x -H "$url" -D "cn=admin,dc=example,dc=org" -w bench-root >/dev/null

echo "building the benchmark driver..." >&2
cargo build --release --quiet --example ldap_sync_bench
bench=${CARGO_TARGET_DIR:-target}/release/examples/ldap_sync_bench
runs=()
slapd_cpu() { awk '{print $14 + $15}' "/proc/$slapd_pid/stat"; }
for run in 1 2 3; do
  # The previous run left ~200 MB of database and log pages for the kernel to write back;
  # flush them now, or that writeback lands inside this run's fsyncs.
  sync
  cut -d' ' -f1 /proc/loadavg > "$work/load-$run.out"
  slapd_before=$(slapd_cpu)
  /usr/bin/time -v "$bench" --url "$url" --bind-dn "cn=tapd,ou=services,dc=example,dc=org" \
    --bind-password tapd-service-pw --db "$work/tapd-$run.db" --page-size "$PAGE" \
    --modify-dn "uid=user000042,ou=people,dc=example,dc=org" --root-password bench-root \
    > "$work/bench-$run.out" 2> "$work/time-$run.out"
  calc "($(slapd_cpu) - $slapd_before) / 100" > "$work/slapd-$run.out"
  runs+=("$run")
done
echo "content sync run..." >&2
sync
/usr/bin/time -v "$bench" --url "$url" --bind-dn "cn=admin,dc=example,dc=org" \
  --bind-password bench-root --db "$work/tapd-content-sync.db" --page-size "$PAGE" \
  --refresh-first --modify-dn "uid=user000043,ou=people,dc=example,dc=org" \
  --root-password bench-root > "$work/bench-cs.out" 2> "$work/time-cs.out"
cs_first=$(grep first_incremental_seconds "$work/bench-cs.out" | cut -d= -f2)
cs_incremental=$(grep incremental_sync_seconds "$work/bench-cs.out" | cut -d= -f2)
cs_updated=$(grep incremental_users_updated "$work/bench-cs.out" | cut -d= -f2)
cs_rss_kb=$(grep 'Maximum resident set size' "$work/time-cs.out" | awk '{print $NF}')

best_run=$(for run in "${runs[@]}"; do
  echo "$(grep full_sync_seconds "$work/bench-$run.out" | cut -d= -f2) $run"; done | sort -n | head -1 | cut -d' ' -f2)
full=$(grep full_sync_seconds "$work/bench-$best_run.out" | cut -d= -f2)
incremental=$(grep incremental_sync_seconds "$work/bench-$best_run.out" | cut -d= -f2)
counts=$(grep '^users=' "$work/bench-$best_run.out")
rss_kb=$(grep 'Maximum resident set size' "$work/time-$best_run.out" | awk '{print $NF}')
all_full=$(for run in "${runs[@]}"; do grep full_sync_seconds "$work/bench-$run.out" | cut -d= -f2; done | paste -sd' ')
# CPU seconds of each run (full and incremental sync together): tapd user+system, slapd.
all_cpu=$(for run in "${runs[@]}"; do
  user=$(grep 'User time' "$work/time-$run.out" | awk '{print $NF}')
  sys=$(grep 'System time' "$work/time-$run.out" | awk '{print $NF}')
  echo "$user+$sys / $(cat "$work/slapd-$run.out")"; done | paste -sd';' | sed 's/;/; /g')
all_load=$(for run in "${runs[@]}"; do cat "$work/load-$run.out"; done | paste -sd' ')
ratio=$(python3 -c "print(round($full / $best, 2))")

cat <<MD
### Run of $(date -u +%Y-%m-%d) on $(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}'), $(slapd -VV 2>&1 | head -1 | sed 's/.*slapd \([^ ]*\).*/OpenLDAP slapd \1/')

| what | result | target |
| --- | --- | --- |
| entries | $NUSERS users, $NGROUPS groups ($counts; $dumped dumped by ldapsearch) | |
| slapadd load | ${load_seconds} s | |
| \`ldapsearch\` dump, same attributes, pages of $PAGE (best of 3) | ${best} s | |
| full tapd sync into a fresh SQLite store (best of 3: $all_full s) | ${full} s = ${ratio} × ldapsearch | ≤ 1.5 × |
| peak RSS of the sync process | $((rss_kb / 1024)) MB | ≤ 300 MB |
| incremental sync after one changed user (\`modifyTimestamp\`: the size-limited service account can't use content sync) | ${incremental} s | ≤ 1 s |
| RFC 4533 content sync (syncprov; bound as the rootdn, no size limit): first refresh after start, every entry once | ${cs_first} s | |
| … then incremental sync after one changed user ($cs_updated updated) | ${cs_incremental} s | ≤ 1 s |
| peak RSS of the content sync run | $((cs_rss_kb / 1024)) MB | ≤ 300 MB |
| CPU s per run, tapd user+system / slapd (runs 1-3, full and incremental sync) | $all_cpu | |
| load average (1 min) when each run started | $all_load | |
MD
