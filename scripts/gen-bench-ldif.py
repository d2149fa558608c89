#!/usr/bin/env python3
# Writes the benchmark directory as LDIF to stdout: USERS users uid=userNNNNNN (password
# userNNNNNN-pw), GROUPS groups with chains of ten nested groups, and the service account
# cn=tapd,ou=services (password tapd-service-pw). Used by scripts/bench-ldap-sync.sh and
# scripts/bench-radius.sh.
#
#   scripts/gen-bench-ldif.py USERS GROUPS > data.ldif
import sys
users, groups = int(sys.argv[1]), int(sys.argv[2])
base = "dc=example,dc=org"
out = sys.stdout
out.write(f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n")
for ou in ("people", "groups", "services"):
    out.write(f"dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n\n")
out.write(f"dn: cn=tapd,ou=services,{base}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: tapd\nuserPassword: tapd-service-pw\n\n")
for i in range(users):
    out.write(f"dn: uid=user{i:06d},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: user{i:06d}\n"
              f"cn: Bench User {i}\nsn: User\nmail: user{i:06d}@example.org\nuserPassword: user{i:06d}-pw\n\n")
per_group = max(1, users // groups)
for g in range(groups):
    out.write(f"dn: cn=group{g:05d},ou=groups,{base}\nobjectClass: groupOfNames\ncn: group{g:05d}\n")
    for k in range(per_group):
        out.write(f"member: uid=user{(g * per_group + k) % users:06d},ou=people,{base}\n")
    # Chains of ten nested groups.
    if g % 10 != 9 and g + 1 < groups:
        out.write(f"member: cn=group{g + 1:05d},ou=groups,{base}\n")
    out.write("\n")
