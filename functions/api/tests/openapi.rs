//! `docs/openapi.yaml` describes exactly the routes the router serves: every `/v1` operation in
//! the document is in [`api_fn::routes::ROUTES`] and every route there is in the document.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Every `(METHOD, path)` operation of the document under `/v1`, with its operation object.
fn v1_operations(doc: &Value) -> Vec<((String, String), &Value)> {
    let paths = doc
        .get("paths")
        .and_then(Value::as_mapping)
        .expect("the document has a `paths` object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path keys are strings");
        if path != "/v1" && !path.starts_with("/v1/") {
            continue;
        }
        let item = item
            .as_mapping()
            .unwrap_or_else(|| panic!("path item {path} is an object"));
        for (key, operation) in item {
            let key = key.as_str().expect("path item keys are strings");
            if HTTP_METHODS.contains(&key) {
                out.push(((key.to_ascii_uppercase(), path.to_owned()), operation));
            }
        }
    }
    out
}

fn show(set: &BTreeSet<(String, String)>) -> String {
    if set.is_empty() {
        return "    (none)".to_owned();
    }
    set.iter()
        .map(|(m, p)| format!("    {m} {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_document_describes_exactly_the_routes_the_router_serves() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = v1_operations(&doc).into_iter().map(|(k, _)| k).collect();
    let served: BTreeSet<(String, String)> = api_fn::routes::ROUTES
        .iter()
        .map(|route| (route.method.to_ascii_uppercase(), route.path.to_owned()))
        .chain(
            api_fn::routes::PUBLIC_ROUTES
                .iter()
                .map(|(m, p)| ((*m).to_owned(), (*p).to_owned())),
        )
        .collect();
    assert_eq!(
        served.len(),
        api_fn::routes::ROUTES.len() + api_fn::routes::PUBLIC_ROUTES.len(),
        "a route is listed twice"
    );
    let undocumented: BTreeSet<_> = served.difference(&documented).cloned().collect();
    let unserved: BTreeSet<_> = documented.difference(&served).cloned().collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "docs/openapi.yaml and api_fn::routes::ROUTES disagree\n  served but not documented:\n{}\n  \
         documented but not served:\n{}",
        show(&undocumented),
        show(&unserved),
    );
}

#[test]
fn the_document_is_openapi_3_1() {
    let doc = document();
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version:?}");
}

/// What every `/v1` operation must say: the role it needs, the auth failures and the quota.
#[test]
fn every_v1_operation_documents_its_role_and_auth_failures() {
    let doc = document();
    let mut problems = Vec::new();
    for ((method, path), op) in v1_operations(&doc) {
        if api_fn::routes::PUBLIC_ROUTES.contains(&(method.as_str(), path.as_str())) {
            // No key: it must say so, and how a bad credential is answered.
            let responses = op.get("responses").and_then(Value::as_mapping);
            if op
                .get("security")
                .and_then(Value::as_sequence)
                .is_none_or(|s| !s.is_empty())
            {
                problems.push(format!("{method} {path}: a public route must say `security: []`"));
            }
            if !responses.is_some_and(|r| r.contains_key("401")) {
                problems.push(format!("{method} {path}: no 401 response"));
            }
            continue;
        }
        let description = op.get("description").and_then(Value::as_str).unwrap_or_default();
        if !description.contains("Role **") {
            problems.push(format!(
                "{method} {path}: description does not name the role (`Role **...**`)"
            ));
        }
        let responses = op.get("responses").and_then(Value::as_mapping);
        let has = |status: &str| responses.is_some_and(|r| r.contains_key(status));
        for status in ["401", "403", "429"] {
            if !has(status) {
                problems.push(format!("{method} {path}: no {status} response"));
            }
        }
        if path.contains('{') && !has("404") {
            problems.push(format!("{method} {path}: has a path parameter but no 404 response"));
        }
        if op.get("security").is_some() {
            problems.push(format!("{method} {path}: overrides the document's bearer security"));
        }
    }
    assert!(problems.is_empty(), "docs/openapi.yaml:\n  {}", problems.join("\n  "));
}
