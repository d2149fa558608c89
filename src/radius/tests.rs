//! Tests of the RADIUS core: RFC known-answer vectors, a malformed-packet table, property
//! tests, a round trip against the `radius` crate, and the reply cache.
//!
//! Over 800 lines on purpose: a table of cases per RFC rule reads best next to its neighbours,
//! and the file holds no logic of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ::radius::core::code::Code;
use ::radius::core::packet::Packet;
use ::radius::core::{rfc2865, rfc2869};
use hmac::{Hmac, Mac};
use proptest::prelude::*;

use super::crypto;
use super::*;

const RFC_SECRET: &[u8] = b"xyzzy5461";

/// RFC 2865 §7.1 Access-Request: User-Name "nemo", User-Password "arctangent",
/// NAS-IP-Address 192.168.1.16, NAS-Port 3. Bytes as printed in the RFC (confirmed against
/// several independent test suites) and checked with Python's hashlib.
const RFC2865_REQUEST: &str = "010000380f403f9473978057bd83d5cb98f4227a01066e656d6f02120dbe708d\
93d413ce3196e43f782a0aee0406c0a8011005060000000003";
/// RFC 2865 §7.1 Access-Accept (Service-Type Login, Login-Service Telnet, Login-IP-Host).
const RFC2865_ACCEPT: &str =
    "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103";
/// RFC 5997 §6.1 Status-Server with Message-Authenticator (MA checked with Python's hmac).
const RFC5997_STATUS_SERVER: &str =
    "0cda00268a54f4686fb394c52866e302185d062350125a665e2e1e8411f3e243822097c84fa3";
/// RFC 5997 §6.1 Access-Accept answering it (no MA: the RFC predates BlastRADIUS).
const RFC5997_ACCEPT: &str = "02da0014ef0d552a4bf2d693ec2b6fe8b5411d66";
/// Derived, not from an RFC (security-requirements §1.4, recomputed with Python
/// hmac/hashlib): the Access-Accept to the RFC 2865 §7.1 request with MA first, then
/// Service-Type = 1.
const DERIVED_ACCEPT_MA_FIRST: &str =
    "0200002c0e28e13bb2ff9188f2b23e4412c2c6c25012385b899f61a9e7c802bb3546c10a2a8b060600000001";

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn client(secret: &[u8], require_ma: bool) -> RadiusClient {
    RadiusClient {
        name: "test".into(),
        network: parse_network("127.0.0.1").unwrap(),
        secret: SharedSecret::new(secret.to_vec()).unwrap(),
        require_message_authenticator: require_ma,
    }
}

const SECRET: &[u8] = b"a-test-secret-of-some-length";
const AUTH: [u8; 16] = *b"0123456789abcdef";

/// Independent HMAC-MD5 (straight from the `hmac` crate, not `crypto`).
fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = Hmac::<md5::Md5>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Builds a request by hand: header, the given raw attribute bytes, and when `sign` an MA
/// appended last and computed over the whole packet.
fn build(code: u8, attributes: &[u8], secret: &[u8], sign: bool) -> Vec<u8> {
    let mut packet = vec![code, 7, 0, 0];
    packet.extend_from_slice(&AUTH);
    packet.extend_from_slice(attributes);
    let ma_at = packet.len() + 2;
    if sign {
        packet.extend_from_slice(&[80, 18]);
        packet.extend_from_slice(&[0; 16]);
    }
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    if sign {
        let ma = hmac_md5(secret, &packet);
        packet[ma_at..ma_at + 16].copy_from_slice(&ma);
    }
    packet
}

fn attr(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, (value.len() + 2) as u8];
    out.extend_from_slice(value);
    out
}

fn pap(password: &[u8]) -> Vec<u8> {
    attr(
        2,
        &crypto::encrypt_user_password(password, SECRET, &AUTH).unwrap(),
    )
}

fn user(name: &str) -> Vec<u8> {
    attr(1, name.as_bytes())
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Finds the first Message-Authenticator of a (well-framed) packet and checks it with an
/// independent HMAC, the header authenticator replaced by `request_auth` when given.
fn independent_ma_ok(packet: &[u8], secret: &[u8], request_auth: Option<&[u8]>) -> bool {
    let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let packet = &packet[..len];
    let mut i = 20;
    while i + 2 <= packet.len() {
        let (kind, alen) = (packet[i], usize::from(packet[i + 1]));
        if alen < 2 || i + alen > packet.len() {
            return false;
        }
        if kind == 80 && alen == 18 {
            let mut copy = packet.to_vec();
            if let Some(auth) = request_auth {
                copy[4..20].copy_from_slice(auth);
            }
            copy[i + 2..i + 18].fill(0);
            return hmac_md5(secret, &copy)[..] == packet[i + 2..i + 18];
        }
        i += alen;
    }
    false
}

// ---- known-answer tests ----

#[test]
fn rfc2865_7_1_pap_request_decodes_to_arctangent() {
    let request = parse_request(&hex(RFC2865_REQUEST), &client(RFC_SECRET, false)).unwrap();
    assert_eq!(request.code, RequestKind::AccessRequest);
    assert_eq!(request.identifier, 0);
    assert_eq!(request.user_name.as_deref(), Some("nemo"));
    assert_eq!(request.auth, AuthKind::Pap(b"arctangent".to_vec().into()));
    assert_eq!(
        request.nas_ip,
        Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 16)))
    );
    assert!(!request.message_authenticator);
    // The same request from a client that requires MA (the default) is dropped (R1).
    assert_eq!(
        parse_request(&hex(RFC2865_REQUEST), &client(RFC_SECRET, true)),
        Err(DropReason::MissingMessageAuthenticator)
    );
}

#[test]
fn rfc2865_7_1_accept_response_authenticator() {
    let request = hex(RFC2865_REQUEST);
    let accept = hex(RFC2865_ACCEPT);
    let auth: [u8; 16] = request[4..20].try_into().unwrap();
    let computed = crypto::response_authenticator(&accept, &auth, RFC_SECRET).unwrap();
    assert_eq!(computed[..], accept[4..20]);
    assert!(Packet::is_authentic_response(&accept, &request, RFC_SECRET));
}

#[test]
fn rfc2865_7_1_accept_with_message_authenticator_first_matches_derived_vector() {
    let request = parse_request(&hex(RFC2865_REQUEST), &client(RFC_SECRET, false)).unwrap();
    let decision = Decision::Accept {
        attributes: vec![ReplyAttribute::ServiceType(1)],
    };
    let secret = SharedSecret::new(RFC_SECRET.to_vec()).unwrap();
    let reply = encode_reply(&request, &decision, &secret).unwrap();
    assert_eq!(reply, hex(DERIVED_ACCEPT_MA_FIRST));
}

#[test]
fn rfc5997_6_1_status_server_and_reply() {
    let packet = hex(RFC5997_STATUS_SERVER);
    let request = parse_request(&packet, &client(RFC_SECRET, false)).unwrap();
    assert_eq!(request.code, RequestKind::StatusServer);
    assert_eq!(request.identifier, 0xda);
    assert!(request.message_authenticator);
    assert_eq!(request.auth, AuthKind::None);

    // The RFC's own reply: our Response Authenticator routine agrees.
    let rfc_accept = hex(RFC5997_ACCEPT);
    let computed =
        crypto::response_authenticator(&rfc_accept, &request.authenticator, RFC_SECRET).unwrap();
    assert_eq!(computed[..], rfc_accept[4..20]);

    // Our reply: Access-Accept, MA first, both authenticators verified independently.
    let secret = SharedSecret::new(RFC_SECRET.to_vec()).unwrap();
    let reject = Decision::Reject {
        reply_message: Some("ignored".into()),
    };
    let reply = encode_reply(&request, &reject, &secret).unwrap();
    assert_eq!(
        reply[0], 2,
        "Status-Server is always answered with Access-Accept"
    );
    assert_eq!(reply.len(), 38);
    assert_eq!(&reply[20..22], &[80, 18]);
    assert!(independent_ma_ok(&reply, RFC_SECRET, Some(&packet[4..20])));
    assert!(Packet::is_authentic_response(&reply, &packet, RFC_SECRET));

    // Any tampering with the request drops it.
    for i in 0..packet.len() {
        let mut bad = packet.clone();
        bad[i] ^= 0x01;
        assert!(
            parse_request(&bad, &client(RFC_SECRET, false)).is_err(),
            "byte {i}"
        );
    }
    // Wrong secret.
    assert_eq!(
        parse_request(&packet, &client(b"xyzzy5462", false)),
        Err(DropReason::BadMessageAuthenticator)
    );
}

// ---- malformed corpus ----

#[test]
fn malformed_packets_are_dropped_with_the_expected_reason() {
    use DropReason::*;
    let nemo = user("nemo");
    let valid = build(1, &cat(&[nemo.clone(), pap(b"secret")]), SECRET, true);
    let mut length_19 = valid.clone();
    length_19[2..4].copy_from_slice(&19u16.to_be_bytes());
    let mut length_beyond = valid.clone();
    length_beyond[2..4].copy_from_slice(&((valid.len() + 1) as u16).to_be_bytes());
    let mut length_4097 = valid.clone();
    length_4097.resize(5000, 0);
    length_4097[2..4].copy_from_slice(&4097u16.to_be_bytes());
    let mut trailing_inside_length = build(1, &nemo, SECRET, false);
    trailing_inside_length.push(0x01);
    trailing_inside_length[3] += 1;
    let many = cat(&vec![attr(30, b"x"); MAX_ATTRIBUTES]);
    let ms_vsa_zero_sub = attr(26, &[0, 0, 1, 55, 25, 0]);

    let cases: Vec<(&str, Vec<u8>, bool, DropReason)> = vec![
        ("empty datagram", vec![], true, TooShort),
        ("19 octets", valid[..19].to_vec(), true, TooShort),
        ("length field 19", length_19, true, BadLength),
        (
            "length field beyond datagram",
            length_beyond,
            true,
            BadLength,
        ),
        ("length field 4097", length_4097, true, TooLong),
        (
            "zero-length attribute",
            build(1, &[1, 0, b'n'], SECRET, false),
            false,
            BadAttribute,
        ),
        (
            "length-1 attribute",
            build(1, &[1, 1, b'n'], SECRET, false),
            false,
            BadAttribute,
        ),
        (
            "overlong attribute",
            build(1, &[1, 9, b'n', b'e'], SECRET, false),
            false,
            BadAttribute,
        ),
        (
            "one stray octet",
            trailing_inside_length,
            false,
            BadAttribute,
        ),
        (
            "attribute type 0",
            build(1, &cat(&[nemo.clone(), attr(0, b"x")]), SECRET, true),
            true,
            BadAttribute,
        ),
        (
            "too many attributes",
            build(1, &cat(&[nemo.clone(), many]), SECRET, true),
            true,
            TooManyAttributes,
        ),
        (
            "Access-Accept",
            build(2, &nemo, SECRET, true),
            true,
            UnknownCode,
        ),
        (
            "Accounting-Request",
            build(4, &nemo, SECRET, true),
            true,
            UnknownCode,
        ),
        ("code 0", build(0, &nemo, SECRET, true), true, UnknownCode),
        (
            "code 255",
            build(255, &nemo, SECRET, true),
            true,
            UnknownCode,
        ),
        (
            "no MA, MA required",
            build(1, &cat(&[nemo.clone(), pap(b"pw")]), SECRET, false),
            true,
            MissingMessageAuthenticator,
        ),
        (
            "duplicate MA",
            build(1, &cat(&[nemo.clone(), attr(80, &[0; 16])]), SECRET, true),
            true,
            DuplicateMessageAuthenticator,
        ),
        (
            "MA of 17 octets",
            build(1, &cat(&[nemo.clone(), attr(80, &[0; 17])]), SECRET, false),
            false,
            MalformedMessageAuthenticator,
        ),
        (
            "MA wrong secret",
            build(1, &nemo, b"other secret", true),
            true,
            BadMessageAuthenticator,
        ),
        (
            "password 15 octets",
            build(1, &cat(&[nemo.clone(), attr(2, &[7; 15])]), SECRET, true),
            true,
            BadPasswordLength,
        ),
        (
            "password 17 octets",
            build(1, &cat(&[nemo.clone(), attr(2, &[7; 17])]), SECRET, true),
            true,
            BadPasswordLength,
        ),
        (
            "password 129 octets",
            build(1, &cat(&[nemo.clone(), attr(2, &[7; 129])]), SECRET, true),
            true,
            BadPasswordLength,
        ),
        (
            "password 144 octets",
            build(1, &cat(&[nemo.clone(), attr(2, &[7; 144])]), SECRET, true),
            true,
            BadPasswordLength,
        ),
        (
            "Proxy-State without MA",
            build(
                1,
                &cat(&[nemo.clone(), pap(b"pw"), attr(33, b"ps")]),
                SECRET,
                false,
            ),
            false,
            ProxyStateWithoutMa,
        ),
        (
            "Status-Server without MA",
            build(12, &[], SECRET, false),
            false,
            MissingMessageAuthenticator,
        ),
        (
            "EAP without MA",
            build(
                1,
                &cat(&[nemo.clone(), attr(79, &[2, 0, 0, 5, 1])]),
                SECRET,
                false,
            ),
            false,
            MissingMessageAuthenticator,
        ),
        (
            "EAP with User-Password",
            build(
                1,
                &cat(&[nemo.clone(), pap(b"pw"), attr(79, &[2, 0, 0, 5, 1])]),
                SECRET,
                true,
            ),
            true,
            EapWithPassword,
        ),
        (
            "EAP with CHAP-Password",
            build(
                1,
                &cat(&[nemo.clone(), attr(3, &[1; 17]), attr(79, &[2, 0, 0, 5, 1])]),
                SECRET,
                true,
            ),
            true,
            EapWithPassword,
        ),
        (
            "PAP and CHAP",
            build(
                1,
                &cat(&[nemo.clone(), pap(b"pw"), attr(3, &[1; 17])]),
                SECRET,
                true,
            ),
            true,
            ConflictingCredentials,
        ),
        (
            "no User-Name",
            build(1, &pap(b"pw"), SECRET, true),
            true,
            MissingUserName,
        ),
        (
            "empty User-Name",
            build(1, &cat(&[attr(1, b""), pap(b"pw")]), SECRET, true),
            true,
            BadUserName,
        ),
        (
            "User-Name not UTF-8",
            build(1, &cat(&[attr(1, &[0xff, 0xfe]), pap(b"pw")]), SECRET, true),
            true,
            BadUserName,
        ),
        (
            "two User-Names",
            build(
                1,
                &cat(&[nemo.clone(), nemo.clone(), pap(b"pw")]),
                SECRET,
                true,
            ),
            true,
            DuplicateAttribute,
        ),
        (
            "two User-Passwords",
            build(
                1,
                &cat(&[nemo.clone(), pap(b"pw"), pap(b"pw")]),
                SECRET,
                true,
            ),
            true,
            DuplicateAttribute,
        ),
        (
            "NAS-IP-Address of 3 octets",
            build(1, &cat(&[nemo.clone(), attr(4, &[1, 2, 3])]), SECRET, true),
            true,
            BadAttribute,
        ),
        (
            "VSA shorter than a vendor id",
            build(1, &cat(&[nemo.clone(), attr(26, &[0, 0, 1])]), SECRET, true),
            true,
            BadAttribute,
        ),
        (
            "MS VSA sub-attribute length 0",
            build(1, &cat(&[nemo.clone(), ms_vsa_zero_sub]), SECRET, true),
            true,
            BadAttribute,
        ),
    ];
    for (name, packet, require_ma, expected) in cases {
        let got = parse_request(&packet, &client(SECRET, require_ma));
        assert_eq!(got.as_ref().err(), Some(&expected), "{name}: {got:?}");
    }
}

#[test]
fn octets_beyond_the_length_field_are_padding() {
    let mut packet = build(1, &cat(&[user("nemo"), pap(b"pw")]), SECRET, true);
    packet.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1]);
    let request = parse_request(&packet, &client(SECRET, true)).unwrap();
    assert_eq!(request.auth, AuthKind::Pap(b"pw".to_vec().into()));
}

#[test]
fn accepted_edge_cases() {
    let nemo = user("nemo");
    let ok = |attributes: Vec<u8>| {
        parse_request(&build(1, &attributes, SECRET, true), &client(SECRET, true))
    };

    let long = [b'x'; 128];
    assert_eq!(
        ok(cat(&[nemo.clone(), pap(&long)])).unwrap().auth,
        AuthKind::Pap(long.to_vec().into())
    );
    // All-NUL password decodes to empty (the caller refuses it, R8); interior NULs kept.
    assert_eq!(
        ok(cat(&[nemo.clone(), pap(&[0; 16])])).unwrap().auth,
        AuthKind::Pap(Vec::new().into())
    );
    assert_eq!(
        ok(cat(&[nemo.clone(), pap(b"a\0b")])).unwrap().auth,
        AuthKind::Pap(b"a\0b".to_vec().into())
    );
    assert_eq!(
        ok(cat(&[nemo.clone(), attr(3, &[1; 17])])).unwrap().auth,
        AuthKind::Unsupported("chap")
    );
    let mschapv2 = attr(
        26,
        &cat(&[vec![0, 0, 1, 55], attr(11, &[1; 16]), attr(25, &[1; 50])]),
    );
    assert_eq!(
        ok(cat(&[nemo.clone(), mschapv2])).unwrap().auth,
        AuthKind::Unsupported("mschapv2")
    );
    let mschap = attr(26, &cat(&[vec![0, 0, 1, 55], attr(1, &[1; 50])]));
    assert_eq!(
        ok(cat(&[nemo.clone(), mschap])).unwrap().auth,
        AuthKind::Unsupported("mschap")
    );
    assert_eq!(
        ok(cat(&[nemo.clone(), attr(79, &[2, 0, 0, 5, 1])]))
            .unwrap()
            .auth,
        AuthKind::Unsupported("eap")
    );
    assert_eq!(ok(nemo.clone()).unwrap().auth, AuthKind::None);

    // MA anywhere in the request is fine (the draft says servers MUST NOT check position).
    let mut first = vec![1, 7, 0, 0];
    first.extend_from_slice(&AUTH);
    first.extend_from_slice(&attr(80, &[0; 16]));
    first.extend_from_slice(&cat(&[nemo.clone(), pap(b"pw")]));
    let len = first.len() as u16;
    first[2..4].copy_from_slice(&len.to_be_bytes());
    let ma = hmac_md5(SECRET, &first);
    first[22..38].copy_from_slice(&ma);
    assert!(parse_request(&first, &client(SECRET, true)).is_ok());

    // Opted-out client without MA and without Proxy-State is answered.
    let legacy = build(1, &cat(&[nemo.clone(), pap(b"pw")]), SECRET, false);
    let request = parse_request(&legacy, &client(SECRET, false)).unwrap();
    assert!(!request.message_authenticator);

    // Informational attributes.
    let info = cat(&[
        nemo,
        attr(32, b"nas-1"),
        attr(31, b"00-11-22"),
        attr(95, &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        attr(33, b"one"),
        attr(33, b"two"),
    ]);
    let request = ok(info).unwrap();
    assert_eq!(request.nas_identifier.as_deref(), Some("nas-1"));
    assert_eq!(request.calling_station_id.as_deref(), Some("00-11-22"));
    assert_eq!(request.nas_ip, Some("fe80::1".parse().unwrap()));
    assert_eq!(request.proxy_states, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn drop_reason_labels_are_unique_snake_case() {
    let labels: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), DropReason::ALL.len());
    assert!(labels
        .iter()
        .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}

#[test]
fn password_is_redacted_in_debug() {
    let request = parse_request(&hex(RFC2865_REQUEST), &client(RFC_SECRET, false)).unwrap();
    let text = format!("{request:?} {:?}", client(RFC_SECRET, false));
    assert!(
        !text.contains("arctangent") && !text.contains("xyzzy"),
        "{text}"
    );
}

// ---- replies ----

fn signed_request(attributes: &[u8]) -> (Vec<u8>, Request) {
    let packet = build(1, attributes, SECRET, true);
    let request = parse_request(&packet, &client(SECRET, true)).unwrap();
    (packet, request)
}

#[test]
fn reply_layout_ma_first_then_message_attributes_proxy_state() {
    let (packet, request) = signed_request(&cat(&[
        user("nemo"),
        pap(b"pw"),
        attr(33, b"p1"),
        attr(33, b"p2"),
    ]));
    let secret = SharedSecret::new(SECRET.to_vec()).unwrap();
    let message = "é".repeat(300); // 600 octets → 3 Reply-Messages split at char boundaries
    let reply = encode_reply(
        &request,
        &Decision::Reject {
            reply_message: Some(message.clone()),
        },
        &secret,
    )
    .unwrap();
    assert_eq!(reply[0], 3);
    assert_eq!(reply[1], 7);
    assert_eq!(
        usize::from(u16::from_be_bytes([reply[2], reply[3]])),
        reply.len()
    );
    assert!(independent_ma_ok(&reply, SECRET, Some(&AUTH)));
    assert!(Packet::is_authentic_response(&reply, &packet, SECRET));

    let mut attributes = Vec::new();
    let mut i = 20;
    while i < reply.len() {
        attributes.push((
            reply[i],
            reply[i + 2..i + usize::from(reply[i + 1])].to_vec(),
        ));
        i += usize::from(reply[i + 1]);
    }
    let kinds: Vec<u8> = attributes.iter().map(|a| a.0).collect();
    assert_eq!(kinds, vec![80, 18, 18, 18, 33, 33]);
    let text: Vec<u8> = attributes
        .iter()
        .filter(|a| a.0 == 18)
        .flat_map(|a| a.1.clone())
        .collect();
    assert_eq!(String::from_utf8(text).unwrap(), message);
    assert!(attributes
        .iter()
        .filter(|a| a.0 == 18)
        .all(|a| std::str::from_utf8(&a.1).is_ok() && a.1.len() <= 253));
    assert_eq!(attributes[4].1, b"p1");
    assert_eq!(attributes[5].1, b"p2");
}

#[test]
fn reply_errors() {
    let (_, request) = signed_request(&user("nemo"));
    let secret = SharedSecret::new(SECRET.to_vec()).unwrap();
    let accept = |attributes| encode_reply(&request, &Decision::Accept { attributes }, &secret);
    assert_eq!(
        accept(vec![ReplyAttribute::Other {
            kind: 80,
            value: vec![0; 16]
        }]),
        Err(RadiusError::ForbiddenReplyAttribute(80))
    );
    assert_eq!(
        accept(vec![ReplyAttribute::Other {
            kind: 33,
            value: vec![1]
        }]),
        Err(RadiusError::ForbiddenReplyAttribute(33))
    );
    assert_eq!(
        accept(vec![ReplyAttribute::Class(vec![])]),
        Err(RadiusError::BadReplyAttributeLength { kind: 25, len: 0 })
    );
    assert_eq!(
        accept(vec![ReplyAttribute::FilterId("f".repeat(254))]),
        Err(RadiusError::BadReplyAttributeLength { kind: 11, len: 254 })
    );
    assert!(matches!(
        accept(vec![ReplyAttribute::ReplyMessage("m".repeat(5000))]),
        Err(RadiusError::ReplyTooLarge(_))
    ));
    let ok = accept(vec![
        ReplyAttribute::Class(b"c".to_vec()),
        ReplyAttribute::FilterId("staff".into()),
        ReplyAttribute::SessionTimeout(3600),
        ReplyAttribute::ReplyMessage(String::new()),
    ])
    .unwrap();
    assert_eq!(ok[0], 2);
    assert_eq!(ok.len(), 20 + 18 + 3 + 7 + 6);
    assert_eq!(SharedSecret::new(Vec::new()), Err(RadiusError::EmptySecret));
}

/// A request built with the `radius` crate, MA filled in by an independent HMAC, parsed,
/// answered, and the answer checked with the crate's Response Authenticator check.
#[test]
fn round_trip_with_the_radius_crate() {
    let mut packet = Packet::new_with_identifier(Code::AccessRequest, SECRET, 42);
    rfc2865::add_user_name(&mut packet, "alice@example.org");
    rfc2865::add_user_password(&mut packet, b"correct horse battery staple").unwrap();
    rfc2865::add_nas_identifier(&mut packet, "vpn-1");
    rfc2865::add_proxy_state(&mut packet, b"proxy-1");
    rfc2869::add_message_authenticator(&mut packet, &[0; 16]);
    let mut bytes = packet.encode().unwrap();
    let ma_at = bytes.len() - 16;
    let ma = hmac_md5(SECRET, &bytes);
    bytes[ma_at..].copy_from_slice(&ma);

    let request = parse_request(&bytes, &client(SECRET, true)).unwrap();
    assert_eq!(request.identifier, 42);
    assert_eq!(request.user_name.as_deref(), Some("alice@example.org"));
    assert_eq!(
        request.auth,
        AuthKind::Pap(b"correct horse battery staple".to_vec().into())
    );
    assert_eq!(request.nas_identifier.as_deref(), Some("vpn-1"));

    let secret = SharedSecret::new(SECRET.to_vec()).unwrap();
    let decision = Decision::Accept {
        attributes: vec![ReplyAttribute::Class(b"tapd".to_vec())],
    };
    let reply = encode_reply(&request, &decision, &secret).unwrap();
    assert!(Packet::is_authentic_response(&reply, &bytes, SECRET));
    assert!(independent_ma_ok(&reply, SECRET, Some(&bytes[4..20])));
    assert_eq!(reply[20], 80, "MA first");
    let decoded = Packet::decode(&reply, SECRET).unwrap();
    assert_eq!(decoded.get_code(), Code::AccessAccept);
    assert_eq!(decoded.get_identifier(), 42);
    assert_eq!(rfc2865::lookup_class(&decoded), Some(b"tapd".to_vec()));
    assert_eq!(
        rfc2865::lookup_proxy_state(&decoded),
        Some(b"proxy-1".to_vec())
    );
}

// ---- clients ----

#[test]
fn find_client_picks_the_most_specific_prefix() {
    let mk = |name: &str, net: &str| RadiusClient {
        name: name.into(),
        network: parse_network(net).unwrap(),
        secret: SharedSecret::new(b"s".to_vec()).unwrap(),
        require_message_authenticator: true,
    };
    let clients = vec![
        mk("wide", "10.0.0.0/8"),
        mk("narrow", "10.1.0.0/16"),
        mk("host", "10.1.2.3"),
        mk("wide-again", "10.9.9.9/8"),
        mk("v6", "2001:db8::/32"),
    ];
    let name = |ip: &str| find_client(&clients, ip.parse().unwrap()).map(|c| c.name.as_str());
    assert_eq!(name("10.1.2.3"), Some("host"));
    assert_eq!(name("10.1.2.4"), Some("narrow"));
    assert_eq!(name("10.2.0.1"), Some("wide"));
    assert_eq!(name("::ffff:10.1.2.3"), Some("host"));
    assert_eq!(name("2001:db8::5"), Some("v6"));
    assert_eq!(name("192.0.2.1"), None);
    assert_eq!(
        parse_network("10.9.9.9/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert!(matches!(
        parse_network("10.0.0.0/33"),
        Err(RadiusError::BadClientNetwork(_))
    ));
    assert!(matches!(
        parse_network("vpn.example.org"),
        Err(RadiusError::BadClientNetwork(_))
    ));
}

// ---- reply cache ----

fn key(port: u16, id: u8, auth: u8) -> CacheKey {
    CacheKey {
        receiver: "127.0.0.1:1812".parse().unwrap(),
        source: SocketAddr::from(([127, 0, 0, 1], port)),
        identifier: id,
        authenticator: [auth; 16],
    }
}

#[test]
fn cache_replays_answered_and_drops_in_flight_duplicates() {
    let t0 = Instant::now();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    let k = key(5000, 1, 1);
    assert_eq!(cache.admit(&k, t0), CacheLookup::Miss);
    assert_eq!(cache.admit(&k, t0), CacheLookup::InFlight);
    cache.complete(&k, b"reply".to_vec(), t0 + Duration::from_secs(1));
    assert_eq!(
        cache.admit(&k, t0 + Duration::from_secs(2)),
        CacheLookup::Replay(b"reply".to_vec())
    );
    // Expires exactly TTL after completion.
    assert_eq!(
        cache.lookup(&k, t0 + Duration::from_millis(10_999)),
        CacheLookup::Replay(b"reply".to_vec())
    );
    assert_eq!(
        cache.lookup(&k, t0 + Duration::from_secs(11)),
        CacheLookup::Miss
    );
    assert!(cache.is_empty());
    // Different port or id: independent.
    assert_eq!(cache.admit(&key(5001, 1, 1), t0), CacheLookup::Miss);
    assert_eq!(cache.admit(&key(5000, 2, 1), t0), CacheLookup::Miss);
}

#[test]
fn cache_tells_receiving_sockets_and_ipv6_scopes_apart() {
    let t0 = Instant::now();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    let first = key(5000, 1, 1);
    let other_socket = CacheKey {
        receiver: "127.0.0.1:1813".parse().unwrap(),
        ..first
    };
    assert_eq!(cache.admit(&first, t0), CacheLookup::Miss);
    assert_eq!(cache.lookup(&other_socket, t0), CacheLookup::Miss);
    assert_eq!(cache.admit(&other_socket, t0), CacheLookup::Miss);
    cache.complete(&other_socket, b"other".to_vec(), t0);
    assert_eq!(cache.lookup(&first, t0), CacheLookup::InFlight);

    let link_local = |scope: u32| {
        let mut key = first;
        key.source = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            5000,
            0,
            scope,
        ));
        key
    };
    assert_eq!(cache.admit(&link_local(2), t0), CacheLookup::Miss);
    assert_eq!(cache.admit(&link_local(3), t0), CacheLookup::Miss);
    cache.complete(&link_local(2), b"eth0".to_vec(), t0);
    assert_eq!(cache.lookup(&link_local(3), t0), CacheLookup::InFlight);
    assert_eq!(
        cache.lookup(&link_local(2), t0),
        CacheLookup::Replay(b"eth0".to_vec())
    );
    assert_eq!(cache.len(), 4);
}

#[test]
fn cache_new_authenticator_purges_and_late_completion_is_ignored() {
    let t0 = Instant::now();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    let old = key(5000, 1, 1);
    let new = key(5000, 1, 2);
    assert_eq!(cache.admit(&old, t0), CacheLookup::Miss);
    assert_eq!(cache.admit(&new, t0), CacheLookup::Miss);
    cache.complete(&old, b"old".to_vec(), t0);
    assert_eq!(cache.lookup(&new, t0), CacheLookup::InFlight);
    cache.complete(&new, b"new".to_vec(), t0);
    assert_eq!(cache.lookup(&new, t0), CacheLookup::Replay(b"new".to_vec()));
    assert_eq!(
        cache.lookup(&old, t0),
        CacheLookup::Miss,
        "old authenticator purges"
    );
    assert_eq!(cache.lookup(&new, t0), CacheLookup::Miss);
    assert_eq!(cache.len(), 0);
}

#[test]
fn cache_abandon_and_in_flight_timeout() {
    let t0 = Instant::now();
    let config = ReplyCacheConfig {
        in_flight_timeout: Duration::from_secs(30),
        ..ReplyCacheConfig::default()
    };
    let mut cache = ReplyCache::new(config);
    let k = key(5000, 1, 1);
    cache.admit(&k, t0);
    cache.abandon(&key(5000, 1, 9)); // other authenticator: no effect
    assert_eq!(cache.lookup(&k, t0), CacheLookup::InFlight);
    cache.abandon(&k);
    assert_eq!(cache.admit(&k, t0), CacheLookup::Miss);
    assert_eq!(
        cache.lookup(&k, t0 + Duration::from_secs(29)),
        CacheLookup::InFlight
    );
    assert_eq!(
        cache.lookup(&k, t0 + Duration::from_secs(30)),
        CacheLookup::Miss
    );
}

#[test]
fn cache_is_bounded_and_evicts_answered_before_in_flight() {
    let t0 = Instant::now();
    let mut cache = ReplyCache::new(ReplyCacheConfig {
        max_entries: 3,
        ..ReplyCacheConfig::default()
    });
    let (a, b, c, d) = (key(1, 1, 1), key(2, 1, 1), key(3, 1, 1), key(4, 1, 1));
    cache.admit(&a, t0);
    cache.admit(&b, t0);
    cache.admit(&c, t0);
    cache.complete(&c, b"c".to_vec(), t0);
    cache.admit(&d, t0);
    assert_eq!(cache.len(), 3);
    assert_eq!(
        cache.lookup(&c, t0),
        CacheLookup::Miss,
        "answered entry evicted first"
    );
    assert_eq!(cache.lookup(&a, t0), CacheLookup::InFlight);
    cache.admit(&key(5, 1, 1), t0);
    cache.admit(&key(6, 1, 1), t0);
    assert_eq!(cache.len(), 3);
    assert_eq!(
        cache.lookup(&a, t0),
        CacheLookup::Miss,
        "then the oldest in flight"
    );
    // Churn keeps the order queues bounded.
    for i in 0..10_000u32 {
        let k = key(7, (i % 256) as u8, (i / 256) as u8);
        cache.admit(&k, t0);
        cache.complete(&k, vec![1], t0);
    }
    assert!(cache.len() <= 3);
}

// ---- property tests ----

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = parse_request(&bytes, &client(SECRET, true));
        let _ = parse_request(&bytes, &client(SECRET, false));
    }

    #[test]
    fn random_headers_with_random_attributes_never_panic(
        code in prop_oneof![Just(1u8), Just(12u8), any::<u8>()],
        attributes in proptest::collection::vec(any::<u8>(), 0..300),
        sign in any::<bool>(),
    ) {
        let packet = build(code, &attributes, SECRET, sign);
        if let Ok(request) = parse_request(&packet, &client(SECRET, false)) {
            if request.message_authenticator {
                prop_assert!(independent_ma_ok(&packet, SECRET, None));
            }
        }
    }

    #[test]
    fn mutations_of_a_valid_packet_never_panic_and_accepted_ones_verify(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut packet = build(1, &cat(&[user("nemo"), pap(b"pw"), attr(33, b"ps")]), SECRET, true);
        for (index, byte, op) in edits {
            let i = index.index(packet.len().max(1));
            match op {
                0 => packet[i] = byte,
                1 => packet[i] ^= 1 << (byte % 8),
                2 => packet.truncate(i),
                _ => packet.insert(i.min(packet.len()), byte),
            }
            if packet.is_empty() { break; }
        }
        packet.extend_from_slice(&extra);
        for require_ma in [true, false] {
            if let Ok(request) = parse_request(&packet, &client(SECRET, require_ma)) {
                prop_assert!(request.message_authenticator || !require_ma);
                if request.message_authenticator {
                    prop_assert!(independent_ma_ok(&packet, SECRET, None));
                }
                let secret = SharedSecret::new(SECRET.to_vec()).unwrap();
                let reply = encode_reply(&request, &Decision::Reject { reply_message: None }, &secret).unwrap();
                prop_assert!(independent_ma_ok(&reply, SECRET, Some(&request.authenticator)));
            }
        }
    }

    #[test]
    fn pap_round_trips(password in proptest::collection::vec(any::<u8>(), 0..=128)) {
        let packet = build(1, &cat(&[user("u"), pap(&password)]), SECRET, true);
        let request = parse_request(&packet, &client(SECRET, true)).unwrap();
        let mut expected = password.clone();
        while expected.last() == Some(&0) { expected.pop(); }
        prop_assert_eq!(request.auth, AuthKind::Pap(expected.into()));
    }

    #[test]
    fn reply_messages_split_losslessly(message in "\\PC{0,700}") {
        let (_, request) = signed_request(&user("u"));
        let secret = SharedSecret::new(SECRET.to_vec()).unwrap();
        let reply = encode_reply(&request, &Decision::Reject { reply_message: Some(message.clone()) }, &secret).unwrap();
        let mut text = Vec::new();
        let mut i = 38;
        while i < reply.len() {
            let len = usize::from(reply[i + 1]);
            prop_assert_eq!(reply[i], 18);
            prop_assert!(std::str::from_utf8(&reply[i + 2..i + len]).is_ok());
            text.extend_from_slice(&reply[i + 2..i + len]);
            i += len;
        }
        prop_assert_eq!(String::from_utf8(text).unwrap(), message);
    }
}
