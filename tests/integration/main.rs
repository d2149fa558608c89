//! The integration test binary: the real `tapd` and `tapctl` binaries, driven over the admin
//! socket as different local accounts, as an administrator would drive them.
//!
//! `harness` starts a `tapd` on a throwaway directory (config, SQLite store, admin socket and a
//! generated LDIF directory, loopback only) and stops it on drop, printing its log when the test
//! failed. It also creates the local accounts the role tests act as, so the binary must run as
//! root (`sudo scripts/test.sh`); tests that need root fail with a message saying so.
//!
//! - `roles`: the role matrix over SO_PEERCRED, one local account per directory role;
//! - `walkthrough`: the README walkthrough with `tapctl`;
//! - `bad_input`: raw HTTP with bad input gets JSON 4xx and changes nothing;
//! - `crash`: acknowledged creations survive `kill -9`, and the daemon restarts cleanly;
//! - `cli`: `check-config`, `--help`/`--version`, SIGTERM;
//! - `bulk_roles`: `tapctl tap bulk` applies the role rules of a single create to each row;
//! - `audit_text`: control characters in audit text never reach the terminal through `tapctl`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_text;
mod bad_input;
mod bulk_roles;
mod cli;
mod crash;
mod harness;
mod names;
mod roles;
#[path = "../support/mod.rs"]
mod support;
mod walkthrough;
