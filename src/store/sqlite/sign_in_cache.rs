//! The answers of [`crate::store::Store::user_with_group_refs`], the read every sign-in makes
//! (RADIUS, federation, web), kept in memory until the next directory sync writes.
//!
//! Why: every sign-in's audit commit changes the database, so each read connection starts its
//! next read with an empty page cache and reads the user's pages again; on the RADIUS accept
//! path that read (and its hop to a blocking thread) was the largest cost in tapd's own code.
//! Users and groups change only through a sync (`apply_sync*`, and the manager resolution
//! after it, `set_manager_ids`), in this process: this backend is one node's (several nodes
//! share PostgreSQL, which has no such cache). So an answer stays right until a sync writes,
//! and each of those writes invalidates everything once it has ended.
//!
//! Correctness under a concurrent sync: a read records the generation before it starts and
//! its answer is used only while the generation is unchanged. A sync bumps the generation
//! after its commit, so an answer read from the snapshot before the commit can never be
//! used after it. Bounded: at [`MAX_ENTRIES`] the cache starts over (unknown names are
//! cached too, so a flood of made-up names can't grow it).
//!
//! May depend on: `model`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::model::{GroupRef, User};

/// Answers kept at most. Each holds the user's own fields (a few hundred bytes); group ids
/// and names are kept once for all answers.
pub(crate) const MAX_ENTRIES: usize = 16_384;

/// A user and its groups' names, or `None` for a name no user has.
pub(crate) type Answer = Option<(User, Vec<GroupRef>)>;

#[derive(Debug, Default)]
pub(crate) struct SignInCache {
    generation: AtomicU64,
    entries: Mutex<Entries>,
}

/// The answers of one generation. Many users share each group, so a user's group ids and
/// group references are kept as indices into tables shared by every answer: 10,000 users in
/// five groups each would otherwise hold 50,000 copies of ids and names.
#[derive(Debug, Default)]
struct Entries {
    answers: HashMap<String, (u64, Option<Compact>)>,
    group_ids: Vec<String>,
    group_index: HashMap<String, u32>,
    /// By group id index; a group outside the synced scope has an id but no reference.
    refs: HashMap<u32, GroupRef>,
}

#[derive(Debug)]
struct Compact {
    /// The user, its `group_ids` left empty.
    user: User,
    group_ids: Vec<u32>,
    refs: Vec<u32>,
}

impl Entries {
    fn intern(&mut self, id: &str) -> u32 {
        if let Some(&index) = self.group_index.get(id) {
            return index;
        }
        let index = u32::try_from(self.group_ids.len()).unwrap_or(u32::MAX);
        self.group_ids.push(id.to_owned());
        self.group_index.insert(id.to_owned(), index);
        index
    }

    fn compact(&mut self, (user, refs): &(User, Vec<GroupRef>)) -> Compact {
        let group_ids = user.group_ids.iter().map(|id| self.intern(id)).collect();
        let refs = refs
            .iter()
            .map(|group| {
                let index = self.intern(&group.id);
                self.refs.entry(index).or_insert_with(|| group.clone());
                index
            })
            .collect();
        Compact {
            user: User {
                group_ids: Vec::new(),
                ..user.clone()
            },
            group_ids,
            refs,
        }
    }

    /// `None` when a table lost an index (never, short of a bug): the caller reads the store.
    fn expand(&self, compact: &Compact) -> Option<(User, Vec<GroupRef>)> {
        let group_ids = compact
            .group_ids
            .iter()
            .map(|&i| self.group_ids.get(i as usize).cloned())
            .collect::<Option<Vec<String>>>()?;
        let refs = compact
            .refs
            .iter()
            .map(|i| self.refs.get(i).cloned())
            .collect::<Option<Vec<GroupRef>>>()?;
        Some((
            User {
                group_ids,
                ..compact.user.clone()
            },
            refs,
        ))
    }

    fn clear(&mut self) {
        *self = Entries::default();
    }
}

impl SignInCache {
    /// The generation to pass to [`SignInCache::put`] for a read that starts now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The answer for `key`, if one was read since the last sync committed.
    pub(crate) fn get(&self, key: &str) -> Option<Answer> {
        let current = self.generation();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.answers.get(key) {
            Some((generation, answer)) if *generation == current => match answer {
                None => Some(None),
                Some(compact) => entries.expand(compact).map(Some),
            },
            _ => None,
        }
    }

    /// Keeps `answer` for `key`, read from a snapshot taken at or after `generation`.
    pub(crate) fn put(&self, key: &str, generation: u64, answer: &Answer) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if generation != self.generation() {
            // A sync committed while this was read: the answer may be from before it.
            return;
        }
        if entries.answers.len() >= MAX_ENTRIES && !entries.answers.contains_key(key) {
            entries.clear();
        }
        let compact = answer.as_ref().map(|found| entries.compact(found));
        entries
            .answers
            .insert(key.to_owned(), (generation, compact));
    }

    /// Forgets every answer; called once a sync's transaction has ended (committed or not).
    pub(crate) fn invalidate(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alice(display_name: &str) -> Answer {
        Some((
            User {
                id: "u-alice".to_owned(),
                dn: "uid=alice,dc=example,dc=org".to_owned(),
                username: "alice".to_owned(),
                user_principal_name: "alice@example.org".to_owned(),
                display_name: display_name.to_owned(),
                mail: None,
                account_enabled: true,
                group_ids: vec!["g-staff".to_owned()],
                identity_conflict: None,
                manager_dn: None,
                manager_id: None,
                dates: Default::default(),
            },
            vec![GroupRef {
                id: "g-staff".to_owned(),
                dn: "cn=staff,dc=example,dc=org".to_owned(),
                display_name: "staff".to_owned(),
            }],
        ))
    }

    #[test]
    fn answers_until_a_sync_invalidates() {
        let cache = SignInCache::default();
        assert_eq!(cache.get("alice"), None);
        let generation = cache.generation();
        cache.put("alice", generation, &alice("Alice"));
        cache.put("nobody", generation, &None);
        assert_eq!(cache.get("alice"), Some(alice("Alice")));
        assert_eq!(cache.get("nobody"), Some(None));
        cache.invalidate();
        assert_eq!(cache.get("alice"), None);
        assert_eq!(cache.get("nobody"), None);
    }

    #[test]
    fn an_answer_read_across_a_sync_is_not_kept() {
        let cache = SignInCache::default();
        let before = cache.generation();
        // The read started; a sync commits and invalidates; the read's answer arrives.
        cache.invalidate();
        cache.put("alice", before, &alice("Alice (before the sync)"));
        assert_eq!(cache.get("alice"), None);
        let after = cache.generation();
        cache.put("alice", after, &alice("Alice"));
        assert_eq!(cache.get("alice"), Some(alice("Alice")));
    }

    #[test]
    fn users_sharing_groups_come_back_whole() {
        let cache = SignInCache::default();
        let generation = cache.generation();
        let mut bob = alice("Bob").unwrap();
        bob.0.id = "u-bob".to_owned();
        // A group outside the synced scope: an id without a reference.
        bob.0.group_ids.push("g-elsewhere".to_owned());
        cache.put("alice", generation, &alice("Alice"));
        cache.put("bob", generation, &Some(bob.clone()));
        assert_eq!(cache.get("bob"), Some(Some(bob)));
        assert_eq!(cache.get("alice"), Some(alice("Alice")));
        assert_eq!(cache.entries.lock().unwrap().group_ids.len(), 2);
    }

    #[test]
    fn stays_bounded() {
        let cache = SignInCache::default();
        let generation = cache.generation();
        for i in 0..MAX_ENTRIES + 10 {
            cache.put(&format!("user{i}"), generation, &None);
        }
        let len = cache.entries.lock().unwrap().answers.len();
        assert!(len <= MAX_ENTRIES, "{len}");
        assert_eq!(cache.get(&format!("user{}", MAX_ENTRIES + 9)), Some(None));
    }
}
