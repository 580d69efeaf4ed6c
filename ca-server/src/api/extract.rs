//! Request extractors whose rejections are problem documents, and the
//! parameters list routes share.

use super::ApiError;
use super::route::Arg;
use crate::authority::Authority;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::sync::Arc;

/// The state every handler takes.
pub(super) type St = State<Arc<Authority>>;

/// A route's one path parameter (`{id}`, `{serial}`).
pub(super) type Id = Path<String>;

/// The request body, as JSON; its rejections are problem documents.
pub(super) struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Body(v))
    }
}

impl<T> Arg for Body<T> {}

/// The query string; its rejections are problem documents.
pub(super) struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

impl<T> Arg for Query<T> {}

/// A `400 invalid_query` with this detail.
pub(super) fn bad_query(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail)
}

/// A list's `?limit=`: 100 when absent, 1 to 1000.
pub(super) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad_query("limit: 1 to 1000"));
    }
    Ok(limit)
}
