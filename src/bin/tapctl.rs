//! `tapctl`: the admin CLI for a local tapd (see `tapd::tapctl`).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = tapd::tapctl::Cli::parse();
    let code = tapd::tapctl::main(cli).await;
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
