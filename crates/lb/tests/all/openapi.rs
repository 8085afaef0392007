//! docs/openapi.json against the server: the document is OpenAPI 3.1 and consistent; it
//! lists exactly the routes the admin code registers; and a real unit (health cache,
//! classifier, router and session store, fed by two hosts) answers every documented
//! operation, and the documented error cases, with a status the document lists and a body
//! that matches its schema ([`crate::json_schema`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};
use switchyard_lb::RunningUnit;
use switchyard_lb::admin::auth::AdminToken;
use switchyard_wire::{HostId, SessionId};

use crate::harness::*;
use crate::json_schema::Validator;

const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// Every source file of the admin API, by its path under `crates/lb/src`.
const SOURCES: [(&str, &str); 11] = [
    ("admin/mod.rs", include_str!("../../src/admin/mod.rs")),
    ("admin/routes.rs", include_str!("../../src/admin/routes.rs")),
    ("admin/flows.rs", include_str!("../../src/admin/flows.rs")),
    (
        "admin/sessions.rs",
        include_str!("../../src/admin/sessions.rs"),
    ),
    ("admin/acts.rs", include_str!("../../src/admin/acts.rs")),
    (
        "admin/metrics.rs",
        include_str!("../../src/admin/metrics.rs"),
    ),
    ("admin/auth.rs", include_str!("../../src/admin/auth.rs")),
    (
        "admin/dashboard.rs",
        include_str!("../../src/admin/dashboard.rs"),
    ),
    ("admin/api.rs", include_str!("../../src/admin/api.rs")),
    ("admin/client.rs", include_str!("../../src/admin/client.rs")),
    ("router_role.rs", include_str!("../../src/router_role.rs")),
];

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// The fallback's message: a path the API does not serve.
const NO_SUCH_ROUTE: &str = "no such route";

/// Queries that make each GET with parameters valid (others need none).
const VALID_QUERIES: [(&str, &str); 3] = [
    ("/v1/allotments", "vip=198.51.100.10:80&tokens=1000"),
    ("/v1/flows", "top=5"),
    ("/v1/sessions", "client_ip=198.51.100.7"),
];

/// A session the tests record in the unit's DAM portion.
const CLIENT: &str = "198.51.100.7";

fn document() -> Value {
    serde_json::from_str(DOCUMENT).unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"))
}

fn paths(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["paths"].as_object().expect("paths is an object")
}

/// Every documented operation: (method in lower case, path template, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in paths(doc) {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op));
            }
        }
    }
    ops
}

/// Follows a `$ref` object to its target (one level, as components use them).
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => Validator::new(doc)
            .resolve(r)
            .unwrap_or_else(|| panic!("unresolvable $ref {r}")),
        None => value,
    }
}

/// Every `$ref` in `value`, with where it is.
fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, sub) in map {
                if key == "$ref" {
                    out.push((at.to_owned(), sub.as_str().unwrap_or("").to_owned()));
                } else {
                    references(sub, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, sub) in items.iter().enumerate() {
                references(sub, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The names in `{…}` of a path template.
fn path_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_document_is_openapi_3_1_and_consistent() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:9180");
    let scheme = &doc["components"]["securitySchemes"]["adminToken"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    // The token is optional: no security requirement is one of the alternatives.
    let security = doc["security"].as_array().expect("top-level security");
    assert!(security.contains(&json!({})) && security.contains(&json!({"adminToken": []})));

    let mut refs = Vec::new();
    references(&doc, "#", &mut refs);
    assert!(refs.len() > 50, "only {} $refs found", refs.len());
    let validator = Validator::new(&doc);
    for (at, reference) in &refs {
        assert!(
            validator.resolve(reference).is_some(),
            "{at}: $ref {reference:?} does not resolve"
        );
    }

    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        Validator::check_keywords(schema, &format!("#/components/schemas/{name}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let error_schema = json!({"$ref": "#/components/schemas/ErrorBody"});
    let mut ids = BTreeSet::new();
    let ops = operations(&doc);
    for (path, item) in paths(&doc) {
        assert!(path.starts_with('/'), "{path}");
        assert!(
            METHODS.iter().any(|m| item.get(*m).is_some()),
            "{path} has no operation"
        );
    }
    for (method, path, op) in &ops {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            ids.insert(id.to_owned()),
            "{at}: operationId {id} is not unique"
        );
        assert!(op["summary"].is_string(), "{at}: no summary");
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| deref(&doc, p)).collect())
            .unwrap_or_default();
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(
                    p["required"], true,
                    "{at}: path parameter {} must be required",
                    p["name"]
                );
                p["name"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        assert_eq!(in_path, path_params(path), "{at}: path parameters");
        for p in &params {
            assert!(
                p["schema"].is_object(),
                "{at}: parameter {} has no schema",
                p["name"]
            );
            Validator::check_keywords(&p["schema"], &format!("{at} {}", p["name"]))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(!responses.is_empty(), "{at}: no responses");
        assert!(responses.contains_key("200"), "{at}: no 200 answer");
        for (status, response) in responses {
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{at}: status {status:?} is not a number"));
            let response = deref(&doc, response);
            assert!(
                response["description"].is_string(),
                "{at} {status}: no description"
            );
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{at} {status}: no content"));
            for (media, body) in content {
                Validator::check_keywords(&body["schema"], &format!("{at} {status} {media}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            if code >= 400 {
                assert_eq!(
                    content.get("application/json").map(|c| &c["schema"]),
                    Some(&error_schema),
                    "{at} {status}: errors are ErrorBody documents"
                );
            }
        }
        if method != "get" {
            assert!(
                responses.contains_key("415"),
                "{at}: a change without JSON is 415"
            );
        }
    }
}

/// Every `.route("PATH", METHOD(…))` in the admin code: (method, OpenAPI path).
fn registered_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (file, text) in SOURCES {
        let mut rest = text;
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + ".route(\"".len()..];
            let end = rest
                .find('"')
                .unwrap_or_else(|| panic!("{file}: unterminated route string"));
            let path = axum_to_openapi(&rest[..end]);
            let after = rest[end + 1..].trim_start();
            let call = after
                .strip_prefix(',')
                .unwrap_or_else(|| panic!("{file}: {path}: no handler after the path"))
                .trim_start();
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let method = name.rsplit("::").next().unwrap_or("").to_owned();
            assert!(
                METHODS.contains(&method.as_str()),
                "{file}: {path}: handler {name:?} is not a method router"
            );
            routes.insert((method, path));
        }
    }
    routes
}

/// axum's `{name}` and `{*name}` captures as OpenAPI's `{name}`.
fn axum_to_openapi(path: &str) -> String {
    path.replace("{*", "{")
}

#[test]
fn every_registered_route_is_documented_and_every_documented_one_registered() {
    // Every file with routes is read: a new module of routes needs its place in SOURCES.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known: BTreeSet<&str> = SOURCES.iter().map(|(f, _)| *f).collect();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                let relative = path
                    .strip_prefix(&src)
                    .expect("under src")
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    !text.contains(".route(\"") || known.contains(relative.as_str()),
                    "{relative} registers admin routes but is not in SOURCES"
                );
            }
        }
    }

    let registered = registered_routes();
    assert!(
        registered.len() >= 20,
        "only {} routes found: {registered:?}",
        registered.len()
    );
    let doc = document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:?}"
    );
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        unregistered.is_empty(),
        "documented but not registered: {unregistered:?}"
    );
}

/// Whether `answer` is the API's 404 for a path no route serves.
fn is_no_such_route(answer: &Answer) -> bool {
    answer.status == 404
        && serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| e.starts_with(NO_SUCH_ROUTE)))
            .unwrap_or(false)
}

/// A request to a unit's admin API.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'static str,
    target: &'a str,
    body: Option<&'a str>,
    /// Sends `Content-Type: application/json`.
    json: bool,
    /// Extra header lines.
    headers: &'a [&'a str],
}

impl<'a> Call<'a> {
    fn get(target: &'a str) -> Self {
        Self {
            method: "GET",
            target,
            body: None,
            json: false,
            headers: &[],
        }
    }

    fn send(method: &'static str, target: &'a str, body: Option<&'a str>) -> Self {
        Self {
            method,
            target,
            body,
            json: true,
            headers: &[],
        }
    }

    fn without_json(self) -> Self {
        Self {
            json: false,
            ..self
        }
    }

    fn with(self, headers: &'a [&'a str]) -> Self {
        Self { headers, ..self }
    }
}

/// One raw HTTP/1.1 exchange with the unit's `Host`.
async fn exchange(addr: SocketAddr, call: Call<'_>) -> Answer {
    let host = format!("Host: {addr}");
    let mut headers = vec![host.as_str()];
    if call.json {
        headers.push("Content-Type: application/json");
    }
    headers.extend_from_slice(call.headers);
    raw_exchange(
        addr,
        call.method,
        call.target,
        &headers,
        call.body.unwrap_or(""),
    )
    .await
}

/// The documented path template `path` (no query) falls under.
fn template_of<'d>(doc: &'d Value, path: &str) -> Option<&'d str> {
    let segments: Vec<&str> = path.split('/').collect();
    let matches = |template: &str| {
        let t: Vec<&str> = template.split('/').collect();
        t.len() == segments.len()
            && t.iter()
                .zip(&segments)
                .all(|(t, s)| *t == *s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty()))
    };
    let candidates: Vec<&str> = paths(doc)
        .keys()
        .map(String::as_str)
        .filter(|t| matches(t))
        .collect();
    // A literal path wins over a template.
    candidates
        .iter()
        .find(|t| **t == path)
        .or_else(|| candidates.first())
        .copied()
}

/// Checks `answer` against the document: the status is documented for the operation,
/// the media type for that status, and the body matches its schema (and documented
/// headers are present). The operation's `METHOD template`.
fn conforms(doc: &Value, call: Call<'_>, answer: &Answer) -> Result<String, String> {
    let what = format!("{} {} → {}", call.method, call.target, answer.status);
    let path = call.target.split('?').next().unwrap_or("");
    let template =
        template_of(doc, path).ok_or_else(|| format!("{what}: no documented path matches"))?;
    let method = call.method.to_ascii_lowercase();
    let op = doc["paths"][template]
        .get(&method)
        .ok_or_else(|| format!("{what}: {template} documents no {method}"))?;
    let response = op["responses"]
        .get(answer.status.to_string())
        .map(|r| deref(doc, r))
        .ok_or_else(|| {
            format!(
                "{what}: status not documented for {template}: {}",
                answer.body
            )
        })?;
    let media = answer
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .ok_or_else(|| format!("{what}: no Content-Type"))?;
    let content = response["content"]
        .get(&media)
        .ok_or_else(|| format!("{what}: media type {media} not documented"))?;
    let value = if media == "application/json" {
        serde_json::from_str(&answer.body)
            .map_err(|e| format!("{what}: not JSON ({e}): {}", answer.body))?
    } else {
        Value::String(answer.body.clone())
    };
    Validator::new(doc)
        .validate(&content["schema"], &value)
        .map_err(|m| format!("{what}: {m}\n{}", answer.body))?;
    for (header, _) in response["headers"].as_object().into_iter().flatten() {
        if answer.header(header).is_none() {
            return Err(format!("{what}: documented header {header} missing"));
        }
    }
    Ok(format!("{method} {template}"))
}

/// Calls the unit, expects `status`, checks the answer against the document and that it
/// is not the fallback's; the operation it exercised.
async fn expect(doc: &Value, unit: &RunningUnit, call: Call<'_>, status: u16) -> String {
    let answer = exchange(unit.admin_addr(), call).await;
    assert_eq!(
        answer.status, status,
        "{} {}: {}",
        call.method, call.target, answer.body
    );
    assert!(
        !is_no_such_route(&answer),
        "{} {} is documented but not served",
        call.method,
        call.target
    );
    conforms(doc, call, &answer).unwrap_or_else(|e| panic!("{e}"))
}

/// Every GET of the document with valid parameters (query names checked against the
/// operation's documented ones).
fn valid_gets(doc: &Value) -> Vec<String> {
    operations(doc)
        .into_iter()
        .filter(|(m, _, _)| m == "get")
        .map(|(_, path, op)| {
            let Some((_, query)) = VALID_QUERIES.iter().find(|(p, _)| *p == path) else {
                return path;
            };
            let documented: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for pair in query.split('&') {
                let name = pair.split('=').next().unwrap_or("");
                assert!(
                    documented.contains(&name),
                    "{path}: {name} is not a documented parameter"
                );
            }
            format!("{path}?{query}")
        })
        .collect()
}

/// A unit with every role that runs without root (the forwarder is configured without
/// interfaces, so it does not start): health cache, classifier, router, session store.
fn full_fixture() -> Fixture {
    let listener = free_tcp_port();
    let sessions = free_udp_port();
    let extra = format!(
        r#"
[sessions]
port = {sessions}

[[listeners]]
name = "www-http"
address = "127.0.0.1:{listener}"
protocol = "http"

[[services]]
name = "www"
vip = "127.0.0.1:{listener}"
protocol = "tcp"
mode = "request"
listener = "www-http"
pool = "web"

[[services.routes]]
path_prefix = "/static/"
pool = "web"
cache = {{ max_bytes = 1048576 }}
"#
    );
    Fixture::with_extra(
        r#""forwarder", "classifier", "health-cache", "router", "session-store""#,
        "5s",
        &extra,
    )
}

#[tokio::test]
async fn a_unit_answers_every_documented_operation_as_documented() {
    let doc = document();
    let fixture = full_fixture();
    let unit = fixture.start().await;
    let control = unit.control_addr().expect("health-cache role");
    let web1 = TestHost::start(101, control).await;
    let web2 = TestHost::start(102, control).await;
    web1.set(app(8081), healthy(30, 50)).await;
    web2.set(app(8082), healthy(60, 40)).await;
    wait_for_hosts(&unit, &[101, 102], 1).await;
    let client: std::net::IpAddr = CLIENT.parse().expect("address");
    let store = unit.sessions().expect("session-store role");
    store.record(&SessionId::ClientIp(client).key(), HostId(101), None);
    eventually(WAIT, "the recorded session", || async {
        let doc: Value = get_json(&unit, &format!("/v1/sessions?client_ip={CLIENT}")).await;
        (doc["found"] == true).then_some(())
    })
    .await;

    let mut served = BTreeSet::new();
    // Every documented GET, with valid parameters: 200 and a matching document.
    for target in valid_gets(&doc) {
        served.insert(expect(&doc, &unit, Call::get(&target), 200).await);
    }
    // The documents are not empty (their items' schemas were checked).
    let hosts: Value = get_json(&unit, "/v1/hosts").await;
    assert_eq!(hosts["hosts"].as_array().map(Vec::len), Some(2));
    let router: Value = get_json(&unit, "/v1/router").await;
    assert_eq!(router["caches"][0]["route"], "www#0", "{router}");
    assert!(
        router["pools"][0]["backends"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "{router}"
    );

    let vip = format!("/v1/allotments?vip={VIP}&scheme=percentages");
    let no_top = "/v1/flows?top=many".to_owned();
    let cases: Vec<(Call<'_>, u16)> = vec![
        // Other successful answers: the percentage scheme, a session nobody holds,
        // a reload of the same file, invalidations.
        (Call::get(&vip), 200),
        (Call::get("/v1/sessions?user=nobody"), 200),
        (Call::get("/v1/flows?top=0"), 200),
        (Call::send("POST", "/v1/reload", None), 200),
        (
            Call::send(
                "POST",
                "/v1/cache/invalidate",
                Some(r#"{"route": "www#0"}"#),
            ),
            200,
        ),
        (
            Call::send(
                "POST",
                "/v1/cache/invalidate",
                Some(r#"{"host": "www.example.com", "path_prefix": "/img/"}"#),
            ),
            200,
        ),
        // Bad queries and bodies: 400.
        (Call::get("/v1/allotments?vip=nonsense"), 400),
        (
            Call::get("/v1/allotments?vip=198.51.100.10:80&colour=blue"),
            400,
        ),
        (Call::get(&no_top), 400),
        (
            Call::get("/v1/sessions?client_ip=198.51.100.7&user=joe"),
            400,
        ),
        (Call::get("/v1/sessions?colour=blue"), 400),
        (
            Call::send(
                "POST",
                "/v1/cache/invalidate",
                Some(r#"{"route": "nope#0"}"#),
            ),
            400,
        ),
        (
            Call::send("POST", "/v1/cache/invalidate", Some("not json")),
            400,
        ),
        (
            Call::send(
                "POST",
                "/v1/hosts/web-1/undrain",
                Some(r#"{"capacity": 5}"#),
            ),
            400,
        ),
        (
            Call::send(
                "PUT",
                "/v1/hosts/web-1/capacity",
                Some(r#"{"capacity": 100}"#),
            ),
            400,
        ),
        (
            Call::send("PUT", "/v1/hosts/web-1/capacity", Some("{}")),
            400,
        ),
        // Unknown hosts and services: 404.
        (Call::send("POST", "/v1/hosts/nobody/drain", None), 404),
        (
            Call::send(
                "POST",
                "/v1/hosts/web-1/disable",
                Some(r#"{"service": "nope"}"#),
            ),
            404,
        ),
        // A host never heard from: 503; one whose agent does not answer acts: 504.
        (
            Call::send(
                "PUT",
                "/v1/hosts/web-3/capacity",
                Some(r#"{"capacity": 40}"#),
            ),
            503,
        ),
        (Call::send("POST", "/v1/hosts/103/drain", None), 503),
        (Call::send("POST", "/v1/hosts/web-1/drain", Some("{}")), 504),
        // Changes without the JSON content type: 415.
        (
            Call::send("POST", "/v1/hosts/web-1/drain", None).without_json(),
            415,
        ),
        (
            Call::send("POST", "/v1/hosts/web-1/undrain", None).without_json(),
            415,
        ),
        (
            Call::send("POST", "/v1/hosts/web-1/disable", None).without_json(),
            415,
        ),
        (
            Call::send(
                "PUT",
                "/v1/hosts/web-1/capacity",
                Some(r#"{"capacity": 4}"#),
            )
            .without_json(),
            415,
        ),
        (Call::send("POST", "/v1/reload", None).without_json(), 415),
        (
            Call::send("POST", "/v1/cache/invalidate", Some("{}")).without_json(),
            415,
        ),
        // Requests from web pages: 403.
        (
            Call::get("/v1/hosts").with(&["Origin: https://evil.example"]),
            403,
        ),
        (
            Call::get("/dashboard").with(&["Origin: https://evil.example"]),
            403,
        ),
    ];
    for (call, status) in cases {
        served.insert(expect(&doc, &unit, call, status).await);
    }
    let documented: BTreeSet<String> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    let missed: Vec<_> = documented.difference(&served).collect();
    assert!(
        missed.is_empty(),
        "documented operations never called: {missed:?}"
    );

    // The fallback is the API's JSON error too, and what the served checks tell apart.
    let answer = exchange(unit.admin_addr(), Call::get("/v1/nothing")).await;
    assert!(
        is_no_such_route(&answer),
        "{}: {}",
        answer.status,
        answer.body
    );
    let error: Value = serde_json::from_str(&answer.body).expect("JSON");
    Validator::new(&doc)
        .validate(&json!({"$ref": "#/components/schemas/ErrorBody"}), &error)
        .unwrap_or_else(|m| panic!("the fallback's body: {m}"));

    web1.kill();
    web2.kill();
    unit.shutdown().await;
}

#[tokio::test]
async fn acts_relayed_to_a_real_agent_answer_as_documented() {
    let doc = document();
    let cluster = crate::acts::Cluster::start("").await;
    let unit = &cluster.unit;
    for (call, status) in [
        (
            Call::send(
                "POST",
                "/v1/hosts/web-1/drain",
                Some(r#"{"service": "web"}"#),
            ),
            200,
        ),
        (Call::send("POST", "/v1/hosts/web-1/undrain", None), 200),
        (Call::send("POST", "/v1/hosts/2/disable", Some("{}")), 200),
        (
            Call::send(
                "PUT",
                "/v1/hosts/web-2/capacity",
                Some(r#"{"capacity": 30}"#),
            ),
            200,
        ),
        (Call::send("POST", "/v1/hosts/web-2/undrain", None), 200),
        (Call::send("POST", "/v1/hosts/web-3/drain", None), 503),
    ] {
        expect(&doc, unit, call, status).await;
    }
    cluster.stop().await;
    let refusing = crate::acts::Cluster::start("unit_acts = false").await;
    let call = Call::send("POST", "/v1/hosts/web-1/drain", None);
    expect(&doc, &refusing.unit, call, 409).await;
    refusing.stop().await;
}

#[tokio::test]
async fn a_unit_without_the_roles_answers_503_as_documented() {
    let doc = document();
    let fixture = Fixture::new(r#""forwarder", "classifier""#, "5s");
    let unit = fixture.start().await;
    let gets = valid_gets(&doc);
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        if op["responses"].get("503").is_none() {
            continue;
        }
        let target = match method.as_str() {
            "get" => gets
                .iter()
                .find(|t| t.split('?').next() == Some(path.as_str()))
                .cloned()
                .unwrap_or_else(|| path.clone()),
            _ => path.replace("{host}", "web-1"),
        };
        let body = match path.as_str() {
            "/v1/hosts/{host}/capacity" => Some(r#"{"capacity": 10}"#),
            "/v1/cache/invalidate" => Some(r#"{"route": "www#0"}"#),
            _ => None,
        };
        let call = match method.as_str() {
            "get" => Call::get(&target),
            "post" => Call::send("POST", &target, body),
            "put" => Call::send("PUT", &target, body),
            other => panic!("{other} {path}: no call for this method"),
        };
        expect(&doc, &unit, call, 503).await;
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} operations document 503");
    // The packet roles' document needs no role: `null` sections.
    expect(&doc, &unit, Call::get("/v1/flows"), 200).await;
    expect(&doc, &unit, Call::get("/metrics"), 200).await;
    unit.shutdown().await;
}

#[tokio::test]
async fn the_bearer_token_mode_answers_as_documented() {
    let doc = document();
    let fixture = Fixture::health();
    let token = AdminToken::new("openapi-tests-token-0123456789abcdef").expect("token");
    let unit = RunningUnit::start_with_admin_token(&fixture.config, options(), Some(token.clone()))
        .await
        .expect("unit starts");
    let bearer = format!("Authorization: Bearer {}", token.as_str());
    let with_token = [bearer.as_str()];
    let wrong = ["Authorization: Bearer not-the-token-0123456789"];
    expect(&doc, &unit, Call::get("/v1/hosts"), 401).await;
    expect(&doc, &unit, Call::get("/v1/hosts").with(&wrong), 401).await;
    expect(
        &doc,
        &unit,
        Call::send("POST", "/v1/hosts/web-1/drain", None),
        401,
    )
    .await;
    expect(&doc, &unit, Call::get("/v1/hosts").with(&with_token), 200).await;
    expect(&doc, &unit, Call::get("/metrics").with(&with_token), 200).await;
    // The dashboard's assets need no token, as their `security: [{}]` says.
    for asset in ["/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"] {
        let op = &doc["paths"][asset]["get"];
        assert_eq!(op["security"], json!([{}]), "{asset}");
        expect(&doc, &unit, Call::get(asset), 200).await;
    }
    unit.shutdown().await;
}
