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

/// `GET /v2/config`: the config in force with every secret masked (trunk and
/// upload credentials, the API token, a route's PIN), and the
/// errors of the last reload the box refused; `/console` is served without
/// credentials under a strict CSP; the WebSockets take the API token as `?token=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_shown_masked_with_the_last_refused_reload_and_the_console_is_served() {
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::builder(dir.path())
        .trunk(
            Trunk::new("pbx")
                .allow("127.0.0.0/8")
                .extra("username = \"u\"\npassword = \"trunk-pass-7781\"\ninbound_username = \"shop\"\ninbound_password = \"in-pass-3344\""),
        )
        .route(Route::new().name("lobby").room("lobby").extra("pin = \"4321\""))
        .api(TOKEN)
        .extra("[recording.upload]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"console-bucket\"\naccess_key_id = \"AKIAEXAMPLE1234\"\nsecret_access_key = \"very-secret-key-9876\"\n")
        .start();
    let api = gw.api();

    let (code, c) = api.get("/v2/config").await;
    assert_eq!(code, 200, "{c}");
    let text = c.to_string();
    for secret in ["trunk-pass-7781", "in-pass-3344", "4321", "AKIAEXAMPLE1234", "very-secret-key-9876", TOKEN] {
        assert!(!text.contains(secret), "{secret} shows in {c}");
    }
    let d = &c["data"];
    assert_eq!(d["path"], gw.config.display().to_string());
    assert_eq!(d["config"]["trunks"][0]["name"], "pbx");
    assert_eq!(d["config"]["routes"][0]["pin"], "****");
    assert_eq!(d["config"]["node"]["shutdown_grace"], "1s", "durations as strings");
    assert_eq!(d["config"]["api"]["token"], format!("****{}", &TOKEN[TOKEN.len() - 4..]));
    assert_eq!(d["reload"], serde_json::json!({"last_applied_at": null, "last_rejected": null}));

    // A refused reload: its errors are kept, the old config stays in force.
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, good.replace("bucket = \"console-bucket\"", "bucket = \"X\"")).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("config reload failed");
    let (_, c) = api.get("/v2/config").await;
    let rejected = &c["data"]["reload"]["last_rejected"];
    let errors = rejected["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e.as_str().unwrap().contains("bucket")), "{rejected}");
    assert!(rejected["at"].is_string() && c["data"]["reload"]["last_applied_at"].is_null(), "{c}");
    assert_eq!(c["data"]["config"]["recording_upload"]["bucket"], "console-bucket", "the old config stays");
    // A good one afterwards: applied, and the refused one still shown.
    std::fs::write(&gw.config, &good).unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("configuration reloaded");
    let (_, c) = api.get("/v2/config").await;
    assert!(
        c["data"]["reload"]["last_applied_at"].is_string() && c["data"]["reload"]["last_rejected"].is_object(),
        "{c}"
    );

    // The page: no token needed, nothing secret in it, a policy that keeps it to this origin.
    let r = api.http.get(api.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("sessionStorage") && !page.contains("localStorage.setItem"));
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script src"), "no CDN");

    // Browsers cannot set headers on a WebSocket: `?token=` with the API token opens
    // the event socket; a wrong one is 401.
    let port = gw.api_port();
    let socket = |token: &'static str| async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/v2/events?token={token}"), tcp).await
    };
    let (ws, _) = socket(TOKEN).await.expect("event socket with ?token=");
    drop(ws);
    match socket("wrong").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a wrong ?token= must be refused: {:?}", other.map(|_| ())),
    }
    let (_, doc) = api.get("/v2/openapi.json").await;
    assert!(doc["paths"].get("/v2/config").is_some() && doc["paths"].get("/console").is_some());
    gw.stop();
}
