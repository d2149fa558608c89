//! `tapctl`: the admin CLI. Every admin API route is a verb; tables for people, `--json` for
//! scripts. The binary in `src/bin/tapctl.rs` only calls [`main`].
//!
//! May depend on: `admin::client`, `admin::graph` (for formats), `service::explain` (the
//! words of a `tap explain` cause, rendered here in local time). Talks to the daemon only
//! through the socket, never to the store.
//!
//! Over 800 lines on purpose: one verb per admin route, each a few lines of arguments and a
//! table; they read best side by side with the clap definitions they render.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod bulk_csv;
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::admin::client::{query_value, segment, AdminClient, ClientError};

// Every line tapctl prints goes through [`terminal_safe`]: names, audit text and error
// messages come from the directory, from sign-in attempts and from the daemon, and a control
// character in them (ESC, CR, BEL, a C1 CSI, a bidi override) must never reach the terminal
// raw (issue 15). These shadow std's macros for this module only.
macro_rules! println {
    () => { $crate::tapctl::emit(false, "") };
    ($($arg:tt)*) => { $crate::tapctl::emit(false, &format!($($arg)*)) };
}
macro_rules! eprintln {
    ($($arg:tt)*) => { $crate::tapctl::emit(true, &format!($($arg)*)) };
}

/// Writes one line to stdout or stderr with [`terminal_safe`] applied; a closed pipe is not
/// an error worth a panic.
fn emit(to_stderr: bool, line: &str) {
    let line = terminal_safe(line);
    let _ = if to_stderr {
        writeln!(std::io::stderr().lock(), "{line}")
    } else {
        writeln!(std::io::stdout().lock(), "{line}")
    };
}

/// `text` with every character that could steer a terminal written as a `\uXXXX` escape:
/// control characters (C0 but the newline, DEL, C1) and the bidirectional overrides and
/// isolates. The form is JSON's, so `--json` output stays valid JSON.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    fn steers(c: char) -> bool {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(steers) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if steers(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

const POLICY_PATH: &str =
    "/v1/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";

/// Command line of `tapctl`.
#[derive(Debug, Parser)]
#[command(
    name = "tapctl",
    version,
    about = "Administer Temporary Access Passes on a local tapd"
)]
pub struct Cli {
    /// Path of the tapd admin socket.
    #[arg(
        long,
        env = "TAPD_SOCKET",
        default_value = "/run/tapd/admin.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Print the daemon's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show and delete Temporary Access Passes.
    #[command(subcommand)]
    Tap(TapCommand),
    /// Show, change and reset the TAP policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Synced directory users.
    #[command(subcommand)]
    User(UserCommand),
    /// Synced directory groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Registered authentication methods.
    #[command(subcommand)]
    Methods(MethodsCommand),
    /// Directory synchronisation.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Audit events, newest first; `audit verify` checks the tamper-evident chain.
    Audit(AuditArgs),
    /// TAPs mailed to new users' managers: delivery status.
    #[command(subcommand)]
    Onboarding(OnboardingCommand),
}

/// `tapctl audit verify …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain and name the first broken or missing sequence number; exits
    /// 1 when the chain is broken.
    Verify {
        /// Start at this sequence number instead of the first (or the retention checkpoint).
        #[arg(long, value_name = "SEQ")]
        from: Option<i64>,
    },
}

/// `tapctl tap …`
#[derive(Debug, Subcommand)]
pub enum TapCommand {
    /// Create a TAP for USER (replacing any existing one) and print its code once.
    Create {
        /// User id, userPrincipalName or username.
        user: String,
        /// Lifetime: minutes, or with a unit (90m, 2h, 1d). Default: the policy's.
        #[arg(long)]
        lifetime: Option<String>,
        /// Start time: RFC 3339 (2026-12-01T08:00:00Z) or relative (+2h). Default: now.
        #[arg(long)]
        start: Option<String>,
        /// Usable for one sign-in only.
        #[arg(long, conflicts_with = "multi_use")]
        one_time: bool,
        /// Usable for several sign-ins within its lifetime.
        #[arg(long)]
        multi_use: bool,
    },
    /// Show USER's TAP (never its code).
    Show {
        /// User id, userPrincipalName or username.
        user: String,
    },
    /// Delete USER's TAP.
    Delete {
        /// User id, userPrincipalName or username.
        user: String,
    },
    /// Why USER's TAP does or doesn't work: the first cause in Entra's troubleshooting order,
    /// and the evidence (times in local time; `--json` gives RFC 3339 UTC).
    Explain {
        /// User id, userPrincipalName or username.
        user: String,
    },
    /// Issue a TAP for every row of a CSV file and mail each code to its recipient (never
    /// printed). Columns (header row required, only `user` mandatory): user, start (RFC 3339),
    /// lifetime (minutes or 8h, 2d), one_time (true/false), recipient. Every row is checked
    /// first; bad rows are reported with their line and skipped. Exits 1 when a row failed.
    Bulk {
        /// The CSV file.
        #[arg(long)]
        csv: PathBuf,
        /// Check every row, create nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `tapctl onboarding …`
#[derive(Debug, Subcommand)]
pub enum OnboardingCommand {
    /// Where each onboarding message stands (queued, sent, failed), newest first; never a code.
    Status {
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `tapctl policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the TAP policy.
    Show,
    /// Change some policy fields (the others keep their value).
    Set(PolicySetArgs),
    /// Reset the policy to its defaults.
    Reset,
}

/// Fields `tapctl policy set` can change.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// enabled or disabled.
    #[arg(long)]
    pub state: Option<String>,
    /// Minimum lifetime (minutes or 1h, 2d…).
    #[arg(long)]
    pub min_lifetime: Option<String>,
    /// Maximum lifetime.
    #[arg(long)]
    pub max_lifetime: Option<String>,
    /// Default lifetime.
    #[arg(long)]
    pub default_lifetime: Option<String>,
    /// Code length, 8 to 48.
    #[arg(long)]
    pub length: Option<i64>,
    /// Whether every new TAP is one-time (true/false).
    #[arg(long)]
    pub one_time: Option<bool>,
    /// Groups included (comma separated; `all_users` for everyone). Replaces the list.
    #[arg(long, value_delimiter = ',')]
    pub include_groups: Option<Vec<String>>,
    /// Groups excluded (comma separated; empty string for none). Replaces the list.
    #[arg(long, value_delimiter = ',')]
    pub exclude_groups: Option<Vec<String>>,
}

/// `tapctl user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users, optionally matching a search string.
    List {
        /// Substring of username, UPN, name or mail.
        #[arg(long)]
        search: Option<String>,
    },
    /// Show a user with transitive groups, roles and TAP scope.
    Show {
        /// User id, userPrincipalName or username.
        user: String,
    },
}

/// `tapctl group …`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
}

/// `tapctl methods …`
#[derive(Debug, Subcommand)]
pub enum MethodsCommand {
    /// List USER's authentication methods.
    List {
        /// User id, userPrincipalName or username.
        user: String,
    },
    /// Delete one of USER's methods by id.
    Delete {
        /// User id, userPrincipalName or username.
        user: String,
        /// Method id (see `methods list`).
        id: String,
    },
}

/// `tapctl sync …`
#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Run a directory sync now.
    Run {
        /// Confirm a sync the deletion guard refused.
        #[arg(long)]
        allow_deletes: bool,
    },
    /// Show the last sync's status.
    Status,
}

/// `tapctl audit` filters.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only events at or after this time (RFC 3339, or relative like -1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only events by or about this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only events whose activity contains this text.
    #[arg(long)]
    pub activity: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// Errors of the CLI itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments don't make sense.
    #[error("{0}")]
    Usage(String),
    /// The daemon refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A check ran and found a problem (the audit chain is broken).
    #[error("{0}")]
    CheckFailed(String),
    /// Some rows of a bulk list were not issued (each is named in the output).
    #[error("{0}")]
    RowsFailed(String),
}

impl CliError {
    /// The process exit code for this error, the CLI's one mapping: 2 for bad arguments, 1
    /// when the daemon refused or could not be reached.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Client(_) | CliError::CheckFailed(_) | CliError::RowsFailed(_) => 1,
        }
    }
}

/// Parses a lifetime: plain minutes or a number with `m`, `h` or `d`.
pub fn parse_minutes(s: &str) -> Result<i64, CliError> {
    let s = s.trim();
    let (number, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '-')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "m"),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| CliError::Usage(format!("{s:?} is not a duration like 90, 90m, 2h or 1d")))?;
    let factor = match unit {
        "m" | "min" | "minutes" => 1,
        "h" | "hours" => 60,
        "d" | "days" => 1440,
        _ => {
            return Err(CliError::Usage(format!(
                "{s:?}: unknown unit {unit:?}; use m, h or d"
            )))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| CliError::Usage(format!("{s:?} is too large")))
}

/// Parses an absolute RFC 3339 time or a relative one (`+2h`, `-30m`) against the local clock.
/// Returns it as RFC 3339 text; the daemon validates it.
pub fn parse_time(s: &str) -> Result<String, CliError> {
    if let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) {
        let minutes = parse_minutes(rest)?;
        let signed = if s.starts_with('-') {
            -minutes
        } else {
            minutes
        };
        let t = chrono::Utc::now() + chrono::Duration::minutes(signed);
        return Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    Ok(s.to_owned())
}

/// Runs the CLI; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match run(&cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tapctl: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: &Cli) -> Result<(), CliError> {
    let mut client = AdminClient::connect(&cli.socket).await?;
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Tap(cmd) => tap(&mut client, &out, cmd).await,
        Command::Onboarding(OnboardingCommand::Status { limit }) => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/v1/onboarding/messages?$top={limit}"),
                    None,
                )
                .await?;
            out.table(
                &v,
                &[
                    ("CREATED", "created"),
                    ("USER", "userPrincipalName"),
                    ("RECIPIENT", "recipient"),
                    ("STATE", "state"),
                    ("ATTEMPTS", "attempts"),
                    ("NEXT ATTEMPT", "nextAttempt"),
                    ("LAST ERROR", "lastError"),
                    ("ORIGIN", "origin"),
                    ("ID", "id"),
                ],
            );
            Ok(())
        }
        Command::Policy(cmd) => policy(&mut client, &out, cmd).await,
        Command::User(UserCommand::List { search }) => {
            let path = match search {
                Some(s) => format!("/v1/users?search={}", query_value(s)),
                None => "/v1/users".to_owned(),
            };
            let v = client.call(Method::GET, &path, None).await?;
            out.table(
                &v,
                &[
                    ("USERNAME", "onPremisesSamAccountName"),
                    ("UPN", "userPrincipalName"),
                    ("NAME", "displayName"),
                    ("ENABLED", "accountEnabled"),
                    ("ID", "id"),
                ],
            );
            Ok(())
        }
        Command::User(UserCommand::Show { user }) => {
            let v = client
                .call(Method::GET, &format!("/v1/users/{}", segment(user)), None)
                .await?;
            out.user(&v);
            Ok(())
        }
        Command::Group(GroupCommand::List) => {
            let v = client.call(Method::GET, "/v1/groups", None).await?;
            out.table(
                &v,
                &[
                    ("NAME", "displayName"),
                    ("MEMBERS", "transitiveMemberCount"),
                    ("DN", "onPremisesDistinguishedName"),
                    ("ID", "id"),
                ],
            );
            Ok(())
        }
        Command::Methods(MethodsCommand::List { user }) => {
            let v = client
                .call(
                    Method::GET,
                    &format!("/v1/users/{}/authentication/methods", segment(user)),
                    None,
                )
                .await?;
            out.table(
                &v,
                &[
                    ("TYPE", "@odata.type"),
                    ("NAME", "displayName"),
                    ("CREATED", "createdDateTime"),
                    ("ID", "id"),
                ],
            );
            Ok(())
        }
        Command::Methods(MethodsCommand::Delete { user, id }) => {
            client
                .call(
                    Method::DELETE,
                    &format!(
                        "/v1/users/{}/authentication/methods/{}",
                        segment(user),
                        segment(id)
                    ),
                    None,
                )
                .await?;
            out.done(&format!("Deleted method {id} of {user}."));
            Ok(())
        }
        Command::Sync(SyncCommand::Run { allow_deletes }) => {
            let body = json!({ "allowDeletes": allow_deletes });
            let v = client
                .call(Method::POST, "/v1/directory/sync", Some(&body))
                .await?;
            out.object(&v);
            if v.get("lastResult").and_then(Value::as_str) == Some("deletionsRefused") {
                eprintln!("tapctl: the sync was refused by the deletion guard; check the directory, then run `tapctl sync run --allow-deletes` to confirm");
            }
            Ok(())
        }
        Command::Sync(SyncCommand::Status) => {
            let v = client.call(Method::GET, "/v1/directory/sync", None).await?;
            out.object(&v);
            Ok(())
        }
        Command::Audit(AuditArgs {
            command: Some(AuditCommand::Verify { from }),
            ..
        }) => {
            let path = match from {
                Some(from) => format!("/v1/auditLogs/verify?from={from}"),
                None => "/v1/auditLogs/verify".to_owned(),
            };
            let v = client.call(Method::GET, &path, None).await?;
            verify_report(&out, &v)
        }
        Command::Audit(args) => {
            let mut query = vec![format!("$top={}", args.limit)];
            if let Some(s) = &args.since {
                query.push(format!("since={}", query_value(&parse_time(s)?)));
            }
            if let Some(s) = &args.until {
                query.push(format!("until={}", query_value(&parse_time(s)?)));
            }
            if let Some(s) = &args.user {
                query.push(format!("user={}", query_value(s)));
            }
            if let Some(s) = &args.activity {
                query.push(format!("activity={}", query_value(s)));
            }
            let path = format!("/v1/auditLogs?{}", query.join("&"));
            let v = client.call(Method::GET, &path, None).await?;
            out.table(
                &v,
                &[
                    ("TIME", "activityDateTime"),
                    (
                        "ACTOR",
                        "/initiatedBy/user/userPrincipalName|/initiatedBy/app/displayName|/appDisplayName",
                    ),
                    ("ACTIVITY", "activityDisplayName"),
                    (
                        "TARGET",
                        "/targetResources/0/displayName|/userPrincipalName",
                    ),
                    ("RESULT", "result"),
                    ("REASON", "reasonCode"),
                    ("CHANNEL", "channel"),
                ],
            );
            Ok(())
        }
    }
}

/// `tapctl tap bulk`: the CSV is read and split here, every field is checked by the daemon.
async fn bulk(
    client: &mut AdminClient,
    out: &Output,
    csv: &std::path::Path,
    dry_run: bool,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(csv)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", csv.display())))?;
    let rows = bulk_csv::parse(&text).map_err(CliError::Usage)?;
    if rows.is_empty() {
        return Err(CliError::Usage(format!(
            "{} has no rows below its header",
            csv.display()
        )));
    }
    let body = json!({ "dryRun": dry_run, "rows": rows });
    let v = client
        .call(Method::POST, "/v1/onboarding/bulk", Some(&body))
        .await?;
    out.table(
        &v,
        &[
            ("LINE", "line"),
            ("USER", "user"),
            ("STATUS", "status"),
            ("RECIPIENT", "recipient"),
            ("STARTS", "start"),
            ("EXPIRES", "expires"),
            ("TAP ID", "tapId"),
            ("ERROR", "error"),
        ],
    );
    let results = v
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let failed = results
        .iter()
        .filter(|r| r.get("status").and_then(Value::as_str) == Some("error"))
        .count();
    let done = results.len() - failed;
    let verb = if dry_run {
        "valid"
    } else {
        "issued and queued for mail"
    };
    if failed > 0 {
        return Err(CliError::RowsFailed(format!(
            "{done} row(s) {verb}, {failed} row(s) with errors (see the ERROR column)"
        )));
    }
    if !out.json {
        eprintln!("tapctl: {done} row(s) {verb}");
    }
    Ok(())
}

async fn tap(client: &mut AdminClient, out: &Output, cmd: &TapCommand) -> Result<(), CliError> {
    match cmd {
        TapCommand::Create {
            user,
            lifetime,
            start,
            one_time,
            multi_use,
        } => {
            let mut body = Map::new();
            if let Some(l) = lifetime {
                body.insert("lifetimeInMinutes".into(), json!(parse_minutes(l)?));
            }
            if let Some(s) = start {
                body.insert("startDateTime".into(), json!(parse_time(s)?));
            }
            if *one_time {
                body.insert("isUsableOnce".into(), json!(true));
            }
            if *multi_use {
                body.insert("isUsableOnce".into(), json!(false));
            }
            let path = format!(
                "/v1/users/{}/authentication/temporaryAccessPassMethods",
                segment(user)
            );
            let v = client
                .call(Method::POST, &path, Some(&Value::Object(body)))
                .await?;
            if out.json {
                println!("{v:#}");
            } else {
                let code = v
                    .get("temporaryAccessPass")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                println!("Temporary Access Pass for {user}:\n\n    {code}\n");
                println!("Copy it now: it is shown only once and can't be displayed again.\n");
                print_fields(
                    &v,
                    &[
                        "id",
                        "createdDateTime",
                        "startDateTime",
                        "endDateTime",
                        "lifetimeInMinutes",
                        "isUsableOnce",
                        "isUsable",
                        "methodUsabilityReason",
                    ],
                );
            }
            Ok(())
        }
        TapCommand::Show { user } => {
            let path = format!(
                "/v1/users/{}/authentication/temporaryAccessPassMethods",
                segment(user)
            );
            let v = client.call(Method::GET, &path, None).await?;
            if out.json {
                println!("{v:#}");
                return Ok(());
            }
            match v
                .get("value")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                Some(tap) => print_fields(
                    tap,
                    &[
                        "id",
                        "createdDateTime",
                        "startDateTime",
                        "endDateTime",
                        "lifetimeInMinutes",
                        "isUsableOnce",
                        "isUsable",
                        "methodUsabilityReason",
                    ],
                ),
                None => println!("{user} has no Temporary Access Pass."),
            }
            Ok(())
        }
        TapCommand::Bulk { csv, dry_run } => bulk(client, out, csv, *dry_run).await,
        TapCommand::Explain { user } => {
            let path = format!(
                "/v1/users/{}/authentication/temporaryAccessPassMethods/explain",
                segment(user)
            );
            let v = client.call(Method::GET, &path, None).await?;
            if out.json {
                println!("{v:#}");
            } else {
                print_explanation(&v);
            }
            Ok(())
        }
        TapCommand::Delete { user } => {
            let path = format!(
                "/v1/users/{}/authentication/temporaryAccessPassMethods",
                segment(user)
            );
            let v = client.call(Method::GET, &path, None).await?;
            let Some(id) = v.pointer("/value/0/id").and_then(Value::as_str) else {
                return Err(CliError::Usage(format!(
                    "{user} has no Temporary Access Pass to delete"
                )));
            };
            client
                .call(Method::DELETE, &format!("{path}/{}", segment(id)), None)
                .await?;
            out.done(&format!(
                "Deleted the Temporary Access Pass {id} of {user}."
            ));
            Ok(())
        }
    }
}

async fn policy(
    client: &mut AdminClient,
    out: &Output,
    cmd: &PolicyCommand,
) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Show => {}
        PolicyCommand::Reset => {
            client.call(Method::DELETE, POLICY_PATH, None).await?;
        }
        PolicyCommand::Set(args) => {
            let mut body = Map::new();
            if let Some(s) = &args.state {
                body.insert("state".into(), json!(s));
            }
            for (key, value) in [
                ("minimumLifetimeInMinutes", &args.min_lifetime),
                ("maximumLifetimeInMinutes", &args.max_lifetime),
                ("defaultLifetimeInMinutes", &args.default_lifetime),
            ] {
                if let Some(v) = value {
                    body.insert(key.into(), json!(parse_minutes(v)?));
                }
            }
            if let Some(l) = args.length {
                body.insert("defaultLength".into(), json!(l));
            }
            if let Some(o) = args.one_time {
                body.insert("isUsableOnce".into(), json!(o));
            }
            if let Some(groups) = &args.include_groups {
                let targets: Vec<Value> = groups.iter().filter(|g| !g.is_empty())
                    .map(|g| json!({ "id": g, "targetType": "group", "isRegistrationRequired": false }))
                    .collect();
                body.insert("includeTargets".into(), Value::Array(targets));
            }
            if let Some(groups) = &args.exclude_groups {
                let targets: Vec<Value> = groups
                    .iter()
                    .filter(|g| !g.is_empty())
                    .map(|g| json!({ "id": g, "targetType": "group" }))
                    .collect();
                body.insert("excludeTargets".into(), Value::Array(targets));
            }
            if body.is_empty() {
                return Err(CliError::Usage(
                    "policy set: name at least one field to change (see --help)".into(),
                ));
            }
            client
                .call(Method::PATCH, POLICY_PATH, Some(&Value::Object(body)))
                .await?;
        }
    }
    let v = client.call(Method::GET, POLICY_PATH, None).await?;
    if out.json {
        println!("{v:#}");
    } else {
        print_fields(
            &v,
            &[
                "state",
                "minimumLifetimeInMinutes",
                "maximumLifetimeInMinutes",
                "defaultLifetimeInMinutes",
                "defaultLength",
                "isUsableOnce",
            ],
        );
        let ids = |key: &str| -> String {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|t| {
                            format!("{} ({})", str_of(t.get("id")), str_of(t.get("targetType")))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!("{:<26} {}", "includeTargets", ids("includeTargets"));
        println!("{:<26} {}", "excludeTargets", ids("excludeTargets"));
    }
    Ok(())
}

/// A Graph time (RFC 3339) in the reader's local zone; anything else as given.
fn local_time(v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => local(&t.with_timezone(&chrono::Utc)),
            Err(_) => s.to_owned(),
        },
        None => "-".to_owned(),
    }
}

fn local(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// `tap explain` for people: the cause in a sentence (times in local time), the checks, the
/// evidence.
fn print_explanation(v: &Value) {
    let username = str_of(v.pointer("/user/onPremisesSamAccountName"));
    let upn = str_of(v.pointer("/user/userPrincipalName"));
    let cause = v.get("cause").cloned().unwrap_or(Value::Null);
    let sentence = match serde_json::from_value::<crate::service::explain::Cause>(cause.clone()) {
        Ok(cause) => cause.sentence(&username, &local),
        Err(_) => str_of(cause.get("message")),
    };
    let verdict = if v.get("isUsable") == Some(&Value::Bool(true)) {
        "the TAP works"
    } else {
        "the TAP does not work"
    };
    println!("{upn}: {verdict}.");
    match cause.get("reasonCode").and_then(Value::as_str) {
        Some(code) => println!("{sentence} (reason code {code})"),
        None => println!("{sentence}"),
    }
    println!();
    println!("Checks, in order:");
    for check in v
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<18} {}",
            str_of(check.get("check")),
            str_of(check.get("result"))
        );
    }
    println!();
    println!("Evidence:");
    let e = v.get("evidence").cloned().unwrap_or(Value::Null);
    let field = |label: &str, value: String| println!("  {label:<26} {value}");
    let yes_no = |b: Option<&Value>| match b.and_then(Value::as_bool) {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    };
    let targets = |key: &str| -> String {
        let list: Vec<String> = e
            .pointer(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let path: Vec<String> = t
                    .get("path")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| str_of(Some(p)))
                    .collect();
                format!(
                    "{} ({}: {})",
                    str_of(t.get("id")),
                    str_of(t.get("targetType")),
                    path.join(" → ")
                )
            })
            .collect();
        if list.is_empty() {
            "-".to_owned()
        } else {
            list.join("; ")
        }
    };
    field(
        "policy",
        format!(
            "{}, one-time required: {}",
            str_of(e.pointer("/policy/state")),
            yes_no(e.pointer("/policy/isUsableOnce"))
        ),
    );
    field("account enabled", yes_no(e.get("accountEnabled")));
    field("identity conflict", str_of(e.get("identityConflict")));
    field("included by", targets("/includeTargets"));
    field("excluded by", targets("/excludeTargets"));
    match e.get("temporaryAccessPass").filter(|t| !t.is_null()) {
        None => field("Temporary Access Pass", "none".to_owned()),
        Some(tap) => {
            field("Temporary Access Pass", str_of(tap.get("id")));
            field("  created", local_time(tap.get("createdDateTime")));
            field("  start", local_time(tap.get("startDateTime")));
            field("  end", local_time(tap.get("endDateTime")));
            let once = tap.get("isUsableOnce") == Some(&Value::Bool(true));
            field(
                "  usage",
                if once {
                    "one-time".to_owned()
                } else if e.pointer("/policy/isUsableOnce") == Some(&Value::Bool(true)) {
                    "multi-use (the policy now requires one-time)".to_owned()
                } else {
                    "multi-use".to_owned()
                },
            );
            if once {
                let used = match tap.get("usedDateTime").filter(|u| !u.is_null()) {
                    None => "not yet".to_owned(),
                    Some(at) => format!(
                        "{} on {} from {}",
                        local_time(Some(at)),
                        str_of(tap.pointer("/usedOn/channel")),
                        str_of(tap.pointer("/usedOn/sourceAddress"))
                    ),
                };
                field("  used", used);
            }
        }
    }
    field(
        "registration interrupt",
        match e
            .pointer("/registrationInterrupt/inScope")
            .and_then(Value::as_bool)
        {
            Some(true) => format!("yes, {}", targets("/registrationInterrupt/groups")),
            _ => "no".to_owned(),
        },
    );
    let attempt = |a: Option<&Value>| match a.filter(|a| !a.is_null()) {
        None => "-".to_owned(),
        Some(a) => format!(
            "{} {} {} ({}) from {}",
            local_time(a.get("activityDateTime")),
            str_of(a.get("result")),
            str_of(a.get("reasonCode")),
            str_of(a.get("authenticationMethod")),
            str_of(a.get("sourceAddress"))
        ),
    };
    field(
        "throttled (last hour)",
        match e
            .pointer("/throttle/throttledAttemptsLastHour")
            .and_then(Value::as_u64)
        {
            Some(0) | None => "no".to_owned(),
            Some(n) => format!(
                "{n} refusal(s), last: {}",
                attempt(e.pointer("/throttle/lastThrottled"))
            ),
        },
    );
    field("last web attempt", attempt(e.pointer("/lastAttempts/web")));
    field(
        "last RADIUS attempt",
        attempt(e.pointer("/lastAttempts/radius")),
    );
    field(
        "last federation attempt",
        attempt(e.pointer("/lastAttempts/federation")),
    );
}

/// A table cell: a top-level field, or the first of `|`-separated JSON pointers that is set.
fn column<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    if !key.starts_with('/') {
        return item.get(key);
    }
    key.split('|')
        .filter_map(|pointer| item.pointer(pointer))
        .find(|v| !v.is_null())
}

fn str_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn print_fields(v: &Value, keys: &[&str]) {
    for key in keys {
        println!("{key:<26} {}", str_of(v.get(*key)));
    }
}

/// Prints an audit chain verification; an error (exit 1) when the chain is broken.
fn verify_report(out: &Output, v: &Value) -> Result<(), CliError> {
    let num = |key: &str| v.get(key).and_then(Value::as_i64).unwrap_or(0);
    let head = v
        .get("head")
        .and_then(|h| h.get("seq"))
        .and_then(Value::as_i64);
    if out.json {
        println!("{}", terminal_safe(&format!("{v:#}")));
    } else {
        if let Some(cp) = v.get("checkpoint").filter(|c| !c.is_null()) {
            let seq = cp.get("sequence").and_then(Value::as_i64).unwrap_or(0);
            let pruned = cp.get("pruned").and_then(Value::as_i64).unwrap_or(0);
            let valid = cp.get("signatureValid").and_then(Value::as_bool) == Some(true);
            println!(
                "retention checkpoint: events up to sequence {seq} were pruned ({pruned} in all); \
                 its signature {}",
                if valid { "is valid" } else { "does NOT verify" }
            );
        }
    }
    if v.get("valid").and_then(Value::as_bool) == Some(true) {
        if !out.json {
            println!(
                "audit chain verified: {} event(s), sequence {} to {}",
                num("checked"),
                num("from"),
                head.unwrap_or(0)
            );
        }
        return Ok(());
    }
    let broken = v.get("firstBreak");
    let sequence = broken
        .and_then(|b| b.get("sequence"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let problem = broken
        .and_then(|b| b.get("problem"))
        .and_then(Value::as_str)
        .unwrap_or("unknown problem");
    Err(CliError::CheckFailed(
        terminal_safe(&format!(
            "audit chain broken at sequence {sequence}: {problem}"
        ))
        .into_owned(),
    ))
}

struct Output {
    json: bool,
}

impl Output {
    fn done(&self, message: &str) {
        if self.json {
            println!("{{}}");
        } else {
            println!("{message}");
        }
    }

    fn object(&self, v: &Value) {
        if self.json {
            println!("{v:#}");
        } else if let Some(map) = v.as_object() {
            for (k, val) in map {
                println!("{k:<22} {}", str_of(Some(val)));
            }
        }
    }

    fn user(&self, v: &Value) {
        if self.json {
            println!("{v:#}");
            return;
        }
        print_fields(
            v,
            &[
                "id",
                "onPremisesSamAccountName",
                "userPrincipalName",
                "displayName",
                "mail",
                "accountEnabled",
                "onPremisesDistinguishedName",
                "inTemporaryAccessPassScope",
            ],
        );
        let manager = match v.get("manager") {
            Some(m) if m.is_object() => format!(
                "{} ({})",
                str_of(m.get("userPrincipalName")),
                match m.get("mail").and_then(Value::as_str) {
                    Some(mail) => mail.to_owned(),
                    None => "no mail".to_owned(),
                }
            ),
            _ => match v
                .get("onPremisesManagerDistinguishedName")
                .and_then(Value::as_str)
            {
                Some(dn) => format!("none synced ({dn})"),
                None => "none".to_owned(),
            },
        };
        println!("{:<26} {manager}", "manager");
        if let Some(dates) = v.get("onboardingDates").and_then(Value::as_object) {
            for (attribute, date) in dates {
                println!("{:<26} {}", attribute, str_of(Some(date)));
            }
        }
        if let Some(conflict) = v.get("identityConflictMessage").and_then(Value::as_str) {
            println!(
                "{:<26} QUARANTINED (no sign-in, no TAP): {conflict}",
                "identity conflict"
            );
        }
        let groups = v
            .get("memberOf")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|g| str_of(g.get("displayName")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let roles = v
            .get("adminRoles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| str_of(Some(r)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "{:<26} {}",
            "groups (transitive)",
            if groups.is_empty() {
                "-".into()
            } else {
                groups
            }
        );
        println!(
            "{:<26} {}",
            "adminRoles",
            if roles.is_empty() { "-".into() } else { roles }
        );
    }

    fn table(&self, v: &Value, columns: &[(&str, &str)]) {
        if self.json {
            println!("{v:#}");
            return;
        }
        let rows: Vec<Vec<String>> = v
            .get("value")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        columns
                            .iter()
                            .map(|(_, key)| {
                                let s = str_of(column(item, key));
                                s.strip_prefix("#microsoft.graph.")
                                    .map(str::to_owned)
                                    .unwrap_or(s)
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if rows.is_empty() {
            println!("(none)");
            return;
        }
        let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", parts.join("  ").trim_end());
        };
        line(columns.iter().map(|(h, _)| *h).collect());
        for row in &rows {
            line(row.iter().map(String::as_str).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lifetimes_parse_with_units() {
        assert_eq!(parse_minutes("90").unwrap(), 90);
        assert_eq!(parse_minutes("5m").unwrap(), 5);
        assert_eq!(parse_minutes("2h").unwrap(), 120);
        assert_eq!(parse_minutes("1d").unwrap(), 1440);
        assert!(parse_minutes("2 weeks").is_err());
        assert!(parse_minutes("h").is_err());
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "eve\u{1b}]0;pwned\u{7}\r\u{1b}[2J\u{0}\u{7f}\u{9b}31m\u{202e}gpj.exe\tend";
        let safe = terminal_safe(hostile);
        assert!(
            !safe
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{safe:?}"
        );
        assert_eq!(
            safe,
            "eve\\u001b]0;pwned\\u0007\\u000d\\u001b[2J\\u0000\\u007f\\u009b31m\\u202egpj.exe\\u0009end"
        );
        assert_eq!(terminal_safe("plain\nlines"), "plain\nlines");
        // JSON stays JSON: serde leaves DEL and C1 raw, the escape makes them \u sequences.
        let json = serde_json::json!({ "actor": "a\u{9b}b\u{7f}" }).to_string();
        let parsed: Value = serde_json::from_str(&terminal_safe(&json)).unwrap();
        assert_eq!(parsed["actor"], "a\u{9b}b\u{7f}");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("alice@example.org"), "alice@example.org");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
