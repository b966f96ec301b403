//! The API routes the console uses to show the box (issue 24): `GET /v2/status`,
//! `GET /v2/trunks`, `GET /v2/routes`, `POST /v2/webhooks/retry_dead`, each in
//! the OpenAPI document, against the real daemon.

mod common;

use common::gateway::{Gateway, Route, Trunk};

const TOKEN: &str = "console-test-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_trunks_routes_and_retry_dead_describe_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::builder(dir.path())
        .node_name("shop-7")
        .trunk(
            Trunk::new("pbx").allow("127.0.0.0/8").number("+13125550100").extra("password = \"x\"\nusername = \"u\""),
        )
        .agent("echo", "builtin:echo", "")
        .route(Route::new().name("sales").to("+13125550111").agent("echo").record())
        .route(Route::new().name("lobby").room("lobby").extra("pin = \"4321\""))
        .recording("")
        .webhooks("")
        .api(TOKEN)
        .start();
    let api = gw.api();

    let (code, s) = api.get("/v2/status").await;
    assert_eq!(code, 200, "{s}");
    let d = &s["data"];
    assert_eq!(d["node"], "shop-7");
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert!(d["uptime_seconds"].as_u64().is_some() && d["memory"]["resident_bytes"].as_u64().unwrap() > 0, "{d}");
    assert!(d["disk"]["free_bytes"].as_u64().unwrap() > 0 && d["disk"]["low"].is_boolean(), "{d}");
    assert_eq!(d["calls"]["active"], 0);
    assert_eq!(d["calls"]["last_hour"]["ended"], 0);
    assert_eq!((d["webhooks"]["dead"].as_u64(), d["uploads"]["enabled"].as_bool()), (Some(0), Some(false)));

    let (code, t) = api.get("/v2/trunks").await;
    assert_eq!(code, 200, "{t}");
    let t = &t["data"][0];
    assert_eq!((t["name"].as_str(), t["registration"]["state"].as_str()), (Some("pbx"), Some("not_registering")));
    assert_eq!(t["numbers"][0], "+13125550100");
    assert!(!t.to_string().contains("password") && t["last_invite_at"].is_null(), "{t}");

    let (code, r) = api.get("/v2/routes").await;
    assert_eq!(code, 200, "{r}");
    let r = r["data"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0]["index"].as_u64(), r[0]["name"].as_str()), (Some(0), Some("sales")));
    assert_eq!(r[0]["target"], serde_json::json!({"type": "agent", "name": "echo"}));
    assert_eq!(r[0]["record"], true);
    assert_eq!((r[1]["target"]["type"].as_str(), r[1]["pin_set"].as_bool()), (Some("room"), Some(true)));
    assert!(!r[1].to_string().contains("4321"), "the PIN is not shown: {}", r[1]);

    let (code, q) = api.post("/v2/webhooks/retry_dead", serde_json::json!({})).await;
    assert_eq!((code, q["data"]["requeued"].as_u64()), (200, Some(0)), "{q}");

    let (code, ready) = api.get("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["recording_disk_low"], false);
    assert_eq!(ready["recording_uploads"]["pending"], 0);

    let (_, doc) = api.get("/v2/openapi.json").await;
    for p in ["/v2/status", "/v2/trunks", "/v2/routes", "/v2/webhooks/retry_dead"] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    // Without the token: nothing.
    let (code, _) = api.send(reqwest::Method::GET, "/v2/status", None, Some("wrong")).await;
    assert_eq!(code, 401);
    gw.stop();
}
