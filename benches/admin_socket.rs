//! Benchmark of the admin API and TAP hashing, run with `cargo bench --bench admin_socket`.
//!
//! Starts the real `tapd` release binary (the one cargo built for this bench) on a throw-away
//! configuration: SQLite in a temporary directory, the demo LDIF directory, only the admin
//! socket (no RADIUS, web, federation or metrics). As root (the break-glass administrator) it
//! enables the TAP policy and measures
//! 1. argon2id hash and verify time with tapd's parameters, in this process;
//! 2. TAP create latency over the socket, sequential;
//! 3. admin GET throughput and latency with several keep-alive connections at once.
//!
//! Prints a JSON summary and a Markdown table; `BENCHMARKS.md` records the results. Every
//! phase is bounded in count and time, and tapd is stopped at the end (also on error).
//!
//! Without `--bench` on the command line (as when `cargo test --all-targets` runs bench
//! targets in test mode) it only says how to run it and exits, so the test suite stays fast.
//!
//! Knobs (environment): `TAPD_BENCH_CREATES` (default 200), `TAPD_BENCH_SECONDS` per GET run
//! (default 5), `TAPD_BENCH_HASHES` (default 30), `TAPD_BENCH_BIN` (another tapd binary).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tapd::admin::client::AdminClient;
use tapd::tapcode;

use support::config::demo_ldif;
use support::daemon::Launch;

const POLICY_PATH: &str =
    "/v1/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";

/// Demo users TAPs are created for, in turn (root may create a TAP for any of them).
const CREATE_USERS: [&str; 4] = ["alice", "bob", "erin", "dave"];

/// How long tapd may take to come up and finish its first directory sync.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// Hard upper bound on the requests of one GET run, whatever its duration.
const MAX_REQUESTS_PER_RUN: usize = 2_000_000;

/// Hard upper bound on one create request.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "admin_socket: benchmark skipped; run it with `cargo bench --bench admin_socket`"
        );
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let load_before = load_average();
    let hashing = measure_hashing(settings.hashes)?;

    let daemon = Daemon::start(&settings.tapd_binary)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while building the client runtime")?;
    let result = runtime.block_on(measure_daemon(&daemon, &settings));
    drop(runtime);
    let stopped = daemon.stop();
    let (creates, reads) = result?;
    stopped?;

    let summary = Summary {
        machine: machine(load_before),
        hashing,
        creates,
        reads,
    };
    println!("{:#}", summary.json(&settings));
    println!();
    println!("{}", summary.markdown(&settings));
    Ok(())
}

/// What to run, from the environment.
struct Settings {
    tapd_binary: PathBuf,
    creates: usize,
    run_duration: Duration,
    hashes: usize,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let number = |name: &str, default: usize| -> anyhow::Result<usize> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{name}={v:?} is not a positive number")),
                Err(_) => Ok(default),
            }
        };
        let tapd_binary = std::env::var_os("TAPD_BENCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(support::config::tapd_binary);
        Ok(Settings {
            tapd_binary,
            creates: number("TAPD_BENCH_CREATES", 200)?.min(10_000),
            run_duration: Duration::from_secs(number("TAPD_BENCH_SECONDS", 5)?.min(60) as u64),
            hashes: number("TAPD_BENCH_HASHES", 30)?.min(1_000),
        })
    }
}

/// Latencies of one measured series.
#[derive(Clone, Debug)]
struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies { sorted: samples }
    }

    /// Nearest-rank percentile, `q` in 0..=1.
    fn percentile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }

    fn json(&self) -> Value {
        json!({
            "count": self.sorted.len(),
            "p50_ms": ms(self.percentile(0.5)),
            "p99_ms": ms(self.percentile(0.99)),
            "max_ms": ms(self.max()),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// argon2id timings measured in this process.
struct Hashing {
    parameters: String,
    hash: Latencies,
    verify: Latencies,
}

fn measure_hashing(count: usize) -> anyhow::Result<Hashing> {
    let mut hash_times = Vec::with_capacity(count);
    let mut verify_times = Vec::with_capacity(count);
    let mut parameters = String::new();
    for _ in 0..count {
        let code = tapcode::generate(8);
        let started = Instant::now();
        let phc = tapcode::hash_blocking(&code)?;
        hash_times.push(started.elapsed());
        let started = Instant::now();
        let ok = tapcode::verify_blocking(&code, &phc)?;
        verify_times.push(started.elapsed());
        if !ok {
            bail!("a fresh hash did not verify its own code");
        }
        // "$argon2id$v=19$m=19456,t=2,p=1$salt$hash" -> "argon2id v=19 m=19456,t=2,p=1"
        parameters = phc.split('$').skip(1).take(3).collect::<Vec<_>>().join(" ");
    }
    Ok(Hashing {
        parameters,
        hash: Latencies::new(hash_times),
        verify: Latencies::new(verify_times),
    })
}

/// A running tapd on a temporary configuration, started by the test kit; killed on drop if
/// not stopped.
struct Daemon {
    tapd: support::daemon::Tapd,
    socket: PathBuf,
}

impl Daemon {
    fn start(binary: &Path) -> anyhow::Result<Daemon> {
        if !binary.is_file() {
            bail!("tapd binary {} not found", binary.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("tapd-bench-")
            .tempdir()
            .context("while creating the temporary directory")?;
        let socket = dir.path().join("admin.sock");
        std::fs::write(
            dir.path().join("tapd.toml"),
            config_text(dir.path(), &demo_ldif(), &socket),
        )
        .context("while writing the bench configuration")?;
        // The bench logs at `warn`, so readiness is `wait_until_ready`'s, not the log's.
        let tapd = Launch::new(dir)
            .binary(binary.to_path_buf())
            .env_remove("TAPD__LOG__LEVEL")
            .start();
        Ok(Daemon { tapd, socket })
    }

    /// CPU time tapd has used so far (user + system, all threads), from `/proc/PID/stat`.
    fn cpu_time(&self) -> Option<Duration> {
        let pid = self.tapd.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        let ticks_per_second: u64 = command_line("getconf", &["CLK_TCK"]).parse().ok()?;
        Some(Duration::from_millis(
            (utime + stime) * 1000 / ticks_per_second.max(1),
        ))
    }

    fn log_text(&self) -> String {
        self.tapd.log_text()
    }

    /// SIGTERM, then wait (bounded; the kit kills it past that). Fails if tapd exited non-zero.
    fn stop(mut self) -> anyhow::Result<()> {
        let status = self.tapd.terminate();
        if !status.success() {
            bail!("tapd exited with {status}; its log:\n{}", self.log_text());
        }
        Ok(())
    }
}

fn config_text(dir: &Path, ldif: &Path, socket: &Path) -> String {
    format!(
        r#"[store]
url = "sqlite://{db}"

[directory]
url = "file:{ldif}"
preset = "openldap"
base_dn = "dc=example,dc=org"
sync_interval = "1h"

[admin]
socket = "{socket}"
root_is_global_administrator = true

[admin.roles]
global_administrator = ["tap-global-admins"]
privileged_authentication_administrator = ["tap-privileged-auth-admins"]
authentication_administrator = ["tap-auth-admins"]
authentication_policy_administrator = ["tap-policy-admins"]
global_reader = ["tap-readers"]

[log]
level = "warn"
format = "stderr"

[metrics]
enabled = false
"#,
        db = dir.join("tapd.db").display(),
        ldif = ldif.display(),
        socket = socket.display(),
    )
}

/// Connects once tapd listens and its first directory sync has succeeded.
async fn wait_until_ready(daemon: &Daemon) -> anyhow::Result<AdminClient> {
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        if Instant::now() > deadline {
            bail!(
                "tapd was not ready within {STARTUP_LIMIT:?}; its log:\n{}",
                daemon.log_text()
            );
        }
        if let Ok(mut client) = AdminClient::connect(&daemon.socket).await {
            let status = client.call(Method::GET, "/v1/directory/sync", None).await?;
            if status.get("lastSuccess").is_some_and(|v| !v.is_null()) {
                return Ok(client);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET load run: `connections` keep-alive clients hammering `path` for a while.
struct ReadRun {
    path: &'static str,
    connections: usize,
    elapsed: Duration,
    errors: usize,
    /// CPU time tapd used during the run.
    daemon_cpu: Option<Duration>,
    latencies: Latencies,
}

impl ReadRun {
    fn requests_per_second(&self) -> f64 {
        self.latencies.sorted.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// tapd CPU time per request in microseconds: unlike req/s, barely moved by other load.
    fn daemon_cpu_per_request_us(&self) -> Option<f64> {
        let count = self.latencies.sorted.len();
        (count > 0).then_some(())?;
        Some((self.daemon_cpu?.as_secs_f64() * 1e6 / count as f64).round())
    }
}

async fn measure_daemon(
    daemon: &Daemon,
    settings: &Settings,
) -> anyhow::Result<(Latencies, Vec<ReadRun>)> {
    let mut client = wait_until_ready(daemon).await?;
    let policy = json!({
        "state": "enabled",
        "includeTargets": [{ "id": "tap-users", "targetType": "group" }],
        "excludeTargets": [{ "id": "tap-excluded", "targetType": "group" }],
    });
    client
        .call(Method::PATCH, POLICY_PATH, Some(&policy))
        .await
        .context("while enabling the TAP policy")?;

    let creates = measure_creates(&mut client, settings.creates).await?;

    let mut reads = Vec::new();
    for path in [
        "/v1/users/alice/authentication/temporaryAccessPassMethods",
        "/v1/users",
    ] {
        for connections in [8, 32] {
            // A short warm-up so that connection setup is not measured.
            read_run(daemon, path, connections, Duration::from_millis(300)).await?;
            reads.push(read_run(daemon, path, connections, settings.run_duration).await?);
        }
    }
    Ok((creates, reads))
}

async fn measure_creates(client: &mut AdminClient, count: usize) -> anyhow::Result<Latencies> {
    let mut samples = Vec::with_capacity(count);
    let body = json!({ "lifetimeInMinutes": 60 });
    for i in 0..count {
        let user = CREATE_USERS[i % CREATE_USERS.len()];
        let path = format!("/v1/users/{user}/authentication/temporaryAccessPassMethods");
        let started = Instant::now();
        let created =
            tokio::time::timeout(REQUEST_LIMIT, client.call(Method::POST, &path, Some(&body)))
                .await
                .context("a TAP create took longer than 10 s")?
                .with_context(|| format!("while creating a TAP for {user}"))?;
        samples.push(started.elapsed());
        if created
            .get("temporaryAccessPass")
            .is_none_or(Value::is_null)
        {
            bail!("the create answer for {user} carries no code: {created}");
        }
    }
    Ok(Latencies::new(samples))
}

async fn read_run(
    daemon: &Daemon,
    path: &'static str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<ReadRun> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(AdminClient::connect(&daemon.socket).await?);
    }
    let budget = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_PER_RUN));
    let cpu_before = daemon.cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let budget = budget.clone();
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let Ok(permit) = budget.try_acquire() else {
                    break;
                };
                permit.forget();
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_LIMIT, client.raw(Method::GET, path, None)).await
                {
                    Ok(Ok((StatusCode::OK, _))) => samples.push(sent.elapsed()),
                    Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                        errors += 1;
                        if errors > 100 {
                            break;
                        }
                    }
                }
            }
            (samples, errors)
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (s, e) = joined.context("a load task failed")?;
        samples.extend(s);
        errors += e;
    }
    let elapsed = started.elapsed();
    let daemon_cpu = match (cpu_before, daemon.cpu_time()) {
        (Some(before), Some(after)) => after.checked_sub(before),
        _ => None,
    };
    if errors > 0 {
        bail!(
            "{errors} GET {path} requests failed; tapd log:\n{}",
            daemon.log_text()
        );
    }
    Ok(ReadRun {
        path,
        connections,
        elapsed,
        errors,
        daemon_cpu,
        latencies: Latencies::new(samples),
    })
}

/// The first line of a command's output, or `"unknown"`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The first value of `key` in a `/proc` file of `key : value` lines.
fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The 1-minute load average: other work on the machine skews every number here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Where and on what the numbers were taken.
fn machine(load_before: String) -> Value {
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    json!({
        "date": chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": proc_field("/proc/cpuinfo", "model name"),
        "memory": proc_field("/proc/meminfo", "MemTotal"),
        "rustc": command_line("rustc", &["--version"]),
        "commit": command_line("git", &["rev-parse", "--short", "HEAD"]),
        "uncommitted_changes": dirty,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    })
}

/// All results.
struct Summary {
    machine: Value,
    hashing: Hashing,
    creates: Latencies,
    reads: Vec<ReadRun>,
}

impl Summary {
    fn json(&self, settings: &Settings) -> Value {
        json!({
            "machine": self.machine,
            "argon2": {
                "parameters": self.hashing.parameters,
                "hash": self.hashing.hash.json(),
                "verify": self.hashing.verify.json(),
            },
            "tap_create_over_socket": self.creates.json(),
            "admin_get_over_socket": self.reads.iter().map(|r| json!({
                "path": r.path,
                "connections": r.connections,
                "seconds": settings.run_duration.as_secs(),
                "requests": r.latencies.sorted.len(),
                "errors": r.errors,
                "requests_per_second": r.requests_per_second().round(),
                "tapd_cpu_us_per_request": r.daemon_cpu_per_request_us(),
                "p50_ms": ms(r.latencies.percentile(0.5)),
                "p99_ms": ms(r.latencies.percentile(0.99)),
                "max_ms": ms(r.latencies.max()),
            })).collect::<Vec<_>>(),
        })
    }

    fn markdown(&self, settings: &Settings) -> String {
        let mut out = String::new();
        out.push_str(
            "| measurement | count | req/s | tapd CPU µs/req | p50 ms | p99 ms | max ms |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let row = |out: &mut String, name: String, l: &Latencies, rate_and_cpu: String| {
            out.push_str(&format!(
                "| {name} | {} | {rate_and_cpu} | {:.2} | {:.2} | {:.2} |\n",
                l.sorted.len(),
                ms(l.percentile(0.5)),
                ms(l.percentile(0.99)),
                ms(l.max()),
            ));
        };
        let p = &self.hashing.parameters;
        row(
            &mut out,
            format!("argon2 hash ({p})"),
            &self.hashing.hash,
            "– | –".into(),
        );
        row(
            &mut out,
            format!("argon2 verify ({p})"),
            &self.hashing.verify,
            "– | –".into(),
        );
        row(
            &mut out,
            "TAP create over the socket, sequential".into(),
            &self.creates,
            "– | –".into(),
        );
        for r in &self.reads {
            row(
                &mut out,
                format!(
                    "GET {} — {} connections, {} s",
                    r.path,
                    r.connections,
                    settings.run_duration.as_secs()
                ),
                &r.latencies,
                format!(
                    "{:.0} | {}",
                    r.requests_per_second(),
                    r.daemon_cpu_per_request_us()
                        .map_or("?".to_owned(), |us| format!("{us:.0}"))
                ),
            );
        }
        out
    }
}
