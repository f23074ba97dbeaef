//! The live web console (`http_listen`): a single page at `/` (HTML, script and style embedded
//! in the binary, nothing fetched from elsewhere), the read-only JSON API under `/api/` that
//! the page and operators' scripts share, and the Prometheus text at `/metrics` (rendered by
//! [`crate::metrics::render`], as the metrics endpoint does).
//!
//! It owns no manager state: each request asks the core over the command channel, as the
//! metrics endpoint does, through read-only commands ([`Command::Snapshot`],
//! [`Command::Console`]); `history` samples rates in a task of its own.
//!
//! Invariants: nothing here changes the manager (GET only); with `http_token` set, `/api/*`
//! and `/metrics` answer 401 without `Authorization: Bearer <token>`; every response carries a
//! Content-Security-Policy forbidding inline script and other origins, and `nosniff`; every
//! request is answered or dropped within [`REQUEST_TIMEOUT`], at most
//! [`REQUESTS_IN_FLIGHT_MAX`] at once, on at most `listener::CONNECTIONS_MAX` connections,
//! each closed after `listener::IDLE_TIMEOUT` of silence; every response is bounded (see
//! `view`). The page inserts data with `textContent` only, never as markup.

mod history;
mod listener;
mod network;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hopmq::ApiError;
use hopmq::protocol::Status;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::manager::{Command, ConsoleQuery};
use crate::store::Journal;
use history::Sampled;

/// A request not answered within this is dropped with 503 (as a metrics scrape is).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests served at once; more are answered 503 at once. The page makes at most four per
/// poll, so this is many browsers and scripts.
const REQUESTS_IN_FLIGHT_MAX: usize = 64;

/// No inline script or style, nothing from another origin, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const DOM_JS: &str = include_str!("assets/dom.js");
const MAP_JS: &str = include_str!("assets/map.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the console's handlers share; read-only.
pub(crate) struct Console {
    /// The core's command channel.
    pub(crate) commands: mpsc::Sender<Command>,
    /// For the store's counters.
    pub(crate) journal: Journal,
    /// The bearer token `/api/*` and `/metrics` need, if any.
    pub(crate) token: Option<String>,
    /// The settings in force, secrets left out.
    pub(crate) settings: serde_json::Value,
}

/// What the handlers hold: the console and the sampler's latest output.
struct Shared {
    console: Console,
    sampled: watch::Receiver<Arc<Sampled>>,
    /// [`REQUESTS_IN_FLIGHT_MAX`] permits.
    in_flight: tokio::sync::Semaphore,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum ConsoleError {
    /// The core did not answer (it is stopping).
    #[error("the manager is stopping")]
    CoreGone,
    /// The core refused the read (an invalid queue name).
    #[error("{0}")]
    Refused(#[source] ApiError),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::CoreGone => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused(ApiError::UnknownQueue { .. }) => StatusCode::NOT_FOUND,
            Self::Refused(_) => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({ "error": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}

/// Serves the console on `listener` until `shutdown` fires, with a sampler task for rates.
pub(crate) async fn serve(
    listener: TcpListener,
    console: Console,
    mut shutdown: watch::Receiver<bool>,
) {
    let (published, sampled) = watch::channel(Arc::new(Sampled::default()));
    tokio::spawn(history::sample(
        console.commands.clone(),
        published,
        shutdown.clone(),
    ));
    let router = router(Arc::new(Shared {
        console,
        sampled,
        in_flight: tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX),
    }));
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let listener =
        listener::Limited::new(listener, listener::CONNECTIONS_MAX, listener::IDLE_TIMEOUT);
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(%error, "the web console stopped serving");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/app.js", get(|| asset(JAVASCRIPT, APP_JS)))
        .route("/dom.js", get(|| asset(JAVASCRIPT, DOM_JS)))
        .route("/map.js", get(|| asset(JAVASCRIPT, MAP_JS)))
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/queues", get(queues))
        .route("/api/queues/{name}/messages", get(messages))
        .route("/api/links", get(links))
        .route("/api/routes", get(routes))
        .route("/api/network", get(network))
        .route("/api/history", get(history))
        .route("/api/manager", get(manager))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Authorization, the time limit and the security headers, for every request.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let protected = path.starts_with("/api/") || path == "/metrics";
    let permit = shared.in_flight.try_acquire();
    let mut response = if permit.is_err() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once\n",
        )
            .into_response()
    } else if protected && !authorized(&shared.console.token, request.headers()) {
        let mut response = (StatusCode::UNAUTHORIZED, "a bearer token is needed\n").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hopmq\""),
        );
        response
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                debug!("a console request timed out");
                (StatusCode::SERVICE_UNAVAILABLE, "timed out\n").into_response()
            }
        }
    };
    drop(permit);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `headers` carry the token (always, when there is none), compared in constant time.
fn authorized(token: &Option<String>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

async fn snapshot(commands: &mpsc::Sender<Command>) -> Result<Status, ConsoleError> {
    let (reply, status) = oneshot::channel();
    commands
        .send(Command::Snapshot { reply })
        .await
        .map_err(|_| ConsoleError::CoreGone)?;
    status.await.map_err(|_| ConsoleError::CoreGone)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let status = snapshot(&shared.console.commands).await?;
    let text = crate::metrics::render(&status, &shared.console.journal.stats());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn status(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    Ok(json(&snapshot(&shared.console.commands).await?))
}

async fn queues(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let (status, counters) = history::read_core(&shared.console.commands)
        .await
        .ok_or(ConsoleError::CoreGone)?;
    let rates = shared.sampled.borrow().rates.clone();
    Ok(json(&view::queues(&status, &counters, &rates)))
}

/// `?limit=N` of a browse.
#[derive(Debug, serde::Deserialize)]
struct BrowseQuery {
    limit: Option<u32>,
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Path(queue): Path<String>,
    Query(query): Query<BrowseQuery>,
) -> Result<Response, ConsoleError> {
    let limit = view::browse_limit(query.limit);
    let (reply, browsed) = oneshot::channel();
    let browse = ConsoleQuery::Browse {
        queue: queue.clone(),
        max: limit,
        reply,
    };
    shared
        .console
        .commands
        .send(Command::Console(browse))
        .await
        .map_err(|_| ConsoleError::CoreGone)?;
    let deliveries = browsed
        .await
        .map_err(|_| ConsoleError::CoreGone)?
        .map_err(ConsoleError::Refused)?;
    Ok(json(&view::messages(&queue, limit, &deliveries)))
}

async fn links(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let status = snapshot(&shared.console.commands).await?;
    let body = serde_json::json!({ "manager": status.manager, "links": status.links });
    Ok(json(&body))
}

async fn routes(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let status = snapshot(&shared.console.commands).await?;
    let body = serde_json::json!({ "manager": status.manager, "routes": status.routes });
    Ok(json(&body))
}

async fn network(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let status = snapshot(&shared.console.commands).await?;
    let (reply, loads) = oneshot::channel();
    shared
        .console
        .commands
        .send(Command::Console(ConsoleQuery::Loads { reply }))
        .await
        .map_err(|_| ConsoleError::CoreGone)?;
    let loads = loads.await.map_err(|_| ConsoleError::CoreGone)?;
    let link_rates = shared.sampled.borrow().link_rates.clone();
    Ok(json(&view::network(&status, &link_rates, &loads)))
}

async fn history(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.sampled.borrow().history_json.clone();
    let body = if body.is_empty() {
        "{\"queues\":{}}".to_owned()
    } else {
        body
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn manager(State(shared): State<Arc<Shared>>) -> Result<Response, ConsoleError> {
    let console = &shared.console;
    let status = snapshot(&console.commands).await?;
    let page = view::manager_page(
        &status,
        &console.journal.stats(),
        console.settings.clone(),
        console.token.is_some(),
    );
    Ok(json(&page))
}
