//! Fuzzes the pre-auth RADIUS decoder: `parse_request` must never panic or allocate without
//! bound, for clients that require Message-Authenticator and for those that opted out;
//! whatever it accepts must yield a reply that encodes.
//! Run from the repository root, seeded with the RFC vectors and malformed cases:
//! `cargo +nightly fuzz run parse_request fuzz/corpus/parse_request fuzz/seeds/parse_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapd::radius::{
    encode_reply, parse_network, parse_request, Decision, RadiusClient, SharedSecret,
};

fuzz_target!(|data: &[u8]| {
    let Ok(secret) = SharedSecret::new(b"fuzzing-secret".to_vec()) else {
        return;
    };
    let Ok(network) = parse_network("127.0.0.1") else {
        return;
    };
    for require_message_authenticator in [true, false] {
        let client = RadiusClient {
            name: "fuzz".into(),
            network,
            secret: secret.clone(),
            require_message_authenticator,
        };
        if let Ok(request) = parse_request(data, &client) {
            let decision = Decision::Reject {
                reply_message: Some("no".into()),
            };
            let _ = encode_reply(&request, &decision, &client.secret);
        }
    }
});
