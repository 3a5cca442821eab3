//! Bad input gets a clear 4xx naming the field, and nothing of it is stored.

use std::io::Write;

use serde_json::{json, Value};

use crate::helpers::{heartbeat, Backend, HostConfig, TestHost};

const TOKEN: &str = "vhs-secret-for-tests";

fn good(id: &str) -> Value {
    heartbeat(id, "b-1", "GameName", "2026-11-01T10:00:00Z", &["v1", "v2"])
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let config = HostConfig { vhs_token: Some(TOKEN.into()), max_body_bytes: Some(20_000), ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let t = Some(TOKEN);

    let expect_400 = |body: Value, field: &str| {
        let field = field.to_string();
        (body, field)
    };
    let mut wrong_type = good("wrong-type");
    wrong_type["viewers"] = json!("six");
    let mut missing = good("missing");
    missing.as_object_mut().unwrap().remove("id");
    let mut bad_time = good("bad-time");
    bad_time["time"] = json!("2026-11-01 10:00");
    let mut future = good("future");
    future["time"] = json!((time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap());
    let mut bad_viewer = good("bad-viewer");
    bad_viewer["viewer_list"] = json!(["v1", 7]);
    let mut empty_game = good("empty-game");
    empty_game["game"] = json!("");
    let mut bad_second = good("batch-bad");
    bad_second["broadcaster"] = json!(null);
    let cases = vec![
        expect_400(wrong_type, "viewers"),
        expect_400(missing, "id"),
        expect_400(bad_time, "time"),
        expect_400(future, "time"),
        expect_400(bad_viewer, "viewer_list[1]"),
        expect_400(empty_game, "game"),
        // One bad element rejects the whole batch, the good one included.
        expect_400(json!([good("batch-good"), bad_second]), "[1].broadcaster"),
    ];
    for (body, field) in cases {
        let (status, answer) = host.post_vhs(t, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["field"], json!(field), "{answer}");
        assert!(answer["error"].as_str().unwrap().starts_with(&format!("{field}: ")), "{answer}");
    }
    let (status, answer) = host.post_vhs_raw(t, b"{\"broadcaster\": \"b\",".to_vec(), &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].is_string());
    let (status, _) = host.post_vhs_raw(t, b"not json".to_vec(), &[]).await;
    assert_eq!(status, 400);
    let (status, _) = host.post_vhs_raw(t, Vec::new(), &[]).await;
    assert_eq!(status, 400);

    // Too large: refused by Content-Length, and by counting when compressed.
    let big = Value::Array(vec![good("big"); 200]);
    let (status, answer) = host.post_vhs(t, &big).await;
    assert_eq!(status, 413, "{answer}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&serde_json::to_vec(&big).unwrap()).unwrap();
    let packed = gz.finish().unwrap();
    assert!(packed.len() < 20_000);
    let (status, _) = host.post_vhs_raw(t, packed, &[("content-encoding", "gzip".into())]).await;
    assert_eq!(status, 413);

    // Secrets: wrong or missing token, bad signature.
    assert_eq!(host.post_vhs(Some("wrong"), &good("auth")).await.0, 401);
    assert_eq!(host.post_vhs(None, &good("auth")).await.0, 401);
    let body = serde_json::to_vec(&good("signed")).unwrap();
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let signature = drops_host::ingest::vhs::auth::sign(TOKEN, "msg-1", &now, &body);
    let signed = |sig: String| {
        vec![
            ("drops-message-id", "msg-1".into()),
            ("drops-message-timestamp", now.clone()),
            ("drops-message-signature", sig),
        ]
    };
    assert_eq!(host.post_vhs_raw(None, body.clone(), &signed(signature.replace('a', "b"))).await.0, 401);

    // Nothing of the above was stored: each good report is new now.
    assert_eq!(host.post_vhs(t, &good("batch-good")).await, (200, json!({"accepted": 1, "duplicates": 0})));
    assert_eq!(host.post_vhs(t, &good("auth")).await, (200, json!({"accepted": 1, "duplicates": 0})));
    assert_eq!(host.post_vhs_raw(None, body, &signed(signature)).await, (200, json!({"accepted": 1, "duplicates": 0})));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&good("gzipped")).unwrap()).unwrap();
    let packed = gz.finish().unwrap();
    assert_eq!(
        host.post_vhs_raw(t, packed, &[("content-encoding", "gzip".into())]).await,
        (200, json!({"accepted": 1, "duplicates": 0}))
    );
    host.stop();
    assert_eq!(host.database_totals().await.1, 4, "only the four good reports are in the inbox");
}

/// Every route of the OpenAPI document, sent a malformed request (and one
/// without the token), answers a status the document lists for it, with the
/// documented error body.
#[tokio::test]
async fn every_documented_route_answers_malformed_requests_as_documented() {
    let Some(host) = TestHost::spawn(Backend::Sqlite, HostConfig::default()).await else { return };
    let doc: serde_json::Value =
        host.client.get(format!("{}/v1/openapi.json", host.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.values().map(|p| p.as_object().unwrap().len()).sum::<usize>(), 23, "{paths:?}");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            // A name no route accepts, a filter no route knows, a body that is not what any route takes.
            let url = format!(
                "{}{}?no_such_filter=1",
                host.base,
                path.replace("{id}", "no-such-id").replace("{name}", "Bad Name!")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for token in [Some(crate::helpers::ADMIN_TOKEN), None] {
                let mut request = host.client.request(method.clone(), &url).body(b"\xff not json".to_vec());
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let answer = request.send().await.unwrap();
                let success = answer.status().is_success();
                let status = answer.status().as_u16().to_string();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                assert!(
                    op["responses"][&status].is_object(),
                    "{method} {path} (token: {}) answered {status}, not documented: {body}",
                    token.is_some()
                );
                // Routes that take no input (`GET /v1/campaigns`) have nothing to refuse.
                let open = op["security"] == json!([{}]);
                assert!(
                    success && (token.is_some() || open) || body["error"].is_string(),
                    "{method} {path} answered {status} without the error shape: {body}"
                );
            }
        }
    }
}

/// A page size outside what the document says (schemathesis' ST201) is a 400
/// naming `limit`, not silently clamped; the document states each bound.
#[tokio::test]
async fn page_sizes_outside_the_documented_bounds_are_refused() {
    let Some(host) = TestHost::spawn(Backend::Sqlite, HostConfig::default()).await else { return };
    let doc: serde_json::Value =
        host.client.get(format!("{}/v1/openapi.json", host.base)).send().await.unwrap().json().await.unwrap();
    for (route, max) in [("/grants", 100_000), ("/links", 10_000), ("/manifests", 10_000), ("/entitlements", 10_000)] {
        let params = doc["paths"][format!("/v1{route}")]["get"]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!((limit["schema"]["minimum"].as_u64(), limit["schema"]["maximum"].as_u64()), (Some(1), Some(max)));
        for bad in ["0", &(max + 1).to_string(), "2147483648"] {
            let (status, body) =
                host.admin_send(reqwest::Method::GET, &format!("{route}?limit={bad}"), Vec::new()).await;
            assert_eq!((status, body["field"].as_str()), (400, Some("limit")), "{route}?limit={bad}: {body}");
        }
        let (status, _) = host.admin_send(reqwest::Method::GET, &format!("{route}?limit={max}"), Vec::new()).await;
        assert_eq!(status, 200, "{route}?limit={max}");
    }
}
