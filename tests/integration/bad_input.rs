//! Bad input sent as raw HTTP through the socket (as root, so every refusal is about the input,
//! not the caller): each gets a 4xx with a JSON `{"error":{"code","message"}}` naming the
//! problem, never a 5xx, and none of them changes the store.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::harness::{taps_path, Tapd, POLICY_PATH};

/// What must not change: the policy, every user's TAP list, the successful audit events.
#[derive(Debug, PartialEq)]
struct Snapshot {
    policy: Value,
    taps: Vec<Value>,
    successful_changes: usize,
}

fn snapshot(tapd: &Tapd) -> Snapshot {
    Snapshot {
        policy: tapd.get(POLICY_PATH),
        taps: ["tapit-m1", "tapit-m2", "tapit-out", "tapit-mem"]
            .iter()
            .map(|user| tapd.get(&taps_path(user)))
            .collect(),
        successful_changes: tapd
            .audit()
            .iter()
            .filter(|e| e["result"] == "success")
            .count(),
    }
}

/// One bad request and what the answer must be.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    status: StatusCode,
    /// A fragment the error message must contain.
    message: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<&str>,
    status: StatusCode,
    message: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body: body.map(|b| b.as_bytes().to_vec()),
        status,
        message,
    }
}

#[test]
fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let tapd = Tapd::start();
    // Something worth protecting: an enabled policy and a TAP that a bad create must not replace.
    let (status, body) = tapd.api(
        Method::PATCH,
        POLICY_PATH,
        Some(&json!({ "state": "enabled" })),
    );
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, tap) = tapd.api(Method::POST, &taps_path("tapit-m1"), Some(&json!({})));
    assert_eq!(status, StatusCode::CREATED, "{tap}");
    let tap_id = tap["id"].as_str().expect("id").to_owned();

    let before = snapshot(&tapd);
    let create = taps_path("tapit-m1");
    let bad = StatusCode::BAD_REQUEST;
    let not_found = StatusCode::NOT_FOUND;
    let post = Method::POST;
    let patch = Method::PATCH;
    #[rustfmt::skip]
    let cases = vec![
        // TAP creation.
        case("malformed JSON", post.clone(), &create, Some("{\"lifetimeInMinutes\": "), bad, "invalid request body"),
        case("not an object", post.clone(), &create, Some("[60]"), bad, "invalid request body"),
        case("null body", post.clone(), &create, Some("null"), bad, "invalid request body"),
        case("unknown field", post.clone(), &create, Some(r#"{"lifetime": 60}"#), bad, "unknown field `lifetime`"),
        case("lifetime as text", post.clone(), &create, Some(r#"{"lifetimeInMinutes": "60"}"#), bad, "invalid type"),
        case("fractional lifetime", post.clone(), &create, Some(r#"{"lifetimeInMinutes": 60.5}"#), bad, "invalid type"),
        case("huge lifetime", post.clone(), &create, Some(r#"{"lifetimeInMinutes": 1e30}"#), bad, "invalid type"),
        case("one-time as text", post.clone(), &create, Some(r#"{"isUsableOnce": "yes"}"#), bad, "invalid type"),
        case("lifetime below minimum", post.clone(), &create, Some(r#"{"lifetimeInMinutes": 5}"#), bad, "the policy allows 60 to 480 minutes"),
        case("lifetime above maximum", post.clone(), &create, Some(r#"{"lifetimeInMinutes": 100000}"#), bad, "the policy allows 60 to 480 minutes"),
        case("zero lifetime", post.clone(), &create, Some(r#"{"lifetimeInMinutes": 0}"#), bad, "the policy allows 60 to 480 minutes"),
        case("negative lifetime", post.clone(), &create, Some(r#"{"lifetimeInMinutes": -60}"#), bad, "Invalid lifetimeInMinutes -60"),
        case("unparseable start", post.clone(), &create, Some(r#"{"startDateTime": "tomorrow at nine"}"#), bad, "is not an RFC 3339 date-time"),
        case("start without zone", post.clone(), &create, Some(r#"{"startDateTime": "2030-01-01T09:00:00"}"#), bad, "is not an RFC 3339 date-time"),
        case("start in the past", post.clone(), &create, Some(r#"{"startDateTime": "2001-01-01T00:00:00Z"}"#), bad, "it is in the past"),
        case("start too far ahead", post.clone(), &create, Some(r#"{"startDateTime": "2999-01-01T00:00:00Z"}"#), bad, "at most 365 days ahead"),
        case("wrong @odata.type", post.clone(), &create, Some(r##"{"@odata.type": "#microsoft.graph.fido2AuthenticationMethod"}"##), bad, "@odata.type"),
        case("unknown user", post.clone(), taps_path("no-such-user"), Some("{}"), not_found, "was not found in the directory"),
        case("user not UTF-8", post.clone(), taps_path("%FF%FE"), Some("{}"), bad, "UTF-8"),
        // Reading and deleting TAPs.
        case("list for unknown user", Method::GET, taps_path("no-such-user"), None, not_found, "was not found in the directory"),
        case("unknown TAP id", Method::GET, format!("{create}/00000000-0000-4000-8000-000000000000"), None, not_found, "has no temporary access pass with id"),
        case("delete unknown TAP id", Method::DELETE, format!("{create}/not-a-tap"), None, not_found, "has no temporary access pass with id"),
        case("delete the password", Method::DELETE, "/v1/users/tapit-m1/authentication/methods/28c10230-6103-485e-b985-444c60001490", None, bad, "can't be deleted here"),
        case("unknown user details", Method::GET, "/v1/users/no-such-user", None, not_found, "was not found in the directory"),
        // The policy.
        case("length 7", patch.clone(), POLICY_PATH, Some(r#"{"defaultLength": 7}"#), bad, "defaultLength must be between 8 and 48; got 7"),
        case("length 49", patch.clone(), POLICY_PATH, Some(r#"{"defaultLength": 49}"#), bad, "defaultLength must be between 8 and 48; got 49"),
        case("minimum above maximum", patch.clone(), POLICY_PATH, Some(r#"{"minimumLifetimeInMinutes": 600, "maximumLifetimeInMinutes": 120}"#), bad, "maximumLifetimeInMinutes must be greater than or equal to minimumLifetimeInMinutes"),
        case("negative minimum", patch.clone(), POLICY_PATH, Some(r#"{"minimumLifetimeInMinutes": -10}"#), bad, "got -10"),
        case("default outside bounds", patch.clone(), POLICY_PATH, Some(r#"{"defaultLifetimeInMinutes": 9999}"#), bad, "defaultLifetimeInMinutes must be between"),
        case("unknown state", patch.clone(), POLICY_PATH, Some(r#"{"state": "paused"}"#), bad, "unknown variant `paused`"),
        case("state as bool", patch.clone(), POLICY_PATH, Some(r#"{"state": true}"#), bad, "invalid request body"),
        case("no include target", patch.clone(), POLICY_PATH, Some(r#"{"includeTargets": []}"#), bad, "includeTargets must name at least one"),
        case("unknown policy field", patch.clone(), POLICY_PATH, Some(r#"{"colour": "blue"}"#), bad, "unknown field `colour`"),
        case("malformed policy JSON", patch.clone(), POLICY_PATH, Some("{state: enabled}"), bad, "invalid request body"),
        case("wrong policy id", patch.clone(), POLICY_PATH, Some(r#"{"id": "Fido2"}"#), bad, "id must be"),
        // Queries, paths and methods.
        case("unparseable audit time", Method::GET, "/v1/auditLogs?since=yesterday", None, bad, "since \"yesterday\" is not an RFC 3339 date-time"),
        case("unknown audit filter", Method::GET, "/v1/auditLogs?colour=blue", None, bad, "unknown field"),
        case("negative audit limit", Method::GET, "/v1/auditLogs?$top=-1", None, bad, "invalid digit"),
        case("unknown sync option", post.clone(), "/v1/directory/sync", Some(r#"{"force": true}"#), bad, "unknown field `force`"),
        case("unknown path", Method::GET, "/v1/nothing/here", None, not_found, "no such admin API path"),
        case("unknown version", Method::GET, "/v2/users", None, not_found, "no such admin API path"),
        case("root path", Method::GET, "/", None, not_found, "no such admin API path"),
        case("wrong method", Method::PUT, POLICY_PATH, Some("{}"), StatusCode::METHOD_NOT_ALLOWED, "not supported"),
    ];

    let mut failures = Vec::new();
    for case in cases {
        let result = tapd.raw(case.method.clone(), &case.path, case.body.clone());
        let problem = match result {
            Err(e) => Some(format!("transport error {e}")),
            Ok((status, body)) => check_error(&case, status, &body),
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{} ({} {}): {problem}",
                case.what, case.method, case.path
            ));
        }
    }

    // A 10 MB body is refused before it is read. The daemon answers 413 and closes the
    // connection without reading the rest, so hyper's client only sees its write fail: send it
    // over a plain socket, keep writing from another thread, and read the answer.
    let too_large = case(
        "10 MB body",
        Method::POST,
        &create,
        None,
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
    );
    let (status, body) = post_huge_body(&tapd.socket, &create, 10 * 1024 * 1024);
    if let Some(problem) = check_error(&too_large, status, &body) {
        failures.push(format!("10 MB body: {problem}"));
    }

    assert!(
        failures.is_empty(),
        "bad input not answered as it should:\n{}",
        failures.join("\n")
    );

    // Nothing changed, and the daemon still works.
    let after = snapshot(&tapd);
    assert_eq!(before, after, "bad input changed the store");
    assert_eq!(after.taps[0]["value"][0]["id"], tap_id.as_str());
    let (status, body) = tapd.api(Method::POST, &create, Some(&json!({})));
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// POSTs a JSON body of `size` bytes over a plain Unix socket and returns the answer.
fn post_huge_body(socket: &Path, path: &str, size: usize) -> (StatusCode, Value) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: tapd\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let padding = size - "{\"x\": \"\"}".len();
        let body = format!("{{\"x\": \"{}\"}}", "x".repeat(padding));
        // The daemon may close the connection early: a failed write is expected.
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.as_bytes()));
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if answer.is_empty() => panic!("no answer to a {size}-byte body: {e}"),
            Err(_) => break,
        }
        if complete_response(&answer) {
            break;
        }
    }
    drop(stream);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, body)
}

/// Whether `bytes` hold a whole response with a `Content-Length` body.
fn complete_response(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .is_some_and(|length| body.len() >= length)
}

/// What is wrong with the answer to `case`, if anything.
fn check_error(case: &Case, status: StatusCode, body: &Value) -> Option<String> {
    if status.is_server_error() {
        return Some(format!("server error {status}: {body}"));
    }
    if status != case.status {
        return Some(format!("got {status}, want {}: {body}", case.status));
    }
    let code = body.pointer("/error/code").and_then(Value::as_str);
    let message = body.pointer("/error/message").and_then(Value::as_str);
    match (code, message) {
        (Some(code), Some(message)) if !code.is_empty() && !message.trim().is_empty() => {
            if message.contains(case.message) {
                None
            } else {
                Some(format!(
                    "message {message:?} does not contain {:?}",
                    case.message
                ))
            }
        }
        _ => Some(format!("not a JSON error with code and message: {body}")),
    }
}
