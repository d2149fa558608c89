//! `tapd`: the Temporary Access Pass daemon. Parses the command line, loads the configuration,
//! sets up logging and runs the daemon; errors are printed once and become the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `tapd`.
#[derive(Debug, Parser)]
#[command(
    name = "tapd",
    version,
    about = "On-premises Temporary Access Pass daemon"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = "/etc/tapd/tapd.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration, name every problem, exit 0 (valid) or 1 (invalid).
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match tapd::config::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("tapd: invalid configuration {}:\n{e}", cli.config.display());
            return ExitCode::from(1);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    tapd::logging::init(loaded.config.log.level);
    for warning in &loaded.warnings {
        log::warn!("configuration: {warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tapd: can't start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(tapd::daemon::run(cli.config, loaded.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("tapd stopped: {e:#}");
            eprintln!("tapd: {e:#}");
            ExitCode::from(1)
        }
    }
}
