//! Transitive group membership, as a pure function of raw directory entries.
//!
//! Directories store membership one level at a time: a group lists member DNs (`member`,
//! `uniqueMember`) that may themselves be groups, and a `posixGroup` lists member usernames
//! (`memberUid`). TAP policy targets and admin roles count nested membership, so every source
//! resolves it here, once per sync, before anything is stored.
//!
//! How it scales (100,000 users and 10,000 groups are the design size): DNs are normalised
//! once and looked up in hash maps (no pairwise DN string compares); the group graph is
//! condensed into strongly connected components with an iterative Tarjan pass (no recursion, so
//! deep nesting cannot overflow the stack), and each component's member set is computed once,
//! from its own direct members and the already-computed sets of the components it contains.
//! Cycles are therefore harmless: every group of a cycle ends up with the same members.
//! Unknown member DNs (entries outside the synced base, deleted users) are ignored.
//!
//! May depend on: `dn` (DN normalisation) and std.

use std::collections::HashMap;

pub use crate::dn::normalize_dn;

/// A user as read from the directory, before memberships are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawUser {
    /// Distinguished name, as the directory spells it.
    pub dn: String,
    /// Stable id.
    pub id: String,
    /// Login name; what `memberUid` values name.
    pub username: String,
}

/// A group as read from the directory, before memberships are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawGroup {
    /// Distinguished name, as the directory spells it.
    pub dn: String,
    /// Stable id.
    pub id: String,
    /// The group's `cn`.
    pub cn: String,
    /// `member` and `uniqueMember` values: DNs of users or of nested groups.
    pub member_dns: Vec<String>,
    /// `memberUid` values (posixGroup): usernames.
    pub member_uids: Vec<String>,
}

/// Effective memberships, index-aligned with the slices given to [`resolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// For `users[i]`: the ids of every group it belongs to, transitively; sorted, unique.
    pub user_group_ids: Vec<Vec<String>>,
    /// For `groups[j]`: the ids of every user that belongs to it, transitively; sorted, unique.
    pub group_member_user_ids: Vec<Vec<String>>,
}

/// Which groups each group is a direct member of (nesting, one level), by id: enough to say
/// through which chain of groups a user holds a membership ([`GroupNesting::path`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupNesting {
    /// Group id → ids of the groups that list it as a member.
    parents: HashMap<String, Vec<String>>,
}

impl GroupNesting {
    /// The nesting of `groups` (member DNs naming other groups of the slice).
    pub fn of<'a>(groups: impl IntoIterator<Item = &'a RawGroup>) -> Self {
        let groups: Vec<&RawGroup> = groups.into_iter().collect();
        let by_dn: HashMap<String, &str> = groups
            .iter()
            .map(|g| (normalize_dn(&g.dn), g.id.as_str()))
            .collect();
        let mut parents: HashMap<String, Vec<String>> = HashMap::new();
        for parent in &groups {
            for member in &parent.member_dns {
                if let Some(child) = by_dn.get(&normalize_dn(member)) {
                    parents
                        .entry((*child).to_owned())
                        .or_default()
                        .push(parent.id.clone());
                }
            }
        }
        for list in parents.values_mut() {
            list.sort();
            list.dedup();
        }
        GroupNesting { parents }
    }

    /// A chain of group ids from a group the user is directly in to `target`, every step a
    /// nesting, for a user whose effective groups are `group_ids` (which must hold `target`).
    /// A group of `group_ids` none of whose member groups is in `group_ids` holds the user
    /// directly, so the chain starts at such a group when one leads to `target` (the shortest
    /// such chain); else (a cycle) at the nearest group. `[target]` when nothing nests into it.
    pub fn path(&self, group_ids: &[String], target: &str) -> Vec<String> {
        let held: HashMap<&str, ()> = group_ids.iter().map(|g| (g.as_str(), ())).collect();
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for child in group_ids {
            for parent in self.parents.get(child).into_iter().flatten() {
                if held.contains_key(parent.as_str()) && parent != child {
                    children
                        .entry(parent.as_str())
                        .or_default()
                        .push(child.as_str());
                }
            }
        }
        // Breadth first from the target down its member groups.
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([target]);
        let mut visited: HashMap<&str, ()> = HashMap::from([(target, ())]);
        let mut end = target;
        while let Some(g) = queue.pop_front() {
            let below = children.get(g).map(Vec::as_slice).unwrap_or_default();
            if below.is_empty() {
                end = g;
                break;
            }
            for &child in below {
                if visited.insert(child, ()).is_none() {
                    came_from.insert(child, g);
                    queue.push_back(child);
                }
            }
        }
        let mut path = vec![end.to_owned()];
        let mut at = end;
        while let Some(&next) = came_from.get(at) {
            path.push(next.to_owned());
            at = next;
        }
        path
    }
}

/// Resolves nested memberships: which groups each user is in, and which users each group
/// contains, both transitively. Duplicate DNs or usernames resolve to the first entry.
pub fn resolve(users: &[RawUser], groups: &[RawGroup]) -> Resolved {
    let mut user_by_dn: HashMap<String, usize> = HashMap::with_capacity(users.len());
    let mut user_by_name: HashMap<String, usize> = HashMap::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        user_by_dn.entry(normalize_dn(&user.dn)).or_insert(i);
        user_by_name
            .entry(user.username.to_lowercase())
            .or_insert(i);
    }
    let mut group_by_dn: HashMap<String, usize> = HashMap::with_capacity(groups.len());
    for (j, group) in groups.iter().enumerate() {
        group_by_dn.entry(normalize_dn(&group.dn)).or_insert(j);
    }

    // Direct edges: group -> users, group -> nested groups.
    let mut direct_users: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    let mut nested: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (j, group) in groups.iter().enumerate() {
        for dn in &group.member_dns {
            let key = normalize_dn(dn);
            if let Some(&u) = user_by_dn.get(&key) {
                direct_users[j].push(u);
            } else if let Some(&g) = group_by_dn.get(&key) {
                if g != j {
                    nested[j].push(g);
                }
            }
        }
        for name in &group.member_uids {
            if let Some(&u) = user_by_name.get(&name.trim().to_lowercase()) {
                direct_users[j].push(u);
            }
        }
    }

    let (component_of, components) = strongly_connected_components(&nested);

    // Components come out of Tarjan in reverse topological order: every component a group
    // contains is finished before the group's own, so its member set is already known.
    let mut component_members: Vec<Vec<usize>> = Vec::with_capacity(components.len());
    let mut stamp: Vec<usize> = vec![usize::MAX; users.len()];
    for (c, component) in components.iter().enumerate() {
        let mut members = Vec::new();
        let mut add = |u: usize, members: &mut Vec<usize>| {
            if stamp[u] != c {
                stamp[u] = c;
                members.push(u);
            }
        };
        for &g in component {
            for &u in &direct_users[g] {
                add(u, &mut members);
            }
            for &inner in &nested[g] {
                let inner_component = component_of[inner];
                if inner_component != c {
                    for &u in &component_members[inner_component] {
                        add(u, &mut members);
                    }
                }
            }
        }
        component_members.push(members);
    }

    let mut user_groups: Vec<Vec<usize>> = vec![Vec::new(); users.len()];
    let mut group_member_user_ids = Vec::with_capacity(groups.len());
    for (j, &c) in component_of.iter().enumerate() {
        let members = &component_members[c];
        let mut ids: Vec<String> = Vec::with_capacity(members.len());
        for &u in members {
            user_groups[u].push(j);
            ids.push(users[u].id.clone());
        }
        ids.sort_unstable();
        ids.dedup();
        group_member_user_ids.push(ids);
    }
    let user_group_ids = user_groups
        .into_iter()
        .map(|gs| {
            let mut ids: Vec<String> = gs.into_iter().map(|g| groups[g].id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();

    Resolved {
        user_group_ids,
        group_member_user_ids,
    }
}

/// Group-first resolution, for a read that hands users over while it is still reading: built
/// from the groups alone, it answers one user at a time with the effective group ids
/// [`resolve`] would give that user. (Group member lists are not kept: the stores derive them
/// from the users' group ids.)
///
/// The answers equal [`resolve`]'s unless a user read later changes what an earlier entry
/// meant, which [`GroupResolver::is_exact`] reports: a user whose DN is also a group's (then
/// `member` values naming that DN mean the user, not the group), or two users with the same
/// username named by a `memberUid` (then only the first by id is the member). A caller that
/// finds it not exact resolves everything again with [`resolve`].
///
/// Cost per user: one DN normalisation, two hash lookups and a walk up the nesting from its
/// direct groups, each group visited once (cycles included).
#[derive(Debug)]
pub struct GroupResolver {
    ids: Vec<String>,
    /// Each group's position in id order, so group ids come out sorted without string compares.
    rank: Vec<usize>,
    /// For each group, the groups that list it as a member.
    parents: Vec<Vec<usize>>,
    group_by_dn: HashMap<String, usize>,
    /// Normalised member DNs that are no group's, and the groups that list them.
    by_dn: HashMap<String, Vec<usize>>,
    /// Lower-cased `memberUid` values, and the groups that list them.
    by_uid: HashMap<String, Vec<usize>>,
    /// Usernames that matched a `memberUid` so far (lower case).
    claimed_uids: std::collections::HashSet<String>,
    stamp: Vec<u32>,
    resolved_users: u32,
    exact: bool,
}

impl GroupResolver {
    /// Prepares the resolution of users against `groups`.
    pub fn new<'g>(groups: impl IntoIterator<Item = &'g RawGroup>) -> Self {
        let groups: Vec<&RawGroup> = groups.into_iter().collect();
        let mut group_by_dn: HashMap<String, usize> = HashMap::with_capacity(groups.len());
        for (j, group) in groups.iter().enumerate() {
            group_by_dn.entry(normalize_dn(&group.dn)).or_insert(j);
        }
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
        let mut by_dn: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_uid: HashMap<String, Vec<usize>> = HashMap::new();
        for (j, group) in groups.iter().enumerate() {
            for dn in &group.member_dns {
                let key = normalize_dn(dn);
                match group_by_dn.get(&key) {
                    Some(&g) if g != j => parents[g].push(j),
                    Some(_) => {}
                    None => by_dn.entry(key).or_default().push(j),
                }
            }
            for name in &group.member_uids {
                by_uid
                    .entry(name.trim().to_lowercase())
                    .or_default()
                    .push(j);
            }
        }
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_unstable_by(|&a, &b| groups[a].id.cmp(&groups[b].id));
        let mut rank = vec![0; groups.len()];
        for (position, &g) in order.iter().enumerate() {
            rank[g] = position;
        }
        GroupResolver {
            ids: groups.iter().map(|g| g.id.clone()).collect(),
            rank,
            parents,
            group_by_dn,
            by_dn,
            by_uid,
            claimed_uids: std::collections::HashSet::new(),
            stamp: vec![u32::MAX; groups.len()],
            resolved_users: 0,
            exact: true,
        }
    }

    /// The effective group ids (sorted, unique) of the user with this DN and username.
    pub fn user_group_ids(&mut self, dn: &str, username: &str) -> Vec<String> {
        let user = self.resolved_users;
        self.resolved_users = self.resolved_users.saturating_add(1);
        let dn = normalize_dn(dn);
        if self.group_by_dn.contains_key(&dn) {
            self.exact = false;
        }
        let by_uid = if self.by_uid.is_empty() {
            None
        } else {
            let name = username.to_lowercase();
            let groups = self.by_uid.get(&name);
            if groups.is_some() && !self.claimed_uids.insert(name) {
                self.exact = false;
            }
            groups
        };
        let direct = self
            .by_dn
            .get(&dn)
            .into_iter()
            .chain(by_uid)
            .flatten()
            .copied();
        let mut found: Vec<usize> = Vec::new();
        for g in direct {
            if self.stamp[g] != user {
                self.stamp[g] = user;
                found.push(g);
            }
        }
        let mut next = 0;
        while let Some(&g) = found.get(next) {
            next += 1;
            for &p in &self.parents[g] {
                if self.stamp[p] != user {
                    self.stamp[p] = user;
                    found.push(p);
                }
            }
        }
        found.sort_unstable_by_key(|&g| self.rank[g]);
        let mut ids: Vec<String> = Vec::with_capacity(found.len());
        for &g in &found {
            if ids.last() != Some(&self.ids[g]) {
                ids.push(self.ids[g].clone());
            }
        }
        ids
    }

    /// False when a later user changed what an earlier entry meant (see the type's doc): the
    /// answers so far may differ from [`resolve`]'s.
    pub fn is_exact(&self) -> bool {
        self.exact
    }
}

/// Tarjan's algorithm without recursion. Returns each node's component index and the
/// components in completion order (a component appears after every component it reaches).
fn strongly_connected_components(edges: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    const UNVISITED: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut component_of = vec![0usize; n];
    let mut components: Vec<Vec<usize>> = Vec::new();
    let mut counter = 0usize;
    let mut calls: Vec<(usize, usize)> = Vec::new();

    for start in 0..n {
        if index[start] != UNVISITED {
            continue;
        }
        index[start] = counter;
        low[start] = counter;
        counter += 1;
        stack.push(start);
        on_stack[start] = true;
        calls.push((start, 0));

        while let Some(&mut (v, ref mut next)) = calls.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                if index[w] == UNVISITED {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let c = components.len();
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component_of[w] = c;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    (component_of, components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> RawUser {
        RawUser {
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            id: format!("u-{name}"),
            username: name.to_owned(),
        }
    }

    fn group(cn: &str, member_dns: &[&str], member_uids: &[&str]) -> RawGroup {
        RawGroup {
            dn: format!("cn={cn},ou=groups,dc=example,dc=org"),
            id: format!("g-{cn}"),
            cn: cn.to_owned(),
            member_dns: member_dns.iter().map(|s| (*s).to_owned()).collect(),
            member_uids: member_uids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_nesting_gives_the_path_of_a_membership() {
        let groups = vec![
            group(
                "tap-users",
                &[
                    "uid=alice,ou=people,dc=example,dc=org",
                    "CN=Staff,ou=groups,dc=example,dc=org",
                ],
                &[],
            ),
            group(
                "staff",
                &["cn=engineering,ou=groups,dc=example,dc=org"],
                &[],
            ),
            group(
                "engineering",
                &["uid=erin,ou=people,dc=example,dc=org"],
                &[],
            ),
            group("other", &[], &[]),
        ];
        let nesting = GroupNesting::of(&groups);
        let erin = ids(&["g-engineering", "g-staff", "g-tap-users"]);
        assert_eq!(
            nesting.path(&erin, "g-tap-users"),
            ids(&["g-engineering", "g-staff", "g-tap-users"])
        );
        assert_eq!(
            nesting.path(&erin, "g-staff"),
            ids(&["g-engineering", "g-staff"])
        );
        // Alice is directly in tap-users.
        assert_eq!(
            nesting.path(&ids(&["g-tap-users"]), "g-tap-users"),
            ids(&["g-tap-users"])
        );
        // No nesting known: the group itself.
        assert_eq!(
            GroupNesting::default().path(&erin, "g-tap-users"),
            ids(&["g-tap-users"])
        );
        // A cycle ends.
        let cycle = vec![
            group("a", &["cn=b,ou=groups,dc=example,dc=org"], &[]),
            group("b", &["cn=a,ou=groups,dc=example,dc=org"], &[]),
        ];
        let path = GroupNesting::of(&cycle).path(&ids(&["g-a", "g-b"]), "g-a");
        assert_eq!(path.last().map(String::as_str), Some("g-a"));
    }

    #[test]
    fn three_levels_of_nesting() {
        let users = vec![user("alice"), user("erin")];
        let groups = vec![
            group(
                "tap-users",
                &[
                    "uid=alice,ou=people,dc=example,dc=org",
                    "cn=staff,ou=groups,dc=example,dc=org",
                ],
                &[],
            ),
            group(
                "staff",
                &["cn=engineering,ou=groups,dc=example,dc=org"],
                &[],
            ),
            group(
                "engineering",
                &["uid=erin,ou=people,dc=example,dc=org"],
                &[],
            ),
        ];
        let r = resolve(&users, &groups);
        assert_eq!(r.user_group_ids[0], ids(&["g-tap-users"]));
        assert_eq!(
            r.user_group_ids[1],
            ids(&["g-engineering", "g-staff", "g-tap-users"])
        );
        assert_eq!(r.group_member_user_ids[0], ids(&["u-alice", "u-erin"]));
        assert_eq!(r.group_member_user_ids[1], ids(&["u-erin"]));
        assert_eq!(r.group_member_user_ids[2], ids(&["u-erin"]));
    }

    #[test]
    fn cycle_members_share_members_and_terminate() {
        let users = vec![user("a"), user("b"), user("c")];
        let groups = vec![
            group(
                "x",
                &[
                    "cn=y,ou=groups,dc=example,dc=org",
                    "uid=a,ou=people,dc=example,dc=org",
                ],
                &[],
            ),
            group(
                "y",
                &[
                    "cn=z,ou=groups,dc=example,dc=org",
                    "uid=b,ou=people,dc=example,dc=org",
                ],
                &[],
            ),
            group("z", &["cn=x,ou=groups,dc=example,dc=org"], &[]),
            group("outer", &["cn=z,ou=groups,dc=example,dc=org"], &["c"]),
            // Self-membership is tolerated too.
            group("self", &["cn=self,ou=groups,dc=example,dc=org"], &["c"]),
        ];
        let r = resolve(&users, &groups);
        for j in 0..3 {
            assert_eq!(r.group_member_user_ids[j], ids(&["u-a", "u-b"]));
        }
        assert_eq!(r.group_member_user_ids[3], ids(&["u-a", "u-b", "u-c"]));
        assert_eq!(r.group_member_user_ids[4], ids(&["u-c"]));
        assert_eq!(r.user_group_ids[0], ids(&["g-outer", "g-x", "g-y", "g-z"]));
        assert_eq!(r.user_group_ids[2], ids(&["g-outer", "g-self"]));
    }

    #[test]
    fn member_uid_and_case_insensitive_dns() {
        let users = vec![user("alice"), user("bob")];
        let groups = vec![
            group("posix", &[], &["ALICE", "nobody"]),
            group(
                "mixed",
                &[
                    "UID=Bob , OU=People, DC=EXAMPLE,dc=org",
                    "cn=unknown,ou=people,dc=example,dc=org",
                    "CN = Posix,ou=Groups,dc=example,dc=org",
                ],
                &[],
            ),
        ];
        let r = resolve(&users, &groups);
        assert_eq!(r.group_member_user_ids[0], ids(&["u-alice"]));
        assert_eq!(r.group_member_user_ids[1], ids(&["u-alice", "u-bob"]));
        assert_eq!(r.user_group_ids[0], ids(&["g-mixed", "g-posix"]));
        assert_eq!(r.user_group_ids[1], ids(&["g-mixed"]));
    }

    /// Resolves `users` one by one with [`GroupResolver`] and checks the answers against
    /// [`resolve`]; returns whether the resolver called itself exact.
    fn streamed_matches_resolve(users: &[RawUser], groups: &[RawGroup]) -> bool {
        let expected = resolve(users, groups);
        let mut resolver = GroupResolver::new(groups);
        let got: Vec<Vec<String>> = users
            .iter()
            .map(|u| resolver.user_group_ids(&u.dn, &u.username))
            .collect();
        let exact = resolver.is_exact();
        if exact {
            assert_eq!(got, expected.user_group_ids);
        }
        exact
    }

    #[test]
    fn streamed_resolution_equals_resolve() {
        let users = vec![user("alice"), user("erin"), user("bob")];
        let groups = vec![
            group(
                "tap-users",
                &[
                    "uid=alice,ou=people,dc=example,dc=org",
                    "cn=staff,ou=groups,dc=example,dc=org",
                ],
                &[],
            ),
            group(
                "staff",
                &["CN=Engineering, ou=groups,dc=example,dc=org"],
                &["BOB"],
            ),
            group(
                "engineering",
                &[
                    "uid=erin,ou=people,dc=example,dc=org",
                    "uid=erin,ou=people,dc=example,dc=org",
                    "cn=tap-users,ou=groups,dc=example,dc=org",
                ],
                &[],
            ),
            group("self", &["cn=self,ou=groups,dc=example,dc=org"], &["alice"]),
            group("empty", &[], &[]),
        ];
        assert!(streamed_matches_resolve(&users, &groups));
        assert!(streamed_matches_resolve(&users, &[]));
        assert!(streamed_matches_resolve(&[], &groups));
    }

    #[test]
    fn streamed_resolution_reports_when_it_is_not_exact() {
        // A user entry that is also a group entry.
        let mut both = user("both");
        both.dn = "cn=staff,ou=groups,dc=example,dc=org".to_owned();
        let groups = vec![
            group("outer", &["cn=staff,ou=groups,dc=example,dc=org"], &[]),
            group("staff", &[], &["x"]),
        ];
        assert!(!streamed_matches_resolve(&[user("a"), both], &groups));
        // Two users with one memberUid-named username: only the first by id is a member.
        let mut twin = user("twin");
        twin.id = "u-another".to_owned();
        let groups = vec![group("posix", &[], &["twin"])];
        assert!(!streamed_matches_resolve(
            &[user("twin"), twin.clone()],
            &groups
        ));
        // The same username not named by any memberUid is harmless.
        assert!(streamed_matches_resolve(&[user("twin"), twin], &[]));
    }

    #[test]
    fn deep_chain_does_not_overflow_the_stack() {
        let users = vec![user("deep")];
        let n = 20_000;
        let mut groups: Vec<RawGroup> = (0..n)
            .map(|i| {
                group(
                    &format!("g{i}"),
                    &[&format!("cn=g{},ou=groups,dc=example,dc=org", i + 1)],
                    &[],
                )
            })
            .collect();
        groups.push(group(&format!("g{n}"), &[], &["deep"]));
        let r = resolve(&users, &groups);
        assert_eq!(r.user_group_ids[0].len(), n + 1);
        assert_eq!(r.group_member_user_ids[0], ids(&["u-deep"]));
    }

    #[test]
    fn scales_to_design_size() {
        // 100,000 users in 10,000 groups: each group holds 10 users directly; groups form
        // chains of ten nested groups, and one "all" group nests the head of every chain.
        let users: Vec<RawUser> = (0..100_000).map(|i| user(&format!("user{i}"))).collect();
        let mut groups: Vec<RawGroup> = (0..10_000)
            .map(|g| RawGroup {
                dn: format!("cn=g{g},ou=groups,dc=example,dc=org"),
                id: format!("g-{g}"),
                cn: format!("g{g}"),
                member_dns: (0..10)
                    .map(|k| format!("uid=user{},ou=people,dc=example,dc=org", g * 10 + k))
                    .chain(
                        (g % 10 != 9).then(|| format!("cn=g{},ou=groups,dc=example,dc=org", g + 1)),
                    )
                    .collect(),
                member_uids: Vec::new(),
            })
            .collect();
        groups.push(RawGroup {
            dn: "cn=all,ou=groups,dc=example,dc=org".to_owned(),
            id: "g-all".to_owned(),
            cn: "all".to_owned(),
            member_dns: (0..1_000)
                .map(|c| format!("CN=G{},OU=Groups, DC=Example,DC=Org", c * 10))
                .collect(),
            member_uids: Vec::new(),
        });
        let started = std::time::Instant::now();
        let r = resolve(&users, &groups);
        let elapsed = started.elapsed();
        assert_eq!(r.group_member_user_ids[10_000].len(), 100_000);
        assert_eq!(r.group_member_user_ids[9_990].len(), 100);
        assert_eq!(r.group_member_user_ids[9_999].len(), 10);
        // user 99_999 is in g9999, g9998, … g9990, and "all".
        assert_eq!(r.user_group_ids[99_999].len(), 11);
        // Generous even for an unoptimised build on a slow machine; quadratic would take minutes.
        assert!(elapsed.as_secs() < 60, "resolve took {elapsed:?}");
    }
}
