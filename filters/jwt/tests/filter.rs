//! The JWT filter's built .wasm on Lateen's runtime, through the filter test harness:
//! verification with inline keys, and a remote JWKS fetched by http_call.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use lateen_harness::{build_filter, Action, Plugin, Request, Response, Stream};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.example.com";

struct Signer {
    key: EncodingKey,
}

impl Signer {
    fn new() -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Signer {
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
        }
    }

    fn jwks(&self) -> String {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()
    }

    fn token(&self, sub: &str, expires_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let claims =
            json!({"iss": ISSUER, "sub": sub, "exp": now + expires_in, "groups": ["admin"]});
        encode(&h, &claims, &self.key).unwrap()
    }
}

fn jwt(provider: serde_json::Value) -> Plugin {
    let wasm = build_filter(env!("CARGO_MANIFEST_DIR")).expect("build the jwt filter");
    Plugin::load(wasm)
        .name("lateen/jwt")
        .config_json(&json!({ "providers": [provider] }))
        .start()
        .expect("start the jwt filter")
}

fn with_token(p: &Plugin, token: &str) -> (Stream, Action) {
    let mut s = p.stream();
    let action = s
        .send_request(Request::get("/").header("authorization", &format!("Bearer {token}")))
        .unwrap();
    (s, action)
}

#[test]
fn a_valid_token_leaves_its_claims_and_principal_and_is_removed() {
    let signer = Signer::new();
    let p = jwt(json!({"name": "idp", "issuer": ISSUER, "jwks": signer.jwks()}));
    let (s, action) = with_token(&p, &signer.token("ann", 3600));
    assert_eq!(action, Action::Continue);
    assert!(s.local_response().is_none());
    assert_eq!(
        s.property("request.auth.principal").as_deref(),
        Some("https://idp.example.com/ann")
    );
    let claims: serde_json::Value =
        serde_json::from_str(&s.property("request.auth.claims").expect("claims")).unwrap();
    assert_eq!(claims["groups"], json!(["admin"]));
    assert_eq!(
        s.request_header("authorization"),
        None,
        "forwardOriginalToken is off"
    );
}

#[test]
fn an_expired_or_foreign_token_gets_401_and_no_token_passes_through() {
    let signer = Signer::new();
    let p = jwt(json!({"name": "idp", "issuer": ISSUER, "jwks": signer.jwks()}));
    let (s, action) = with_token(&p, &signer.token("ann", -3600));
    assert_eq!(action, Action::Pause);
    let reply = s.local_response().expect("401");
    assert_eq!(reply.status, 401);
    assert!(reply
        .headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with(b"Bearer")));

    let (s, _) = with_token(&p, &Signer::new().token("mallory", 3600));
    assert_eq!(
        s.local_response().map(|r| r.status),
        Some(401),
        "signed by another key"
    );

    // RequestAuthentication alone lets a request without a token through, unauthenticated.
    let mut s = p.stream();
    assert_eq!(s.send_request(Request::get("/")).unwrap(), Action::Continue);
    assert_eq!(s.property("request.auth.principal"), None);
}

fn remote(signer_jwks_path: &str) -> Plugin {
    jwt(json!({"name": "idp", "issuer": ISSUER, "remote": {
        "cluster": "outbound|443||idp.example.com", "authority": "idp.example.com",
        "path": signer_jwks_path, "timeoutMs": 1000, "cacheMs": 600000}}))
}

#[test]
fn a_remote_jwks_is_prefetched_at_configure_and_then_serves_requests() {
    let signer = Signer::new();
    let p = remote("/.well-known/jwks.json");
    let calls = p.http_calls();
    assert_eq!(calls.len(), 1, "one prefetch from the root context");
    assert_eq!(calls[0].cluster, "outbound|443||idp.example.com");
    assert_eq!(calls[0].header(":path"), Some("/.well-known/jwks.json"));
    assert_eq!(calls[0].header(":authority"), Some("idp.example.com"));
    p.answer_http_call(calls[0].token, Some(Response::new(200).body(signer.jwks())))
        .unwrap();

    let (s, action) = with_token(&p, &signer.token("ann", 3600));
    assert_eq!(action, Action::Continue, "verified with the cached set");
    assert!(p.http_calls().is_empty());
    assert_eq!(
        s.property("request.auth.principal").as_deref(),
        Some("https://idp.example.com/ann")
    );
}

#[test]
fn a_request_before_the_keys_arrive_waits_for_its_own_fetch() {
    let signer = Signer::new();
    let p = remote("/keys");
    let (s, action) = with_token(&p, &signer.token("ann", 3600));
    assert_eq!(action, Action::Pause, "waits for the key set");
    let mine = s.http_calls();
    assert_eq!(mine.len(), 1);
    p.answer_http_call(mine[0].token, Some(Response::new(200).body(signer.jwks())))
        .unwrap();
    assert!(s.request_resumed());
    assert!(s.local_response().is_none());
    assert!(s.property("request.auth.claims").is_some());

    // A failed fetch fails the request closed: no keys, no verification.
    let p = remote("/keys");
    let (s, _) = with_token(&p, &signer.token("ann", 3600));
    let token = s.http_calls()[0].token;
    p.answer_http_call(token, Some(Response::new(503))).unwrap();
    assert_eq!(s.local_response().map(|r| r.status), Some(401));
}
