//! The web console (`--http`): its JSON API, metrics, token and headers over plain HTTP, then
//! the page itself in headless Chromium (`scripts/install-browser`) against live managers:
//! the network map of a ring and of the 50-manager mesh, a killed relay's links turning down,
//! queue depths following puts and gets, and a dead letter's `<script>` body shown as text.

mod support;

use std::time::Duration;

use hopmq::Message;
use support::browser::{Browser, count, screenshot_path};
use support::http::{self, Response};
use support::network::{Network, Spec};
use support::{Manager, SOON, free_tcp_port, qmgr, wait_until};

/// Long enough for a dead neighbour (3 s dead interval), its advertisement's flooding and
/// the page's next poll, on a loaded 2-core machine.
const MAP_DEADLINE: Duration = Duration::from_secs(90);
const LEASE_LONG: Duration = Duration::from_secs(600);
const SCRIPT_BODY: &str = "<script>document.title='pwned'</script>";

/// A standalone manager serving the console on a free port, with extra environment.
fn console_manager(env: &[(&str, &str)]) -> (Manager, u16) {
    let port = free_tcp_port();
    let mut builder = Manager::builder()
        .arg("--http")
        .arg(&format!("127.0.0.1:{port}"));
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    (builder.start(), port)
}

/// `GET path`, retried until the console answers.
#[track_caller]
fn get(port: u16, path: &str, token: Option<&str>) -> Response {
    let mut response = None;
    wait_until(&format!("the console answers GET {path}"), SOON, || {
        response = http::get(port, path, token);
        response.is_some()
    });
    response.expect("set when the wait ended")
}

/// The depth of `queue` per `/api/queues`.
fn api_depth(port: u16, queue: &str) -> Option<u64> {
    let queues = get(port, "/api/queues", None).json();
    queues["queues"]
        .as_array()?
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["depth"].as_u64())
}

/// Puts `body` and dead-letters it (leased and returned `max_deliveries` = 1 times).
fn dead_letter(manager: &Manager, body: &str) {
    let client = manager.client();
    client
        .put("work", Message::new(body).header("kind", "hostile"))
        .expect("a put");
    let leased = client
        .get_leased("work", SOON, LEASE_LONG)
        .expect("a leased get")
        .expect("the message");
    client
        .nack(vec![leased.lease.expect("a lease")])
        .expect("a nack");
}

/// Every endpoint answers, the page without inline script, an unknown path 404, a bad
/// queue name 400.
fn assert_every_endpoint_answers(port: u16) {
    for path in [
        "/api/links",
        "/api/routes",
        "/api/network",
        "/api/history",
        "/api/manager",
    ] {
        let response = get(port, path, None);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        response.json();
    }
    let page = get(port, "/api/manager", None).json();
    assert_eq!(page["settings"]["http_listen"], format!("127.0.0.1:{port}"));
    assert_eq!(page["token_required"], false);
    assert!(
        page["store"]["fsync_histogram"]
            .as_array()
            .is_some_and(|h| !h.is_empty())
    );
    let index = get(port, "/", None);
    assert_eq!(index.status, 200);
    assert!(
        index
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(
        !index.body.contains("<script>"),
        "no inline script: {}",
        index.body
    );
    assert_eq!(get(port, "/app.js", None).status, 200);
    assert_eq!(get(port, "/nothing-here", None).status, 404);
    assert_eq!(
        get(port, "/api/queues/bad%20name/messages", None).status,
        400
    );
}

/// `/api/queues` follows three puts and two gets.
fn assert_depths_follow_puts_and_gets(manager: &Manager, port: u16) {
    let client = manager.client();
    for n in 0..3 {
        client
            .put("orders", Message::new(format!("m{n}")))
            .expect("put");
    }
    assert_eq!(api_depth(port, "orders"), Some(3));
    client.get("orders", SOON).expect("get").expect("a message");
    client.get("orders", SOON).expect("get").expect("a message");
    assert_eq!(api_depth(port, "orders"), Some(1));
    let orders = get(port, "/api/queues", None).json()["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "orders").cloned())
        .expect("orders is listed");
    assert_eq!(
        (
            orders["entered_total"].as_u64(),
            orders["taken_total"].as_u64()
        ),
        (Some(3), Some(2))
    );
}

#[test]
fn the_api_serves_status_queues_metrics_and_safe_headers() {
    let (manager, port) = console_manager(&[]);
    let status = get(port, "/api/status", None);
    assert_eq!(status.status, 200, "{status:?}");
    assert_eq!(status.header("content-type"), Some("application/json"));
    let csp = status.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(status.header("x-content-type-options"), Some("nosniff"));
    let status = status.json();
    assert_eq!(status["manager"], "local");
    assert!(status["queues"].is_array() && status["store"]["sync"] == "always");
    assert_every_endpoint_answers(port);
    assert_depths_follow_puts_and_gets(&manager, port);

    let metrics = get(port, "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    for line in [
        "hopmq_queue_depth{manager=\"local\",queue=\"orders\"} 1",
        "hopmq_messages_put_total{manager=\"local\"} 3",
        "# TYPE hopmq_store_fsync_seconds histogram",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no `{line}` in:\n{}",
            metrics.body
        );
    }
}

#[test]
fn with_a_token_the_api_and_metrics_need_it_and_the_page_does_not() {
    let token = "console-test-token-1";
    let (_manager, port) = console_manager(&[("QMGR_HTTP_TOKEN", token)]);
    for path in ["/api/status", "/api/queues", "/metrics"] {
        let refused = get(port, path, None);
        assert_eq!(refused.status, 401, "{path} without a token: {refused:?}");
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
        assert!(refused.header("content-security-policy").is_some());
        assert_eq!(get(port, path, Some("wrong-token")).status, 401, "{path}");
        assert_eq!(
            get(port, path, Some(token)).status,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(
        get(port, "/", None).status,
        200,
        "the page itself holds no data"
    );
    let page = get(port, "/api/manager", Some(token));
    assert!(
        !page.body.contains(token),
        "the token is never shown: {}",
        page.body
    );
    assert_eq!(page.json()["token_required"], true);
}

#[test]
fn a_dead_letter_browses_with_its_reason_and_its_script_body_as_json_text() {
    let (manager, port) = console_manager(&[("QMGR_MAX_DELIVERIES", "1")]);
    dead_letter(&manager, SCRIPT_BODY);
    let mut browsed = serde_json::Value::Null;
    wait_until("the dead letter is browsable", SOON, || {
        browsed = get(port, "/api/queues/DLQ/messages?limit=500", None).json();
        browsed["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    assert_eq!(browsed["limit"], 100, "the limit is capped");
    let message = &browsed["messages"][0];
    assert_eq!(message["body"]["encoding"], "text");
    assert_eq!(message["body"]["shown"], SCRIPT_BODY);
    assert_eq!(message["origin"], "local");
    assert_eq!(message["headers"]["kind"], "hostile");
    let reason = message["dead_letter_reason"].as_str().expect("a reason");
    assert!(reason.contains("max_deliveries"), "{reason}");
    assert!(message["trace"].as_array().is_some_and(|t| !t.is_empty()));
}

/// The page at `url` once `ready` holds of its DOM, polled against `deadline`.
#[track_caller]
fn page_until(
    browser: &Browser,
    url: &str,
    what: &str,
    deadline: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let mut dom = String::new();
    wait_until(what, deadline, || {
        dom = browser.dump_dom(url);
        ready(&dom)
    });
    dom
}

/// charlie's queues, as it advertises them (renewed every 5 s at most), reach alpha's map
/// (served on `port`).
fn assert_another_managers_queues_reach_the_map(
    network: &mut Network,
    browser: &Browser,
    port: u16,
) {
    let url = format!("http://127.0.0.1:{port}/#/map");
    for n in 0..3 {
        network
            .manager("charlie")
            .cli(&["put", "orders", &format!("order {n}")])
            .expect_code(0);
    }
    let charlie = || {
        let view = get(port, "/api/network", None).json();
        view["managers"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["name"] == "charlie").cloned())
            .unwrap_or_default()
    };
    wait_until("charlie's queues reach alpha's map", MAP_DEADLINE, || {
        charlie()["depth"] == 3
    });
    assert!(charlie()["queues"].as_u64().is_some_and(|q| q >= 1));
    page_until(
        browser,
        &url,
        "the map shows charlie's depth",
        MAP_DEADLINE,
        |dom| dom.contains("data-depth=\"3\""),
    );
}

#[test]
fn the_browser_map_shows_a_ring_and_a_killed_relay_s_links_go_down() {
    let browser = Browser::find();
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie", "delta"],
        links: vec![
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
            ("charlie", "delta", 1),
            ("delta", "alpha", 1),
        ],
        queues: vec![("orders", "charlie")],
    };
    let mut network = Network::prepare(&spec);
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let (topology, certs) = (network.topology(), network.certs());
    network.start_manager_with("alpha", &topology, &certs, &[("QMGR_HTTP_LISTEN", &listen)]);
    for name in ["bravo", "charlie", "delta"] {
        network.start_manager(name);
    }
    network.wait_all_links_up(&spec);
    let url = format!("http://127.0.0.1:{port}/#/map");
    let dom = page_until(
        &browser,
        &url,
        "the map shows the ring, all up",
        MAP_DEADLINE,
        |dom| count(dom, "data-link=\"") == 4 && count(dom, "data-state=\"down\"") == 0,
    );
    assert_eq!(count(&dom, "data-manager=\""), 4, "{dom}");
    for link in [
        "alpha-bravo",
        "bravo-charlie",
        "charlie-delta",
        "alpha-delta",
    ] {
        assert!(
            dom.contains(&format!("data-link=\"{link}\" data-state=\"up\"")),
            "{link}: {dom}"
        );
    }
    assert!(dom.contains("data-manager=\"alpha\" data-state=\"up\" data-local=\"true\""));
    browser.screenshot(&url, &screenshot_path("ring-up"));

    assert_another_managers_queues_reach_the_map(&mut network, &browser, port);

    // bravo relays alpha's traffic for charlie (cost 2 both ways; bravo's name comes first).
    network.manager("bravo").kill9();
    let killed = std::time::Instant::now();
    let dom = page_until(
        &browser,
        &url,
        "bravo's links turn down",
        MAP_DEADLINE,
        |dom| {
            dom.contains("data-link=\"alpha-bravo\" data-state=\"down\"")
                && dom.contains("data-link=\"bravo-charlie\" data-state=\"down\"")
        },
    );
    eprintln!(
        "bravo's links showed down {:?} after its kill",
        killed.elapsed()
    );
    assert!(
        dom.contains("data-link=\"charlie-delta\" data-state=\"up\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-manager=\"bravo\" data-state=\"down\""),
        "{dom}"
    );
    browser.screenshot(&url, &screenshot_path("ring-relay-killed"));

    // An edit the managers refuse shows as a banner with its error; the old topology stays.
    std::fs::write(&topology, "[managers.alpha]\nadress = \"typo\"\n").expect("an edit");
    let dom = page_until(
        &browser,
        &url,
        "the refused edit shows",
        MAP_DEADLINE,
        |dom| dom.contains("A topology edit was refused"),
    );
    assert!(dom.contains("adress"), "the banner names the error: {dom}");
    assert_eq!(count(&dom, "data-link=\""), 4, "{dom}");
    browser.screenshot(&url, &screenshot_path("ring-refused-edit"));
}

#[test]
fn the_browser_queues_page_follows_depths_and_shows_a_script_body_as_text() {
    let browser = Browser::find();
    let (manager, port) = console_manager(&[("QMGR_MAX_DELIVERIES", "1")]);
    let client = manager.client();
    for n in 0..3 {
        client
            .put("orders", Message::new(format!("order {n}")))
            .expect("put");
    }
    let url = format!("http://127.0.0.1:{port}/#/queues");
    page_until(&browser, &url, "the page shows 3 orders", SOON, |dom| {
        dom.contains("data-queue=\"orders\" data-depth=\"3\"")
    });
    client.get("orders", SOON).expect("get").expect("a message");
    client.get("orders", SOON).expect("get").expect("a message");
    page_until(&browser, &url, "the page shows 1 order", SOON, |dom| {
        dom.contains("data-queue=\"orders\" data-depth=\"1\"")
    });

    dead_letter(&manager, SCRIPT_BODY);
    let dlq = format!("http://127.0.0.1:{port}/#/queues/DLQ");
    let dom = page_until(
        &browser,
        &dlq,
        "the page shows the dead letter",
        SOON,
        |dom| dom.contains("class=\"message\""),
    );
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the body is text: {dom}"
    );
    assert!(
        !dom.contains(SCRIPT_BODY),
        "the body never became markup: {dom}"
    );
    assert!(
        dom.contains("<title>hopmq · local · queues</title>"),
        "the page ran: {dom}"
    );
    assert!(
        !dom.contains("pwned</title>"),
        "the body's script never ran: {dom}"
    );
    assert!(
        dom.contains("max_deliveries"),
        "the dead-letter reason shows: {dom}"
    );
    browser.screenshot(&dlq, &screenshot_path("queues-dead-letter"));
    let manager_page = format!("http://127.0.0.1:{port}/#/manager");
    page_until(
        &browser,
        &manager_page,
        "the manager page shows",
        SOON,
        |dom| dom.contains("id=\"store\"") && dom.contains("data-setting=\"http_listen\""),
    );
    browser.screenshot(&manager_page, &screenshot_path("manager"));
}

#[test]
fn the_browser_map_of_the_50_manager_mesh_shows_every_manager() {
    let browser = Browser::find();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mesh = std::fs::read_to_string(support::repo_root().join("tests/topologies/mesh-50.toml"))
        .expect("the mesh topology reads");
    // m00 alone runs, on a free port; the 49 others only exist in the file.
    let udp = support::network::free_udp_port();
    let mesh = mesh.replace("\"127.0.0.1:7700\"", &format!("\"127.0.0.1:{udp}\""));
    let topology = dir.path().join("mesh-50.toml");
    std::fs::write(&topology, mesh).expect("the topology is written");
    let certs = dir.path().join("certs");
    let (topology_arg, certs_arg) = (topology.display().to_string(), certs.display().to_string());
    qmgr(&[
        "certs",
        "init",
        "--topology",
        &topology_arg,
        "--out",
        &certs_arg,
    ])
    .expect_code(0);
    let port = free_tcp_port();
    let _manager = Manager::builder()
        .env("QMGR_NAME", "m00")
        .env("QMGR_TOPOLOGY", &topology_arg)
        .env("QMGR_TLS__CA", certs.join("ca.pem").display())
        .env("QMGR_TLS__CERT", certs.join("m00.pem").display())
        .env("QMGR_TLS__KEY", certs.join("m00.key").display())
        .env("QMGR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .start();
    let url = format!("http://127.0.0.1:{port}/#/map");
    let dom = page_until(&browser, &url, "the map shows the mesh", SOON, |dom| {
        dom.contains("id=\"network-map\"")
    });
    assert_eq!(count(&dom, "data-manager=\""), 50, "{dom}");
    assert_eq!(count(&dom, "data-link=\""), 150, "{dom}");
    assert!(dom.contains("data-manager=\"m00\" data-state=\"up\" data-local=\"true\""));
    browser.screenshot(&url, &screenshot_path("mesh-50"));
}

#[test]
fn the_browser_page_takes_its_token_from_the_address() {
    let browser = Browser::find();
    let token = "console-browser-token";
    let (_manager, port) = console_manager(&[("QMGR_HTTP_TOKEN", token)]);
    let without = browser.dump_dom(&format!("http://127.0.0.1:{port}/#/manager"));
    assert!(
        !without.contains("data-ready") && without.contains("id=\"token-form\""),
        "without the token the page asks for it and shows nothing: {without}"
    );
    let url = format!("http://127.0.0.1:{port}/#token={token}");
    let dom = page_until(&browser, &url, "the page shows the map", SOON, |dom| {
        dom.contains("data-manager=\"local\"")
    });
    assert!(!dom.contains(token), "the token leaves the address: {dom}");
}
