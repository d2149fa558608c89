# Shared by the benchmark scripts (sourced, not run): a free loopback port, and a throwaway
# slapd on one. Each script keeps its own data, timing and teardown.

# A free loopback port: TCP unless the first argument is "udp".
free_port() {
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "${1:-tcp}"
}

# Prints the slapd.conf every benchmark shares for the directory in WORK/db (back_mdb, base
# dc=example,dc=org, root cn=admin with password bench-root, sizelimit 500 so every read
# pages). A script appends what only it needs (indexes, a monitor database).
bench_slapd_conf() {
  local work=$1
  cat <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $work/slapd.pid
argsfile $work/slapd.args
sizelimit size.soft=500 size.hard=500 size.prtotal=unlimited
database mdb
maxsize 4294967296
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw bench-root
directory $work/db
index objectClass eq
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
CONF
}

# Starts slapd on WORK/slapd.conf (already loaded with slapadd) on a free loopback port and
# waits until it answers. Sets ldap_port, ldap_url and slapd_pid.
start_bench_slapd() {
  local work=$1
  ldap_port=$(free_port)
  ldap_url="ldap://127.0.0.1:$ldap_port"
  slapd -f "$work/slapd.conf" -h "$ldap_url/" -d 0 2>"$work/slapd.log" &
  slapd_pid=$!
  for _ in $(seq 100); do
    ldapsearch -x -H "$ldap_url" -b "" -s base >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "slapd did not answer on $ldap_url; its log:" >&2
  cat "$work/slapd.log" >&2
  return 1
}
