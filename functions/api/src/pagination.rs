//! `?limit=` and `?cursor=` as the contract defines them, and the list envelope.

use lambda_http::http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;

use crm_shared::cursor::{CursorCodec, Position};

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i32 = 50;
pub const MAX_LIMIT: i32 = 100;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i32,
    pub start: Option<Position>,
}

pub fn parse_limit(raw: Option<&str>) -> Result<i32, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    match raw.parse::<i32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            format!("limit must be an integer from 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Reads `limit` and `cursor`; the cursor must have been issued to this tenant for `listing`.
pub fn page_request(
    req: &Request,
    codec: &CursorCodec,
    tenant_id: &str,
    listing: &str,
) -> Result<PageRequest, ApiError> {
    let query = req.query_string_parameters();
    let limit = parse_limit(query.first("limit"))?;
    let start = match query.first("cursor") {
        None | Some("") => None,
        Some(c) => Some(
            codec
                .decode(tenant_id, listing, c)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", e.to_string()))?,
        ),
    };
    Ok(PageRequest { limit, start })
}

/// `{"items": [...], "next_cursor": "..." | null}`
/// A page as the API answers it: the items and the sealed cursor of the next page (`null` on
/// the last).
#[derive(Serialize)]
pub struct Envelope<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The page of `items` continued at `next` (sealed for this tenant and listing).
pub fn envelope<T: Serialize>(
    items: Vec<T>,
    next: Option<Position>,
    codec: &CursorCodec,
    tenant_id: &str,
    listing: &str,
) -> Envelope<T> {
    let next_cursor = next.map(|p| codec.encode(tenant_id, listing, &p));
    Envelope { items, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None), Ok(50));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "abc", "", "1.5"] {
            assert_eq!(parse_limit(Some(bad)).unwrap_err().code, "invalid_limit", "{bad}");
        }
    }
}
