//! The answers handlers share.

use super::ApiError;
use crate::authority::AuthorityError;
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What a handler returns.
pub(super) type Res<T> = Result<T, ApiError>;

/// A handler's answer when it shapes the response itself.
pub(super) type Reply = Res<Response>;

/// A 201 with this body.
pub(super) fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

/// A 201 whose body carries a secret shown only once: never cached.
pub(super) fn created_secret<T: Serialize>(body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

/// A 204 once `done` succeeded.
pub(super) async fn no_content(
    done: impl Future<Output = Result<(), AuthorityError>>,
) -> Res<StatusCode> {
    done.await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A store read's result, its failure as the domain reports it.
pub(super) fn stored<T>(r: Result<T, StoreError>) -> Res<T> {
    Ok(r.map_err(AuthorityError::from)?)
}
