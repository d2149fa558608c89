//! Man pages and shell completions for packaging, generated from the same clap definitions
//! the binaries parse (so they never drift from `--help`): `tapd(8)`, `tapctl(8)` and one page
//! per `tapctl` subcommand (`tapctl-tap-create(8)`, …) with clap_mangen, the hand-written
//! `tapd.toml(5)` from `packaging/man/`, and bash, zsh and fish completions with
//! clap_complete. Run by the hidden `tapd generate-docs DIR` (see `scripts/build-deb.sh`).
//!
//! May depend on: `tapctl` (its clap definition).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// The configuration file's man page, written by hand (roff).
const TAPD_TOML_5: &str = include_str!("../packaging/man/tapd.toml.5");

/// Man page section for both binaries (system administration).
const SECTION: &str = "8";

/// Extra roff sections appended to `tapd(8)`.
const TAPD_EXTRA: &str = r#".SH SIGNALS
.TP
\fBSIGHUP\fR
Re-read the configuration file. RADIUS clients and secrets, role mapping, log level,
TLS certificates and federation tokens are applied without closing any socket; an
invalid file is refused with a logged error and the running configuration stays.
Listening addresses, the store and the directory source need a restart.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting work, finish requests in flight (up to 10 seconds) and exit.
.SH SYSTEMD
tapd is a \fBType=notify\fR service: it sends \fBREADY=1\fR once the store is open and
every listener is bound, \fBWATCHDOG=1\fR while its service loops are alive,
\fBRELOADING=1\fR and \fBREADY=1\fR around a reload and \fBSTOPPING=1\fR on the way out.
The directory state is shown in \fBsystemctl status tapd\fR. Change the shipped unit
with drop-ins: \fBsystemctl edit tapd\fR.
.SH LOGGING
Under systemd, log lines go to the journal with structured fields: \fBREASON_CODE\fR,
\fBCHANNEL\fR, \fBTAPD_USER\fR, \fBSOURCE_ADDRESS\fR and \fBRADIUS_CLIENT\fR, e.g.
\fBjournalctl -u tapd REASON_CODE=tap_not_supported_radius\fR. Security alerts carry
\fBTAPD_ALERT\fR (\fBjournalctl -u tapd TAPD_ALERT=privileged_tap\fR: a TAP created for, or
refused to, a user holding an admin role). The tamper-evident audit chain's head is logged
at start, every minute and at shutdown with \fBAUDIT_CHAIN_SEQ\fR and \fBAUDIT_CHAIN_HASH\fR;
\fBtapctl audit verify\fR checks the stored chain.
.SH FILES
.TP
\fI/etc/tapd/tapd.toml\fR
The configuration, see \fBtapd.toml\fR(5).
.TP
\fI/var/lib/tapd/\fR
The SQLite store.
.TP
\fI/run/tapd/admin.sock\fR
The admin API socket used by \fBtapctl\fR(8).
.SH ENVIRONMENT
.TP
\fBTAPD__\fISECTION\fB__\fIKEY\fR
Overrides a configuration key, e.g. \fBTAPD__LOG__LEVEL=debug\fR.
.SH "SEE ALSO"
\fBtapctl\fR(8), \fBtapd.toml\fR(5), \fBsystemctl\fR(1), \fBjournalctl\fR(1)
"#;

/// Extra roff sections appended to `tapctl(8)`.
const TAPCTL_EXTRA: &str = r#".SH AUTHORIZATION
tapctl is identified on the admin socket by its Unix uid. Root is a break-glass global
administrator (unless \fBroot_is_global_administrator = false\fR); any other account acts
as the directory user with the same user name and gets that user's roles. Members of the
group \fBtapd-admins\fR may open the socket.
.SH ENVIRONMENT
.TP
\fBTAPD_SOCKET\fR
The admin socket, instead of \fB\-\-socket\fR.
.SH "SEE ALSO"
\fBtapd\fR(8), \fBtapd.toml\fR(5)
"#;

/// Errors writing the documentation.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// A file or directory could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn write_file(
    path: PathBuf,
    render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<PathBuf, DocsError> {
    let mut bytes = Vec::new();
    render(&mut bytes)
        .and_then(|()| std::fs::write(&path, &bytes))
        .map_err(|source| DocsError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

fn create_dir(path: &Path) -> Result<(), DocsError> {
    std::fs::create_dir_all(path).map_err(|source| DocsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `DIR/man/man8/*.8`, `DIR/man/man5/tapd.toml.5` (so `MANPATH=DIR/man` finds them)
/// and `DIR/completions/{bash,zsh,fish}/…` for `tapd` (whose clap command the binary passes
/// in) and `tapctl`. Returns the files written.
pub fn generate(tapd: &clap::Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let man_dir = dir.join("man").join(format!("man{SECTION}"));
    let man5_dir = dir.join("man").join("man5");
    create_dir(&man_dir)?;
    create_dir(&man5_dir)?;
    let mut written = Vec::new();

    let tapd = prepared(tapd.clone());
    let tapctl = prepared(crate::tapctl::Cli::command());
    written.push(man_page(&tapd, &man_dir, Some(TAPD_EXTRA))?);
    written.push(man_page(&tapctl, &man_dir, Some(TAPCTL_EXTRA))?);
    subcommand_pages(&tapd, &man_dir, &mut written)?;
    subcommand_pages(&tapctl, &man_dir, &mut written)?;
    written.push(write_file(man5_dir.join("tapd.toml.5"), |out| {
        out.write_all(TAPD_TOML_5.as_bytes())
    })?);

    for (shell, sub, file_name) in [
        (Shell::Bash, "bash", "{}"),
        (Shell::Zsh, "zsh", "_{}"),
        (Shell::Fish, "fish", "{}.fish"),
    ] {
        let shell_dir = dir.join("completions").join(sub);
        create_dir(&shell_dir)?;
        for command in [&tapd, &tapctl] {
            let name = command.get_name().to_owned();
            let path = shell_dir.join(file_name.replace("{}", &name));
            let mut command = command.clone();
            written.push(write_file(path, |out| {
                clap_complete::generate(shell, &mut command, name, out);
                Ok(())
            })?);
        }
    }
    Ok(written)
}

/// Builds the command the way clap_mangen's own generator does (display names such as
/// `tapctl-tap-create` for subcommands; no `help` subcommand).
fn prepared(command: clap::Command) -> clap::Command {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    command
}

fn man_page(
    command: &clap::Command,
    dir: &Path,
    extra: Option<&str>,
) -> Result<PathBuf, DocsError> {
    let man = clap_mangen::Man::new(command.clone())
        .section(SECTION)
        .manual("tapd manual")
        .source(format!("tapd {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    write_file(path, |out| {
        man.render_title(out)?;
        man.render_name_section(out)?;
        man.render_synopsis_section(out)?;
        man.render_description_section(out)?;
        if command.get_arguments().any(|arg| !arg.is_hide_set()) {
            man.render_options_section(out)?;
        }
        if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
            man.render_subcommands_section(out)?;
        }
        if let Some(extra) = extra {
            out.write_all(extra.as_bytes())?;
        }
        if command.get_version().is_some() || command.get_long_version().is_some() {
            man.render_version_section(out)?;
        }
        Ok(())
    })
}

fn subcommand_pages(
    command: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), DocsError> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        written.push(man_page(sub, dir, None)?);
        subcommand_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn writes_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let tapd = clap::Command::new("tapd")
            .version("1")
            .about("daemon")
            .subcommand(clap::Command::new("check-config").about("check"));
        let written = generate(&tapd, dir.path()).unwrap();
        for expected in [
            "man/man8/tapd.8",
            "man/man8/tapd-check-config.8",
            "man/man8/tapctl.8",
            "man/man8/tapctl-tap-create.8",
            "man/man5/tapd.toml.5",
            "completions/bash/tapctl",
            "completions/zsh/_tapd",
            "completions/fish/tapctl.fish",
        ] {
            let path = dir.path().join(expected);
            assert!(written.contains(&path), "{expected} not written");
            assert!(
                std::fs::metadata(&path).unwrap().len() > 0,
                "{expected} empty"
            );
        }
        let tapd_page = std::fs::read_to_string(dir.path().join("man/man8/tapd.8")).unwrap();
        assert!(tapd_page.contains("\n.TH tapd 8 "), "{tapd_page}");
        assert!(tapd_page.contains("SIGHUP"));
        let tapctl_page = std::fs::read_to_string(dir.path().join("man/man8/tapctl.8")).unwrap();
        assert!(tapctl_page.contains("tapctl\\-tap(8)"), "{tapctl_page}");
    }
}
