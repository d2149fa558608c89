//! Benchmark driver for `scripts/bench-ldap-sync.sh`: one full directory sync from an LDAP
//! server into a fresh SQLite store, then (optionally) a first incremental sync, one changed
//! user and another incremental sync, printing `key=value` timings. Not a test; run it under `/usr/bin/time -v` for the
//! peak RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// The allocator `tapd` runs on (see `src/bin/tapd.rs`), so the benchmark measures what the
/// daemon does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use tapd::clock::SystemClock;
use tapd::config::{DirectoryPreset, LdapTransport, Secret};
use tapd::directory::ldap::{LdapDirectory, LdapSettings};
use tapd::store::sqlite::SqliteStore;
use tapd::store::Store;
use tapd::sync::plan::DeletionGuard;
use tapd::sync::{SyncOptions, Syncer};

#[derive(Parser)]
struct Args {
    /// `ldap://127.0.0.1:PORT`.
    #[arg(long)]
    url: String,
    /// Search base.
    #[arg(long, default_value = "dc=example,dc=org")]
    base_dn: String,
    /// Service account.
    #[arg(long)]
    bind_dn: String,
    /// Its password.
    #[arg(long)]
    bind_password: String,
    /// SQLite file to create (removed first if present).
    #[arg(long)]
    db: PathBuf,
    /// Paged-results page size.
    #[arg(long, default_value_t = 1000)]
    page_size: u32,
    /// After the full sync, change this user's cn (as `--root-dn`) and sync incrementally.
    #[arg(long)]
    modify_dn: Option<String>,
    /// Administrator DN for the change.
    #[arg(long, default_value = "cn=admin,dc=example,dc=org")]
    root_dn: String,
    /// Its password.
    #[arg(long, default_value = "")]
    root_password: String,
    /// Before the sync, time a bare directory read (for profiling; raises the peak RSS).
    #[arg(long)]
    breakdown: bool,
    /// Before the change, run one incremental sync and time it: with RFC 4533 content sync
    /// that is the first refresh, which has no cookie yet and reads every entry.
    #[arg(long)]
    refresh_first: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let _ = std::fs::remove_file(&args.db);
    let preset = DirectoryPreset::OpenLdap;
    let settings = LdapSettings {
        url: args.url.clone(),
        transport: LdapTransport::Plain,
        bind: Some((
            args.bind_dn.clone(),
            Secret::new(args.bind_password.clone()),
        )),
        ca_file: None,
        tls_verify: true,
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(60),
        base_dn: args.base_dn.clone(),
        user_base: args.base_dn.clone(),
        group_base: args.base_dn.clone(),
        user_filter: preset.user_filter().to_owned(),
        group_filter: preset.group_filter().to_owned(),
        page_size: args.page_size,
        bind_pool_size: 4,
        preset,
        attributes: preset.attributes(),
    };
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&args.db, Duration::from_secs(5))
            .await
            .expect("open store"),
    );
    let directory = Arc::new(LdapDirectory::new(settings).expect("directory"));
    if args.breakdown {
        // The sync's phases one by one, into a scratch store (for profiling; raises the
        // peak RSS, so not used for the reported numbers).
        use tapd::directory::DirectorySource as _;
        let scratch_path = args.db.with_extension("scratch.db");
        let _ = std::fs::remove_file(&scratch_path);
        let scratch = SqliteStore::open(&scratch_path, Duration::from_secs(5))
            .await
            .expect("scratch store");
        let mut lap = Instant::now();
        let mut cpu = cpu_seconds();
        let mut phase = |name: &str| {
            let now = cpu_seconds();
            println!(
                "phase {name}: {:.3} s wall, {:.2} s CPU",
                lap.elapsed().as_secs_f64(),
                now - cpu
            );
            lap = Instant::now();
            cpu = now;
        };
        let contents = directory.read_all().await.expect("read");
        phase("directory read");
        let users = scratch.users(None).await.expect("users");
        let groups = scratch.groups().await.expect("groups");
        phase("store read");
        let plan = tapd::sync::plan::plan_sync(&users, &groups, &contents);
        phase("plan");
        let fence = scratch
            .try_sync_lease("bench", Duration::from_secs(60))
            .await
            .expect("lease")
            .granted()
            .expect("granted")
            .fence();
        scratch.apply_sync(&fence, &plan, &[]).await.expect("apply");
        phase("apply (fresh store)");
        let users = scratch.users(None).await.expect("users");
        let groups = scratch.groups().await.expect("groups");
        phase("store read (100k)");
        let plan = tapd::sync::plan::plan_sync(&users, &groups, &contents);
        phase("plan (no change)");
        drop((users, groups, plan, contents));
        let _ = std::fs::remove_file(&scratch_path);
    }
    let syncer = Syncer::new(
        store.clone(),
        directory,
        Arc::new(SystemClock),
        SyncOptions {
            interval: Duration::from_secs(300),
            guard: DeletionGuard {
                max_deletes: 500,
                max_share_percent: 20,
            },
            node: "bench".to_owned(),
        },
        Arc::new(tapd::metrics::Metrics::new()),
    );
    let started = Instant::now();
    let status = syncer.run(false, "bench").await.expect("sync");
    let full = started.elapsed();
    assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
    println!("full_sync_seconds={:.3}", full.as_secs_f64());
    println!("users={} groups={}", status.users_seen, status.groups_seen);

    if args.refresh_first {
        let started = Instant::now();
        let status = syncer.run_incremental("bench").await.expect("incremental");
        assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
        println!(
            "first_incremental_seconds={:.3}",
            started.elapsed().as_secs_f64()
        );
    }

    if let Some(dn) = &args.modify_dn {
        let (connection, mut ldap) = ldap3::LdapConnAsync::new(&args.url).await.expect("connect");
        ldap3::drive!(connection);
        ldap.simple_bind(&args.root_dn, &args.root_password)
            .await
            .expect("bind")
            .success()
            .expect("bind result");
        ldap.modify(
            dn,
            vec![ldap3::Mod::Replace(
                "cn",
                [format!("Changed by benchmark run {}", std::process::id()).as_str()].into(),
            )],
        )
        .await
        .expect("modify")
        .success()
        .expect("modify result");
        let started = Instant::now();
        let status = syncer.run_incremental("bench").await.expect("incremental");
        let incremental = started.elapsed();
        assert_eq!(status.last_result.as_deref(), Some("success"), "{status:?}");
        println!("incremental_sync_seconds={:.3}", incremental.as_secs_f64());
        println!("incremental_users_updated={}", status.users_updated);
    }
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime field 11, stime field 12.
    (ticks(11) + ticks(12)) / 100.0
}
