//! `tapd`: the Temporary Access Pass daemon. Parses the command line, loads the configuration,
//! sets up logging and runs the daemon; errors are printed once and become the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// jemalloc rather than glibc's allocator. glibc keeps what a thread freed in that thread's
/// arena: a directory sync's working set, each 19 MiB argon2 work area that a hashing thread
/// released when idle; a daemon that had issued a hundred TAPs held 400 MB it no longer
/// used. jemalloc gives freed pages back to the system after its decay time, from a
/// background thread (switched on first thing in `main`) so that an idle daemon shrinks too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command line of `tapd`.
#[derive(Debug, Parser)]
#[command(
    name = "tapd",
    version,
    about = "On-premises Temporary Access Pass daemon",
    long_about = "On-premises Temporary Access Pass daemon.\n\nSyncs users and groups from an LDAP \
                  directory, lets administrators issue Temporary Access Passes over a local admin \
                  socket (see tapctl(8)), rejects them on the RADIUS and federation paths and \
                  accepts them on the web registration page. Configured by tapd.toml(5); run \
                  by systemd as tapd.service (SIGHUP reloads the configuration)."
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
    /// Write the man pages tapd.8 and tapctl.8 and the bash, zsh and fish completions of both
    /// binaries under DIR (man/ and completions/), for packaging.
    #[command(hide = true)]
    GenerateDocs {
        /// Output directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("tapd: warning: memory freed will be returned to the system later ({e})");
    }
    let cli = Cli::parse();
    if let Some(Command::GenerateDocs { dir }) = &cli.command {
        return match tapd::docs::generate(&Cli::command(), dir) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tapd: {e}");
                ExitCode::from(1)
            }
        };
    }
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
        // Group references by cn are checked against the groups of the last sync.
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                for warning in
                    runtime.block_on(tapd::daemon::check_group_references(&loaded.config))
                {
                    eprintln!("warning: {warning}");
                }
            }
            Err(e) => eprintln!("warning: group references not checked: {e}"),
        }
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    tapd::logging::init(
        loaded.config.log.level,
        tapd::daemon::log_destination(&loaded.config),
    );
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
            // The chain of contexts and causes, each cause once (a store or directory error
            // already quotes the driver's message it keeps as its source).
            let chain = tapd::logging::ErrorChain(&*e);
            log::error!("tapd stopped: {chain}");
            eprintln!("tapd: {chain}");
            ExitCode::from(1)
        }
    }
}
