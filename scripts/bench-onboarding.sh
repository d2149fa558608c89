#!/bin/sh
# Onboarding bulk benchmark (BENCHMARKS.md, "Onboarding: a 1,000-row bulk list"): runs the
# bounded test that issues a 1,000-row list (five bad rows) through the real tapd, tapctl and a
# loopback SMTP server (python3-aiosmtpd, STARTTLS), and prints how long issuing and delivering
# took. The test asserts the counts (five row errors, 995 mails), never the time. Then
# (BENCHMARKS.md, "Onboarding: what a date rule reads") examples/onboarding_dates_bench.rs
# times a date rule's look at 100,000 users in SQLite: every user read, or only the dated ones.
set -eu
cd "$(dirname "$0")/.."
cargo test --locked --test onboarding a_thousand_row_list -- --nocapture 2>&1 | grep -E '^BENCH|test result'
cargo run --locked --example onboarding_dates_bench -- --users 100000 2>&1 | grep -E '^BENCH'
