//! Times one argon2id verification of a TAP code at tapd's parameters, on one thread with a
//! reused work area (as tapd's hashing pool does), and prints JSON: the median and p99 in ms
//! over `--count` verifications (default 50). Used by `scripts/bench-radius.sh` to compare
//! the p99 of TAP rejections with the cost of one verification.

fn main() {
    let mut count = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                count = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--count needs a positive number");
                        std::process::exit(2)
                    })
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: argon2_verify [--count N]");
                std::process::exit(2)
            }
        }
    }
    let code = tapd::tapcode::generate(8);
    let mut area = Vec::new();
    let phc = match tapd::tapcode::hash_with_memory(&code, &mut area) {
        Ok(phc) => phc,
        Err(e) => {
            eprintln!("hashing failed: {e}");
            std::process::exit(1)
        }
    };
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        let matched = tapd::tapcode::verify_with_memory(&code, &phc, &mut area);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !matches!(matched, Ok(true)) {
            eprintln!("verification failed: {matched:?}");
            std::process::exit(1)
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"count\":{count},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
        at(0.5),
        at(0.99)
    );
}
