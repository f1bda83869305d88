//! `/_emulator/…`: the admin API for fault injection and CAS lifetimes.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::Shared;
use crate::error::ApiError;
use crate::faults::FaultSpec;

pub async fn list_faults(State(state): State<Shared>) -> Response {
    Json(state.faults.list()).into_response()
}

/// Adds one rule (a JSON object) or several (a JSON array); answers their ids.
pub async fn add_fault(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(FaultSpec),
        Many(Vec<FaultSpec>),
    }
    let specs = match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::One(s)) => vec![s],
        Ok(OneOrMany::Many(v)) => v,
        Err(e) => return ApiError::bad_request(format!("invalid fault spec: {e}")).into_response(),
    };
    let mut ids = Vec::new();
    for spec in specs {
        match state.faults.add(spec) {
            Ok(id) => ids.push(id),
            Err(e) => return e.into_response(),
        }
    }
    Json(serde_json::json!({ "ids": ids })).into_response()
}

pub async fn clear_faults(State(state): State<Shared>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

pub async fn remove_fault(State(state): State<Shared>, Path(id): Path<u64>) -> Response {
    if state.faults.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found(format!("no fault rule {id}")).into_response()
    }
}

#[derive(Deserialize)]
pub struct CasTtl {
    token_secs: Option<u64>,
    fetch_url_secs: Option<u64>,
}

/// Shortens (or restores) the lifetime of CAS tokens and fetch URLs handed out from now on.
pub async fn set_cas_ttl(State(state): State<Shared>, Json(ttl): Json<CasTtl>) -> StatusCode {
    if let Some(s) = ttl.token_secs {
        state.cas.set_token_ttl(Duration::from_secs(s));
    }
    if let Some(s) = ttl.fetch_url_secs {
        state.cas.set_fetch_url_ttl(Duration::from_secs(s));
    }
    StatusCode::NO_CONTENT
}

/// Requests and body bytes per route class (`GET`), or reset them (`DELETE`).
pub async fn traffic(State(state): State<Shared>) -> Response {
    let t: std::collections::BTreeMap<String, crate::faults::Traffic> = state
        .faults
        .traffic()
        .into_iter()
        .map(|(k, v)| (serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(), v))
        .collect();
    Json(t).into_response()
}

pub async fn reset_traffic(State(state): State<Shared>) -> StatusCode {
    state.faults.reset_traffic();
    StatusCode::NO_CONTENT
}
