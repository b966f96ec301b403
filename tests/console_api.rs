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

/// The route "test" button's API (`POST /v2/routes/{index}/test`): the box calls
/// the route by index through its own SIP listener — the trunk does not allow
/// loopback, so nothing but the box's own key admits the call — and reports what
/// happened: an agent route answers and RTP comes back; a forward route the
/// carrier refuses reports the carrier's 486; a forward route matching a prefix
/// needs a number. A forged marker from a trunk changes nothing: that call is
/// routed by its number, and the marker never shows in events. The trunks view
/// shows the trunk's last OPTIONS keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_test_calls_the_route_and_reports_what_happened() {
    use common::{Sipp, free_even_block, free_port, scenario, sipp_args};
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    // The carrier of the forward route: busy.
    let carrier_port = free_port();
    let carrier_args: Vec<String> = ["-sf", &scenario("uas_busy.xml").display().to_string(), "-i", "127.0.0.3"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-p".into(), carrier_port.to_string(), "-mp".into(), free_even_block(4).to_string()])
        .chain(["-m", "1", "-timeout", "60s", "-timeout_error"].iter().map(|s| s.to_string()))
        .collect();
    let mut carrier = Sipp::start(dir.path(), "carrier", &carrier_args);
    let gw = Gateway::builder(dir.path())
        .trunk(Trunk::new("pbx").allow("127.0.0.2/32").number("+13125550100"))
        .trunk(Trunk::new("carrier").proxy(&format!("sip:127.0.0.3:{carrier_port}")).number("+13125550188"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().name("sales").to("+13125550111").agent("echo"))
        .route(Route::new().name("out").to("+1555*").extra("forward = \"carrier\""))
        .route(Route::new().name("lobby").room("lobby"))
        .route(Route::new().name("parked").to("+13125550199").extra("park = true"))
        .webhooks("")
        .api(TOKEN)
        .start();
    let api = gw.api();

    // The agent route: answered, the echo's RTP came back, both legs' events listed.
    let (code, r) = api.post("/v2/routes/0/test", json!({"talk_secs": 2})).await;
    assert_eq!(code, 200, "{r}");
    let r = &r["data"];
    assert_eq!((r["result"].as_str(), r["route"]["name"].as_str()), (Some("answered"), Some("sales")), "{r}");
    assert_eq!((r["to"].as_str(), r["from"].as_str()), (Some("+13125550111"), Some("route-test")));
    assert!(r["media"]["packets_received"].as_u64().unwrap() > 25, "RTP came back: {r}");
    assert!(r["setup_ms"].is_u64() && r["talk_ms"].as_u64().unwrap() >= 2000, "{r}");
    let legs: Vec<(&str, &str)> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["leg"].as_str().unwrap(), e["event_type"].as_str().unwrap()))
        .collect();
    for want in [
        ("test_caller", "call.answered"),
        ("test_caller", "call.hangup"),
        ("route", "call.initiated"),
        ("route", "call.hangup"),
    ] {
        assert!(legs.contains(&want), "{want:?} in {legs:?}");
    }
    // The backend sees both legs in one session; the called leg is marked, and the key never leaves the box.
    let session = r["call_session_id"].as_str().unwrap().to_string();
    let data = gw
        .hooks()
        .wait_until("both legs' hangups", common::gateway::WAIT, |e| {
            e.iter().filter(|x| x["body"]["data"]["event_type"] == "call.hangup").count() >= 2
        })
        .await;
    let initiated: Vec<&Value> = data
        .iter()
        .map(|x| &x["body"]["data"])
        .filter(|d| d["event_type"] == "call.initiated" && d["payload"]["call_session_id"] == session.as_str())
        .collect();
    assert_eq!(initiated.len(), 2, "{initiated:?}");
    let called = initiated.iter().find(|d| d["payload"]["direction"] == "incoming").unwrap();
    assert_eq!(
        called["payload"]["custom_headers"],
        json!([{"name": "X-Sipbridge-Route-Test", "value": "route=sales"}])
    );
    assert!(!serde_json::to_string(&data).unwrap().contains("key="), "the route-test key is never in a webhook");

    // A forward route that matches a prefix needs a number; with one, the carrier's refusal is reported.
    let (code, e) = api.post("/v2/routes/1/test", json!({})).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["errors"][0]["detail"].as_str().unwrap().contains("\"to\""), "{e}");
    let (code, r) = api.post("/v2/routes/1/test", json!({"to": "+15550001"})).await;
    assert_eq!(code, 200, "{r}");
    let r = &r["data"];
    assert_eq!((r["result"].as_str(), r["sip_response"].as_u64()), (Some("refused"), Some(486)), "{r}");
    assert_eq!(r["from"], "+13125550188", "caller ID: the carrier trunk's number");
    assert_eq!(carrier.wait(common::gateway::WAIT), 0, "{}", carrier.report());
    let invite = carrier.messages();
    assert!(invite.contains("INVITE sip:+15550001@") && !invite.contains("X-Sipbridge-Route-Test"), "{invite}");

    // A parked route never answers: after ring_secs the test gives up with a
    // CANCEL, which ends the parked leg too (the box admits its own CANCEL).
    let (code, r) = api.post("/v2/routes/3/test", json!({"ring_secs": 2})).await;
    assert_eq!(code, 200, "{r}");
    let r = &r["data"];
    assert_eq!(r["result"], "not_answered", "{r}");
    let hangups: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "call.hangup")
        .map(|e| e["leg"].as_str().unwrap())
        .collect();
    assert_eq!(hangups.len(), 2, "both legs ended: {r}");
    assert!(hangups.contains(&"route"), "the parked leg got the CANCEL: {r}");

    // Clients that go away mid-test (a closed tab, a curl timeout): the test
    // calls are still hung up after their talk time, not left up with the agent;
    // until then they hold the two route-test slots, so a third test waits (429).
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().unwrap();
    let abandon =
        || impatient.post(api.url("/v2/routes/0/test")).bearer_auth(TOKEN).json(&json!({"talk_secs": 5})).send();
    let (first, second) = tokio::join!(abandon(), abandon());
    assert!(first.is_err_and(|e| e.is_timeout()) && second.is_err_and(|e| e.is_timeout()), "the clients gave up");
    let (code, busy) = api.post("/v2/routes/0/test", json!({})).await;
    assert_eq!(code, 429, "{busy}");
    api.wait_for("/v2/calls", "the abandoned test calls up", |b| b["data"].as_array().is_some_and(|c| c.len() == 4))
        .await;
    api.wait_for("/v2/calls", "the abandoned test calls hung up", |b| b["data"].as_array().is_some_and(Vec::is_empty))
        .await;

    // Bad requests.
    let (code, _) = api.post("/v2/routes/9/test", json!({})).await;
    assert_eq!(code, 404);
    let (code, _) = api.post("/v2/routes/x/test", json!({})).await;
    assert_eq!(code, 400);
    let (code, _) = api.post("/v2/routes/0/test", json!({"talk_secs": 31})).await;
    assert_eq!(code, 400);
    let (code, _) = api.post("/v2/routes/0/test", json!({"ring_secs": 0})).await;
    assert_eq!(code, 400);
    let (code, _) = api.post("/v2/routes/0/test", json!({"to": "1@evil.example"})).await;
    assert_eq!(code, 400);

    // A forged marker from the trunk: routed by its number to `sales`, marker gone.
    let target = format!("127.0.0.1:{}", gw.sip_port);
    let mut args = sipp_args("uac_forged_route_test.xml", "+13125550111", &target, "127.0.0.2", &[]);
    args.extend(
        ["-key", "marker", &format!("route=2;session=forged-session;key={}", "0".repeat(32))].map(String::from),
    );
    let mut forged = Sipp::start(dir.path(), "forged", &args);
    assert_eq!(forged.wait(common::gateway::WAIT), 0, "{}", forged.report());
    let data = gw
        .hooks()
        .wait_until("the forged call's initiated", common::gateway::WAIT, |e| {
            e.iter().any(|x| x["body"]["data"]["payload"]["from"] == "+14155550123")
        })
        .await;
    let forged_call =
        data.iter().map(|x| &x["body"]["data"]).find(|d| d["payload"]["from"] == "+14155550123").unwrap().clone();
    assert_eq!(forged_call["payload"]["connection_id"], "pbx");
    assert_ne!(forged_call["payload"]["call_session_id"], "forged-session");
    assert_eq!(forged_call["payload"]["custom_headers"], json!([]), "{forged_call}");
    let record = gw.call_record(forged_call["payload"]["call_control_id"].as_str().unwrap());
    assert_eq!(record["route"], "sales", "routed by its number, not by the marker");

    // OPTIONS keepalives from the trunk show in the trunks view.
    let mut options = Sipp::start(dir.path(), "options", &sipp_args("uac_options.xml", "", &target, "127.0.0.2", &[]));
    assert_eq!(options.wait(common::gateway::WAIT), 0, "{}", options.report());
    let (_, t) = api.get("/v2/trunks").await;
    let pbx = &t["data"][0];
    assert_eq!(pbx["last_options"]["source"], "127.0.0.2", "{pbx}");
    assert!(pbx["last_options"]["at"].is_string() && pbx["last_invite_at"].is_string(), "{pbx}");
    assert_eq!(
        (pbx["seen_since_start"]["options"].as_u64(), pbx["seen_since_start"]["invites"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(t["data"][1]["last_options"].is_null());
    gw.stop();
}
