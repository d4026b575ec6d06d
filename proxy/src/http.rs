//! The HTTP port: `/metrics`, `/healthz`, `/readyz`, `/status`, and
//! `/verify` (compares every replica's data key by key; see
//! [`crate::verify`]).

use crate::state::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mu::core::RoleKind;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves HTTP until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    if req.uri().path() == "/verify" && req.method() == Method::GET {
                        return Ok::<_, Infallible>(verify(shared).await);
                    }
                    Ok::<_, Infallible>(route(&shared, &req))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is served\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            // The status gauges as of this scrape.
            if let Some(st) = shared.status() {
                crate::refresh_gauges(shared, &st);
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                shared.metrics.render(),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match shared.readiness() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/status" => reply(
            StatusCode::OK,
            "application/json",
            status_json(shared).to_string(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz, /readyz, /status or /verify\n".into(),
        ),
    }
}

/// Runs a verification: 200 with the report when every replica holds the
/// same data, 409 with the report when not, 503 when it could not run.
async fn verify(shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let outcome = tokio::task::spawn_blocking(move || crate::verify::run(&shared))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match outcome {
        Ok(report) => {
            let json = report.to_json();
            let status = if json["consistent"] == true {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            reply(status, "application/json", json.to_string())
        }
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("verification failed: {e}\n"),
        ),
    }
}

/// The role's name.
pub fn role_name(r: RoleKind) -> &'static str {
    match r {
        RoleKind::Leader => "leader",
        RoleKind::Follower => "follower",
        RoleKind::Candidate => "candidate",
    }
}

/// `/status` as JSON.
pub fn status_json(shared: &Shared) -> serde_json::Value {
    let o = &shared.opts;
    let st = shared.status();
    let ready = shared.readiness();
    let node = |id: mu::NodeId| u64::from(id.0) + 1;
    serde_json::json!({
        "id": o.id,
        "nodes": o.mu.nodes,
        "backend_kind": format!("{:?}", o.backend_kind).to_lowercase(),
        "fabric": o.mu.resolved_fabric().name(),
        "role": st.as_ref().map(|s| role_name(s.role)),
        "leader": st.as_ref().and_then(|s| s.leader).map(node),
        "ready": ready.is_ok(),
        "not_ready_reason": ready.err(),
        "commit_index": st.as_ref().map(|s| s.commit.saturating_sub(1)),
        "replica_applied_index": st.as_ref().map(|s| s.applied),
        "backend_applied_index": shared.backend.applied(),
        "recovering": st.as_ref().map(|s| s.recovering),
        "needs_state_transfer": st.as_ref().map(|s| s.needs_state_transfer),
        "log_holder": st.as_ref().and_then(|s| s.log_holder).map(node),
        "permission_switches": st.as_ref().map(|s| s.permission_switches),
        "leader_terms": st.as_ref().map(|s| s.leader_terms),
        "fabric_errors": st.as_ref().map(|s| s.fabric_errors),
        "writes_waiting": shared.pending.len(),
        "shutting_down": shared.stopping.load(Ordering::Acquire),
        "backend": {
            "address": o.backend.to_string(),
            "state": shared.backend.state().name(),
            "detail": shared.backend.detail(),
        },
        "peers": st.as_ref().map(|s| s.peers.iter().map(|p| serde_json::json!({
            "id": node(p.id),
            "alive": p.alive,
            "applied_index": p.applied,
        })).collect::<Vec<_>>()),
    })
}
