//! The one test kit every integration test binary and the admin-socket benchmark start `tapd`
//! through: the daemon process ([`daemon::Tapd`]), secret files and ports ([`config`]),
//! `tapctl` ([`tapctl`]), the Prometheus scraper ([`metrics`]), a throwaway PostgreSQL
//! cluster ([`postgres`]), a throwaway OpenLDAP server ([`slapd`]), a test SMTP server
//! ([`smtp`]) and the `sqlite3` shell on a daemon's database ([`sqlite`]).
//!
//! Include it with `#[path = "../support/mod.rs"] mod support;` (from `tests/<name>/main.rs`)
//! or `#[path = "support/mod.rs"] mod support;` (from `tests/<name>.rs`). Each binary uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod audit;
pub mod config;
pub mod daemon;
pub mod http;
pub mod metrics;
pub mod postgres;
pub mod slapd;
pub mod smtp;
pub mod sqlite;
pub mod tapctl;
