//! tapd on PostgreSQL, and several tapd nodes on one PostgreSQL database: one test binary, so
//! that the minute-long takeover test at the shortest sync interval runs beside the others
//! instead of after them.
//!
//! - [`database`]: TLS to the database, a database outage and recovery, sync leadership
//!   between nodes in one process;
//! - [`two_nodes`]: two real `tapd` processes on one database (one-time TAP races, sessions
//!   across nodes, outage, lease takeover after `kill -9` and SIGSTOP, the audit chain).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod database;
mod two_nodes;
