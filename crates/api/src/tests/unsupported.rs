//! The spec's operations Hypedeck does not serve (501), and that every route needs the token.

use super::*;

/// Every operation of upstream's spec (and Hypedeck's own routes): without the token nothing
/// but `/health` answers anything other than 401; with it, the operations Hypedeck does not
/// serve answer 501 `not_implemented` naming the operation, and the others never do.
#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let r = rig();
    let mut operations: Vec<(String, String)> = Vec::new();
    let mut path = String::new();
    for line in crate::OPENAPI_YAML.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "post", "put", "patch", "delete"].contains(&m)
            && !path.is_empty()
        {
            // Parameters become a plausible value.
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            operations.push((m.to_uppercase(), concrete));
        }
    }
    for extra in ["/hypervisors", "/instances/x/exec", "/system/checks"] {
        operations.push(("GET".into(), extra.into()));
    }
    operations.push(("POST".into(), "/system/samples/hello".into()));
    assert!(operations.len() > 40, "{operations:?}");
    for (method, uri) in &operations {
        let anonymous = r.call(method, uri, Some("{}"), None).await;
        if uri == "/health" {
            assert_eq!(anonymous.status, StatusCode::OK);
            continue;
        }
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} answered without the token"
        );
        let authed = r
            .call(method, uri, Some("{}"), Some(&format!("Bearer {TOKEN}")))
            .await;
        let template = unsupported_template(uri);
        if let Some(path) = template {
            assert_eq!(authed.status, StatusCode::NOT_IMPLEMENTED, "{method} {uri}");
            assert_eq!(authed.json["code"], "not_implemented");
            let message = authed.json["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("{method} {uri}: ")),
                "{message}"
            );
            assert!(
                crate::routes::unsupported::UNSUPPORTED
                    .iter()
                    .any(|(p, methods, _)| *p == path && methods.contains(&method.as_str())),
                "{method} {path} is listed with other methods"
            );
        } else {
            assert_ne!(authed.status, StatusCode::NOT_IMPLEMENTED, "{method} {uri}");
            assert_ne!(
                authed.json["message"], "no matching operation was found",
                "{method} {uri}"
            );
        }
    }
    // No stale entries: every unsupported operation is one of the spec's.
    for (path, methods, _) in crate::routes::unsupported::UNSUPPORTED {
        for method in *methods {
            assert!(
                operations
                    .iter()
                    .any(|(m, uri)| m == method && unsupported_template(uri) == Some(path)),
                "{method} {path} is not in the spec"
            );
        }
    }
    // A method the spec does not have on an unsupported path is 405, not 501.
    let wrong = r
        .call(
            "PATCH",
            "/builds",
            Some("{}"),
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// The `UNSUPPORTED` path template a concrete `x`-filled path belongs to.
fn unsupported_template(uri: &str) -> Option<&'static str> {
    crate::routes::unsupported::UNSUPPORTED
        .iter()
        .map(|(p, _, _)| *p)
        .find(|p| {
            let concrete = p
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            concrete == uri
        })
}
