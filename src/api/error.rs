//! API errors in Telnyx's shape: `{"errors":[{"code","title","detail","source":
//! {"pointer"}}]}` (Telnyx API v2 error objects), with the HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::call::control::ActionError;

/// One API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Telnyx error code (digits, as a string).
    pub code: &'static str,
    /// Short title.
    pub title: &'static str,
    /// What was wrong.
    pub detail: String,
    /// JSON pointer of the bad field in the request body (`/digits`), rendered as
    /// `source.pointer`; or the name of a bad query parameter (`filter[from]`: no
    /// leading `/`), rendered as JSON:API's `source.parameter`.
    pub pointer: Option<String>,
}

impl ApiError {
    /// 400 naming the bad field (`pointer`, e.g. `"/to"`).
    pub fn bad_field(pointer: &str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "10015",
            title: "Invalid parameter",
            detail: detail.into(),
            pointer: Some(pointer.to_string()),
        }
    }

    /// 400 for a body that is not a JSON object.
    pub fn bad_body(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "10015",
            title: "Invalid request body",
            detail: detail.into(),
            pointer: Some(String::new()),
        }
    }

    /// 400 naming the bad query parameter (`source.parameter`, e.g. `"page[size]"`).
    pub fn bad_parameter(name: &str, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "10015",
            title: "Invalid parameter",
            detail: detail.into(),
            pointer: Some(name.trim_start_matches('/').to_string()),
        }
    }

    /// 500: the box failed (store, file system); `detail` says what, for the log.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "10007",
            title: "Unexpected error",
            detail: detail.into(),
            pointer: None,
        }
    }

    /// 401: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "10009",
            title: "Authentication failed",
            detail: "Send the API token as \"Authorization: Bearer <token>\" ([api] token in the config).".into(),
            pointer: None,
        }
    }

    /// 404: no such resource.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "10005",
            title: "Resource not found",
            detail: format!("No {what} with id {id:?}."),
            pointer: None,
        }
    }

    /// 422 or another status from a call's answer to a command.
    pub fn from_action(e: ActionError) -> Self {
        Self {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            code: e.code,
            title: e.title,
            detail: e.detail,
            pointer: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "title": self.title, "detail": self.detail});
        match self.pointer {
            Some(p) if p.is_empty() || p.starts_with('/') => err["source"] = json!({"pointer": p}),
            Some(name) => err["source"] = json!({"parameter": name}),
            None => {}
        }
        (self.status, axum::Json(json!({"errors": [err]}))).into_response()
    }
}
