//! tapd: an on-premises Temporary Access Pass daemon.
//!
//! Layout (dependencies point inward; the layers and their rules are in `ARCHITECTURE.md`,
//! checked by `tests/layering.rs`):
//! - domain: `model`, `clock` (domain types and the only reader of the system clock); `dn`,
//!   `group_ref` (distinguished names compared as RFC 4514 says, and how a configured group
//!   reference (id, DN, unique cn) picks out a synced group); `policy` (pure TAP and
//!   admin-role rules, time as a parameter); `tapcode` (generating, hashing and verifying TAP
//!   codes, bounded argon2 pool);
//! - ports and their adapters: `store` (the persistence trait, its SQLite backend and its
//!   PostgreSQL backend for several nodes); `directory` (the directory-source trait, the LDIF
//!   file and LDAP server sources, nested groups); `audit` (audit events written to the journal
//!   with structured fields);
//! - services: `service` (the TAP/admin service every front end calls); `signin` (the RADIUS
//!   / federation credential decision: password accepted, TAP refused and never consumed, with
//!   throttling and audit); `sync` (directory syncs: the pure plan and deletion guard, applying
//!   it in one transaction, the lease across nodes, the schedule); `onboarding` (the outbox
//!   worker that mails queued TAPs through SMTP);
//! - front ends: `radius` (the sans-io RADIUS protocol core: validation, replies, reply cache;
//!   the request handler and the UDP loop); `federation` (the federation-adapter HTTP
//!   endpoint); `web` (the web registration site: TAP sign-in, passkeys, authenticator apps);
//!   `admin` (the HTTP admin API on a Unix socket, and its client used by `tapctl`);
//! - infrastructure: `config` (file + environment configuration, validated once); `metrics`
//!   (Prometheus counters every layer increments, `/metrics`, `/readyz`); `logging`, `tls`;
//!   `http_listener` (the TCP/TLS connection loop, deadlines and caps every HTTP listener shares);
//!   `notify`, `watchdog`, `reload` (systemd notify protocol, loop liveness, SIGHUP reload);
//!   `docs` (man pages and shell completions generated from the CLI definitions);
//! - composition: `daemon` (wiring, signals, shutdown) and `tapctl` (the admin CLI).
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod dn;
pub mod docs;
pub mod federation;
pub mod group_ref;
pub mod http_listener;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod onboarding;
pub mod policy;
pub mod radius;
pub mod reload;
pub mod service;
pub mod signin;
pub mod store;
pub mod sync;
pub mod tapcode;
pub mod tapctl;
pub mod tls;
pub mod watchdog;
pub mod web;
