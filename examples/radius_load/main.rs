//! `radius_load`: a RADIUS load generator for `scripts/bench-radius.sh` (issue 8). Sends PAP
//! Access-Requests with Message-Authenticator at a fixed concurrency over the credentials in
//! a file (`user password` per line) to a loopback RADIUS server, for a duration or a count,
//! and prints sent, accepts, rejects, timeouts, requests per second and p50/p99/p99.9
//! latency as one JSON object.
//!
//! ```text
//! cargo run --release --example radius_load -- --target 127.0.0.1:1812 \
//!     --secret-file radius.secret --credentials users.txt --concurrency 32 --duration 10s
//! ```

mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "RADIUS PAP load generator (loopback only); prints a JSON report")]
struct Args {
    /// The RADIUS server, e.g. 127.0.0.1:1812 (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// File holding the shared secret (trailing newline ignored).
    #[arg(long)]
    secret_file: PathBuf,
    /// File of `user password` lines, cycled through.
    #[arg(long)]
    credentials: PathBuf,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in total.
    #[arg(long)]
    requests: Option<u64>,
    /// Reply timeout per request, in milliseconds (no retransmission).
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Two legs per sign-in (password, Access-Challenge, authenticator code with State);
    /// credential lines are `user password base32-secret`, each used at most once.
    #[arg(long)]
    two_leg: bool,
    /// Loopback address to send from (e.g. 127.0.0.2, to reach another client entry).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("radius_load: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<String, Box<dyn std::error::Error>> {
    let secret = std::fs::read_to_string(&args.secret_file)?;
    let secret = secret.trim_end_matches(['\n', '\r']).as_bytes().to_vec();
    let text = std::fs::read_to_string(&args.credentials)?;
    let credentials = if args.two_leg {
        load::parse_two_leg_credentials(&text)?
    } else {
        load::parse_credentials(&text)?
    };
    let config = load::LoadConfig {
        target: args.target,
        secret,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        max_requests: args.requests,
        timeout: Duration::from_millis(args.timeout_ms),
        credentials,
        two_leg: args.two_leg,
        source: args.source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(load::run(config))?;
    Ok(serde_json::to_string(&report)?)
}
