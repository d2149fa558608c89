//! Web registration tests (issue 7): HTTP-level tests against the real router with a manual
//! clock, rules below the HTTP layer, the real `tapd` binary over HTTPS, and the end-to-end
//! test in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod authenticator;
mod daemon;
mod e2e;
mod errors;
mod expiry;
mod harness;
mod http;
mod sealed;
#[path = "../support/mod.rs"]
mod support;
mod webauthn;
