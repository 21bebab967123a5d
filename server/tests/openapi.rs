#![allow(clippy::disallowed_methods, reason = "test code, not the server")]
//! The committed spec (openapi/openapi.json) must be what the code generates.
//! Regenerate with `ZOO_UPDATE_OPENAPI=1 cargo test -p zoo-server --test openapi`.

use std::path::Path;

#[test]
fn committed_spec_matches_the_code() {
    let generated = zoo_server::api::openapi().to_pretty_json().expect("spec serializes") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    if std::env::var_os("ZOO_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write spec");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `ZOO_UPDATE_OPENAPI=1 cargo test -p zoo-server --test openapi` and commit it"
    );
}

#[test]
fn spec_documents_every_route_and_error_code() {
    let spec = serde_json::to_value(zoo_server::api::openapi()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for route in [
        "/healthz",
        "/readyz",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions",
        "/v1/models/{name}/versions/{version}",
        "/v1/models/{name}/versions/{version}/artifact",
        "/v1/models/{name}/predict",
        "/v1/models/{name}/versions/{version}/predict",
        "/v1/keys",
        "/v1/keys/{id}",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    let codes = spec["components"]["schemas"]["ErrorCode"].to_string();
    for code in zoo_api::ErrorCode::ALL {
        assert!(codes.contains(&format!("\"{code}\"")), "error code {code} is not in the spec");
    }
}
