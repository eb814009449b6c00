//! The HTTP surface on the one listening port: `/ws` (the WebSocket endpoint), `/healthz`,
//! `/readyz`, `/metrics` (Prometheus text format), appraisal reports (`/reports/{period}`) and the
//! web pages (`/`, `/worker`, `/board`, `/manifest.webmanifest`, `/sw.js`, `/web/…`).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use lianxin_actors::county::caller_of;
use lianxin_protocol::v1::ErrorCode;

use crate::auth;
use crate::session::{self, AppState, PreAuth};

/// Bytes of queued frames a WebSocket holds before it writes them out without waiting for the
/// session's flush.
const WRITE_BUFFER_BYTES: usize = 4096;

/// State of the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    /// What sessions share.
    pub app: AppState,
    /// Renders the metrics registry.
    pub metrics: Option<PrometheusHandle>,
}

/// The router of every HTTP route.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reports/{period}", get(report))
        .route("/", get(crate::web::resident))
        .route("/worker", get(crate::web::worker))
        .route("/board", get(crate::web::board))
        .route("/manifest.webmanifest", get(crate::web::manifest))
        .route("/sw.js", get(crate::web::service_worker))
        .route("/web/{name}", get(crate::web::asset))
        .route(
            "/media",
            axum::routing::post(crate::media::upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/admin/backup", axum::routing::post(crate::backup::route))
        .route("/media/{id}", get(crate::media::fetch))
        .route("/media/{id}/thumbnail", get(crate::media::fetch_thumbnail))
        .with_state(state)
}

/// `GET /ws`: upgrades to a WebSocket session (subprotocol `lianxin.v1`). An
/// `Authorization: Bearer <token>` header signs the connection in at once; a bad token is refused
/// with 401 before the upgrade.
async fn ws(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let app = state.app;
    if !crate::transport::origin_allowed(&headers, &app.config.allowed_origins) {
        tracing::info!(%peer, origin = ?headers.get(header::ORIGIN), "refused a foreign origin");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let mut pre = None;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let now = app.county.clock().now_ms();
        match auth::authenticate(app.county.store(), token, now) {
            Ok((account, token_hash, session)) => {
                let max = app.config.limits.max_connections_per_account;
                if max > 0
                    && app.county.hub().sessions_of(account.id)
                        >= usize::try_from(max).unwrap_or(usize::MAX)
                {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections for this account\n",
                    )
                        .into_response();
                }
                pre = Some(PreAuth {
                    account,
                    token_hash,
                    expires_at_ms: session.expires_at_ms,
                })
            }
            Err(_) => return (StatusCode::UNAUTHORIZED, "bad or expired token\n").into_response(),
        }
    }
    let limits = &app.config.limits;
    // Small buffers: memory per idle connection is what lets one node hold many of them. Frames
    // the session queues collect up to the write buffer size and leave with its flush, so that
    // a reply and the events ready with it take one write.
    upgrade
        .protocols([lianxin_protocol::SUBPROTOCOL])
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(limits.max_frame_bytes.saturating_mul(4).max(256 * 1024))
        .max_message_size(limits.max_frame_bytes.saturating_mul(2))
        .max_frame_size(limits.max_frame_bytes.saturating_mul(2))
        .on_upgrade(move |socket| session::run(socket, app, peer, pre))
}

/// The account an `Authorization: Bearer <token>` header signs in, or the 401 to answer.
pub(crate) fn bearer_account(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<lianxin_storage::AccountRecord, Box<Response>> {
    let county = &state.app.county;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let now = county.clock().now_ms();
    auth::authenticate(county.store(), token, now)
        .map(|(account, _, _)| account)
        .map_err(|_| {
            Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    "sign in: Authorization: Bearer <token>\n",
                )
                    .into_response(),
            )
        })
}

/// Query of `GET /reports/{period}`.
#[derive(Debug, serde::Deserialize)]
pub struct ReportQuery {
    /// The community (0 or absent: the township).
    #[serde(default)]
    community: u64,
    /// `csv` (default) or `json`.
    #[serde(default)]
    format: Option<String>,
    /// For CSV: `workers` (default) or `communities`.
    #[serde(default)]
    table: Option<String>,
}

/// `GET /reports/{period}?community=ID&format=csv|json&table=workers|communities`: a supervisor's
/// appraisal report (docs/appraisal.md), with the session token in the `Authorization` header.
async fn report(
    State(state): State<HttpState>,
    Path(period): Path<String>,
    Query(q): Query<ReportQuery>,
    headers: HeaderMap,
) -> Response {
    let county = &state.app.county;
    let account = match bearer_account(&state, &headers) {
        Ok(account) => account,
        Err(refusal) => return *refusal,
    };
    let who = caller_of(&account);
    let report = match county.appraisal_report(&who, &period, q.community) {
        Ok(r) => r,
        Err(e) => {
            let status = match e.code() {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (status, format!("{e}\n")).into_response();
        }
    };
    let name = format!("lianxin-{}-{}", report.period, q.community);
    match q.format.as_deref().unwrap_or("csv") {
        "json" => match serde_json::to_string(&report) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        "csv" => {
            let csv = match q.table.as_deref().unwrap_or("workers") {
                "communities" => lianxin_client::report::communities_csv(&report),
                _ => lianxin_client::report::workers_csv(&report),
            };
            match csv {
                Ok(body) => (
                    [
                        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                        (
                            header::CONTENT_DISPOSITION,
                            format!("attachment; filename=\"{name}.csv\""),
                        ),
                    ],
                    body,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
        other => (
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}: csv or json\n"),
        )
            .into_response(),
    }
}

/// `GET /healthz`: the process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: storage answers and the server is not shutting down.
async fn readyz(State(state): State<HttpState>) -> Response {
    if *state.app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let Some(e) = state.app.county.store().write_failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage: writes are failing: {e}\n"),
        )
            .into_response();
    }
    match state.app.county.store().schema_version() {
        Ok(_) => "ready\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}\n")).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format. `lianxin_pending_steps` is counted at each scrape (it
/// walks the deadline index, one key per open petition: cheap at a scrape's pace, too dear for
/// every supervision tick).
async fn metrics(State(state): State<HttpState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            let pending = state.app.county.store().pending_step_count();
            metrics::gauge!("lianxin_pending_steps").set(pending as f64);
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
