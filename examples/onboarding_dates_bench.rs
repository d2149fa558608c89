//! Benchmark driver for `scripts/bench-onboarding.sh` (BENCHMARKS.md, "Onboarding: a date
//! rule's look at the users"): a fresh SQLite store with `--users` users, one in a hundred with
//! an `employeehiredate` in a five-day window and the rest with dates outside it, then what a
//! date rule reads at each sync, timed both ways: every user (`users(None)` and a filter in
//! Rust, as before) and `users_dated_between`. Both must find the same users. Not a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tapd::model::User;
use tapd::store::sqlite::SqliteStore;
use tapd::store::{Store, SyncPlan};

#[tokio::main]
async fn main() {
    let users: usize = std::env::args()
        .skip_while(|a| a != "--users")
        .nth(1)
        .map(|n| n.parse().expect("--users N"))
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("tapd.db"), Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
    let (from, to) = (today, NaiveDate::from_ymd_opt(2026, 12, 11).unwrap());
    let fence = store
        .try_sync_lease("bench", Duration::from_secs(600))
        .await
        .unwrap()
        .granted()
        .expect("the lease is free")
        .fence();
    let all: Vec<User> = (0..users)
        .map(|i| {
            let name = format!("user{i:06}");
            // One in a hundred hired in three days; the others between 40 and 940 days ago.
            let hired = if i % 100 == 0 {
                today.checked_add_days(chrono::Days::new(3))
            } else {
                today.checked_sub_days(chrono::Days::new(40 + (i % 900) as u64))
            };
            let dates = [("employeehiredate".to_owned(), hired.unwrap())].into();
            User {
                id: format!("id-{i:06}"),
                dn: format!("uid={name},ou=people,dc=example,dc=org"),
                username: name.clone(),
                user_principal_name: format!("{name}@example.org"),
                display_name: format!("User {i}"),
                mail: Some(format!("{name}@example.org")),
                account_enabled: true,
                group_ids: Vec::new(),
                identity_conflict: None,
                manager_dn: Some("uid=boss,ou=people,dc=example,dc=org".to_owned()),
                manager_id: None,
                dates,
            }
        })
        .collect();
    for chunk in all.chunks(10_000) {
        let plan = SyncPlan {
            upsert_users: chunk.to_vec(),
            ..SyncPlan::default()
        };
        store.apply_sync(&fence, &plan, &[]).await.unwrap();
    }
    let attribute = "employeehiredate";
    for _ in 0..3 {
        let started = Instant::now();
        let every: Vec<String> = store
            .users(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|u| {
                u.dates
                    .get(attribute)
                    .is_some_and(|d| from <= *d && *d <= to)
            })
            .map(|u| u.id)
            .collect();
        let read_all = started.elapsed();
        let started = Instant::now();
        let dated = store
            .users_dated_between(attribute, from, to)
            .await
            .unwrap();
        let narrowed = started.elapsed();
        assert_eq!(every, dated);
        println!(
            "BENCH onboarding date rule: {users} users, {} in the window: every user read and \
             filtered {:.1} ms, users_dated_between {:.1} ms",
            dated.len(),
            read_all.as_secs_f64() * 1000.0,
            narrowed.as_secs_f64() * 1000.0
        );
    }
}
