//! `ldap_bind_load`: the raw LDAP simple-bind rate a directory sustains, for
//! `scripts/bench-radius.sh` (issue 8). Each of `--concurrency` workers keeps one connection
//! to a loopback LDAP server and binds as the users of a `user password` file in turn (the
//! user's DN is `uid=USER,BASE`), for `--duration` seconds; prints binds, failures, binds per
//! second and p50/p99 latency as JSON. This is the floor for any server that checks
//! passwords by bind: one bind per request.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ldap3::{LdapConnAsync, LdapConnSettings};

#[derive(Parser)]
struct Args {
    /// `ldap://127.0.0.1:PORT` (loopback only).
    #[arg(long)]
    url: String,
    /// Base under which the users' `uid=` entries are.
    #[arg(long, default_value = "ou=people,dc=example,dc=org")]
    people_base: String,
    /// File of `user password` lines.
    #[arg(long)]
    credentials: std::path::PathBuf,
    /// Connections binding at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Default)]
struct Tally {
    binds: u64,
    failures: u64,
    latencies_us: Vec<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.url.starts_with("ldap://127.") || args.url.starts_with("ldap://[::1]")) {
        eprintln!("ldap_bind_load: only loopback ldap:// URLs");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ldap_bind_load: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ldap_bind_load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<String, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.credentials)?;
    let credentials: Arc<Vec<(String, String)>> = Arc::new(
        text.lines()
            .filter_map(|line| line.trim().split_once(char::is_whitespace))
            .map(|(user, password)| {
                (
                    format!("uid={user},{}", args.people_base),
                    password.trim().to_owned(),
                )
            })
            .collect(),
    );
    if credentials.is_empty() {
        return Err("no credentials".into());
    }
    let concurrency = args.concurrency.max(1);
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &args.url).await?;
        ldap3::drive!(conn);
        connections.push(ldap);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration.max(0.0));
    let mut workers = tokio::task::JoinSet::new();
    for (index, mut ldap) in connections.into_iter().enumerate() {
        let credentials = credentials.clone();
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut next = index % credentials.len();
            while Instant::now() < deadline {
                let Some((dn, password)) = credentials.get(next) else {
                    break;
                };
                next = (next + concurrency) % credentials.len();
                let sent = Instant::now();
                match ldap.simple_bind(dn, password).await.map(|r| r.success()) {
                    Ok(Ok(_)) => {
                        tally.binds += 1;
                        tally
                            .latencies_us
                            .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    _ => tally.failures += 1,
                }
            }
            let _ = ldap.unbind().await;
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = workers.join_next().await {
        let tally = joined?;
        total.binds += tally.binds;
        total.failures += tally.failures;
        total.latencies_us.extend(tally.latencies_us);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    total.latencies_us.sort_unstable();
    let at = |q: f64| -> f64 {
        let n = total.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        total.latencies_us.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    Ok(serde_json::json!({
        "binds": total.binds,
        "failures": total.failures,
        "elapsed_seconds": elapsed,
        "binds_per_second": total.binds as f64 / elapsed,
        "latency_ms": {"p50": at(0.5), "p99": at(0.99), "p99_9": at(0.999)},
        "concurrency": concurrency,
    })
    .to_string())
}
