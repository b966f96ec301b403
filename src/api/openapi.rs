//! `GET /v2/openapi.json`: an OpenAPI 3.1 description of the routes this build
//! serves (a test requests every documented operation and checks it is routed,
//! and `tests/api_records` checks the `CallRecord` schema against a served record).
//!
//! The document is the file `src/api/openapi.json`, shipped in the binary as text
//! and parsed once; only `info.version` is filled in (the daemon's version). It is
//! kept as a file, one line per path, and not built with `serde_json::json!`: the
//! macro turned 46 KB of JSON into 130 KB of machine code, 1 % of the binary
//! (issue 18's size budget).

use std::sync::LazyLock;

use axum::Json;
use serde_json::Value;

/// The document's text (`src/api/openapi.json`).
const TEXT: &str = include_str!("openapi.json");

/// The document, parsed on first use.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut doc: Value = serde_json::from_str(TEXT).unwrap_or_else(|e| {
        tracing::error!("src/api/openapi.json is not valid JSON: {e}");
        Value::Null
    });
    if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
        info.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    }
    doc
});

/// The document (`null` only if the shipped file were not JSON, which the unit
/// test below rules out).
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// `GET /v2/openapi.json`.
pub async fn serve() -> Json<&'static Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_document_is_openapi_3_1_with_this_version() {
        let d = document();
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
        let paths = d["paths"].as_object().unwrap();
        assert!(paths.len() > 40, "{}", paths.len());
        // Every operation says what it answers; every error answer uses the shared schema.
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
                for (code, r) in responses {
                    assert!(r["description"].is_string(), "{method} {path} {code}");
                    if code.starts_with('4') && r.get("content").is_some() {
                        let schema = &r["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, "#/components/schemas/Errors", "{method} {path} {code}");
                    }
                }
            }
        }
        assert!(d["components"]["schemas"]["CallRecord"]["properties"]["quality_samples"].is_object());
    }
}
