//! `web_sign_in_load`: TAP sign-ins on one or more running tapd web listeners, for
//! `scripts/bench-multi-node.sh` (issue 6). Two steps, so that only the sign-ins are timed:
//!
//! - `create` makes a fresh one-time TAP for each user named in `--users` through the admin
//!   socket and prints `user code` lines;
//! - `run` signs each of those users in once with its TAP, `--concurrency` browsers at a time,
//!   the browsers spread evenly over the `--web` listeners, each on its own keep-alive
//!   connection taking the next user from one shared queue, and prints one JSON object:
//!   sign-ins, successes, failures, seconds, sign-ins per second and p50/p99 latency, overall
//!   and per listener.
//!
//! ```text
//! web_sign_in_load create --admin-socket /run/tapd/admin.sock --users users.txt > codes.txt
//! web_sign_in_load run --web 127.0.0.1:8080 --web 127.0.0.1:8081 --codes codes.txt
//! ```
//!
//! Loopback only; the admin socket must accept the caller as an administrator (root).

#[path = "client.rs"]
mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hyper::Method;
use serde_json::{json, Value};
use tapd::admin::client::{segment, AdminClient};

use client::{Client, Error};

#[derive(Parser)]
#[command(about = "TAP sign-in load on tapd web listeners (loopback only)")]
enum Command {
    /// Create a fresh one-time TAP for each user; print `user code` lines.
    Create {
        /// The admin socket of any node.
        #[arg(long)]
        admin_socket: PathBuf,
        /// File of user names, one a line.
        #[arg(long)]
        users: PathBuf,
        /// Admin connections creating TAPs at once.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Sign every user of `--codes` in once; print a JSON report.
    Run {
        /// A web listener, e.g. 127.0.0.1:8080; repeat for several nodes.
        #[arg(long, required = true)]
        web: Vec<SocketAddr>,
        /// The site's public URL (its host and origin are sent).
        #[arg(long, default_value = "http://localhost:8080")]
        public_url: String,
        /// File of `user code` lines, as `create` prints them.
        #[arg(long)]
        codes: PathBuf,
        /// Browsers signing in at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

fn main() -> ExitCode {
    let command = Command::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("web_sign_in_load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome: Result<String, Error> = runtime.block_on(async {
        match command {
            Command::Create {
                admin_socket,
                users,
                connections,
            } => {
                let users = read_lines(&users)?;
                let taps = create_taps(admin_socket, users, connections).await?;
                Ok(taps
                    .iter()
                    .map(|(user, code)| format!("{user} {code}\n"))
                    .collect::<String>())
            }
            Command::Run {
                web,
                public_url,
                codes,
                concurrency,
            } => {
                let taps = read_lines(&codes)?
                    .iter()
                    .map(|line| {
                        line.split_once(char::is_whitespace)
                            .map(|(user, code)| (user.to_owned(), code.trim_start().to_owned()))
                            .ok_or_else(|| Error::from(format!("not `user code`: {line:?}")))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let report = run(web, &public_url, taps, concurrency).await?;
                Ok(format!("{report}\n"))
            }
        }
    });
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("web_sign_in_load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Creates a one-time TAP for each user, `connections` admin connections at a time.
async fn create_taps(
    socket: PathBuf,
    users: Vec<String>,
    connections: usize,
) -> Result<Vec<(String, String)>, Error> {
    let users = Arc::new(users);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (socket, users, next) = (socket.clone(), users.clone(), next.clone());
        tasks.spawn(async move {
            let mut admin = AdminClient::connect(&socket).await?;
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(user) = users.get(i) else { break };
                let path = format!(
                    "/v1/users/{}/authentication/temporaryAccessPassMethods",
                    segment(user)
                );
                let created = admin
                    .call(Method::POST, &path, Some(&json!({ "isUsableOnce": true })))
                    .await?;
                let code = created["temporaryAccessPass"]
                    .as_str()
                    .ok_or_else(|| format!("no code in {created}"))?;
                made.push((i, user.clone(), code.to_owned()));
            }
            Ok::<_, Error>(made)
        });
    }
    let mut all = Vec::with_capacity(users.len());
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    all.sort_by_key(|(i, _, _)| *i);
    Ok(all
        .into_iter()
        .map(|(_, user, code)| (user, code))
        .collect())
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// One listener's (or all listeners') outcome.
#[derive(Default)]
struct Tally {
    succeeded: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.latencies.extend_from_slice(&other.latencies);
    }

    fn report(&mut self, seconds: f64) -> Value {
        self.latencies.sort();
        json!({
            "succeeded": self.succeeded,
            "failed": self.failed,
            "sign_ins_per_second": self.succeeded as f64 / seconds,
            "latency_ms": {
                "p50": percentile_ms(&self.latencies, 0.5),
                "p99": percentile_ms(&self.latencies, 0.99),
            },
        })
    }
}

/// The non-empty lines of a file that are not `#` comments, trimmed.
fn read_lines(path: &std::path::Path) -> Result<Vec<String>, Error> {
    let lines: Vec<String> = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(format!("{} is empty", path.display()).into());
    }
    Ok(lines)
}

async fn run(
    web: Vec<SocketAddr>,
    public_url: &str,
    taps: Vec<(String, String)>,
    concurrency: usize,
) -> Result<Value, Error> {
    if let Some(addr) = web.iter().find(|a| !a.ip().is_loopback()) {
        return Err(
            format!("{addr} is not a loopback address; this tool sends nowhere else").into(),
        );
    }

    // Every browser connects and loads the sign-in page before the clock starts.
    let concurrency = concurrency.max(1);
    let mut browsers = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let target = i % web.len();
        browsers.push((target, Client::connect(web[target], public_url).await?));
    }
    let taps = Arc::new(taps);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for (target, mut browser) in browsers {
        let (taps, next, barrier) = (taps.clone(), next.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((user, code)) = taps.get(i) else {
                    break;
                };
                let start = Instant::now();
                let signed_in = browser.sign_in(user, code).await?;
                tally.latencies.push(start.elapsed());
                if signed_in {
                    tally.succeeded += 1;
                } else {
                    tally.failed += 1;
                }
            }
            Ok::<_, Error>((target, tally))
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut per_target: Vec<Tally> = web.iter().map(|_| Tally::default()).collect();
    while let Some(joined) = tasks.join_next().await {
        let (target, tally) = joined??;
        per_target[target].add(&tally);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for tally in &per_target {
        total.add(tally);
    }
    let mut report = total.report(seconds);
    report["sign_ins"] = json!(taps.len());
    report["seconds"] = json!(seconds);
    report["concurrency"] = json!(concurrency);
    report["per_listener"] = Value::Array(
        per_target
            .iter_mut()
            .zip(&web)
            .map(|(tally, addr)| {
                let mut one = tally.report(seconds);
                one["listener"] = json!(addr.to_string());
                one
            })
            .collect(),
    );
    Ok(report)
}
