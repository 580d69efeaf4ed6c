//! Every route with every kind of caller: the refusals must be exactly those
//! the route table says, and the OpenAPI document must describe that table.

use crate::both_backends;
use crate::common::{Clients, Db, Harness, call, delete, get, id, post};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_ca::api::{Access, ROUTES};
use tessera_core::api::Role;
use tessera_core::client::Client;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    Cert(Role),
    Token(Role),
    Workload,
    Node,
}

fn admitted(access: Access, caller: Caller) -> bool {
    match (access, caller) {
        (Access::Public, _) => true,
        (_, Caller::Anonymous) => false,
        (Access::Roles(roles), Caller::Cert(r) | Caller::Token(r)) => roles.contains(&r),
        (Access::Roles(_), Caller::Workload | Caller::Node) => false,
        (Access::Workload | Access::Renew, Caller::Workload) => true,
        (Access::Renew | Access::Node, Caller::Node) => true,
        (Access::Workload | Access::Renew | Access::Node, _) => false,
        (Access::Authenticated, _) => true,
    }
}

async fn every_route_every_role(db: Db) {
    let h = Harness::start(db).await;
    let mut callers: Vec<(Caller, Client)> = vec![(Caller::Anonymous, h.anonymous())];
    let admin = h.operator(Role::Admin).await;
    for role in Role::ALL {
        callers.push((Caller::Cert(role), h.operator(role).await));
        let (s, t) = post(
            &admin,
            "/v1/credentials",
            json!({"name": format!("t-{}", role.as_str()), "role": role}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        callers.push((
            Caller::Token(role),
            h.with_token(t["token"].as_str().unwrap()),
        ));
    }
    h.entry("spiffe://example.org/w").await;
    let (cert, key, _) = h.workload("spiffe://example.org/w").await;
    callers.push((Caller::Workload, h.with_cert(&cert, &key)));
    let (cert, key, _) = h.node("roles-node").await;
    callers.push((Caller::Node, h.with_cert(&cert, &key)));

    let mut checked = 0;
    for route in ROUTES {
        let mut path = route
            .path
            .replace("{serial}", "0badc0de")
            .replace("{id}", "00000000000000000000000000000000")
            .replace("{trust_domain}", "other.org");
        if route.path == "/v1/events" {
            // A stream that ends once caught up, so the call returns.
            path += "?follow=false";
        }
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let body = matches!(route.method, "POST" | "PUT").then(|| json!({}));
        for (caller, client) in &callers {
            let (status, v) = call(client, method.clone(), &path, body.clone()).await;
            let code = v.get("code").and_then(Value::as_str).unwrap_or("");
            let refused = code == "unauthenticated" || code == "forbidden";
            let want = admitted(route.access, *caller);
            assert_eq!(
                !refused, want,
                "{} {} as {caller:?}: got {status} {v}",
                route.method, route.path
            );
            if refused {
                let expect = if *caller == Caller::Anonymous {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(
                    status, expect,
                    "{} {} as {caller:?}",
                    route.method, route.path
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * callers.len());

    // A disabled token and a bogus one are refused everywhere but public routes.
    let (_, t) = post(
        &admin,
        "/v1/credentials",
        json!({"name": "gone", "role": "admin"}),
    )
    .await;
    let gone = h.with_token(t["token"].as_str().unwrap());
    let (s, _) = get(&gone, "/v1/ca").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = delete(&admin, &format!("/v1/credentials/{}", id(&t))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = get(&gone, "/v1/ca").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let forged = format!("{}x", t["token"].as_str().unwrap());
    let (s, _) = get(&h.with_token(&forged), "/v1/ca").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

both_backends!(every_route_every_role);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_router_and_file() {
    let h = Harness::start(Db::Sqlite).await;
    let served = h.fetch("/v1/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap();
    assert_eq!(
        served.body.as_ref(),
        &file[..],
        "served document differs from docs/openapi.json"
    );
    let doc: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            // The per-source and per-node rate limits answer 429 there.
            if ["public", "node"].contains(&op["x-tessera-access"].as_str().unwrap_or("")) {
                assert_eq!(
                    op["responses"]["429"]["$ref"], "#/components/responses/RateLimited",
                    "{method} {path}: the rate-limited 429 is not documented"
                );
            }
            documented.push((
                method.to_uppercase(),
                path.clone(),
                op["x-tessera-access"].clone(),
            ));
        }
    }
    let mut table: Vec<(String, String, Value)> = ROUTES
        .iter()
        .map(|r| {
            let access = match r.access {
                Access::Public => json!("public"),
                Access::Workload => json!("workload"),
                Access::Renew => json!("renew"),
                Access::Node => json!("node"),
                Access::Authenticated => json!("authenticated"),
                Access::Roles(roles) => json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
            };
            (r.method.to_owned(), r.path.to_owned(), access)
        })
        .collect();
    documented.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    table.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        documented, table,
        "docs/openapi.json and the route table disagree"
    );
}

/// Issue 11, item 9: `operator-cert --name N` for an existing name with
/// another role is refused (naming the role it has) and changes nothing; the
/// same role gets a fresh certificate.
async fn operator_name_keeps_its_role(db: Db) {
    let h = Harness::start(db).await;
    h.auth
        .issue_operator_cert("ci", Role::Auditor)
        .await
        .unwrap();
    let (certs, audit) = (h.count("certificates").await, h.count("audit_log").await);
    let e = h
        .auth
        .issue_operator_cert("ci", Role::Admin)
        .await
        .expect_err("another role for an existing name");
    assert!(e.to_string().contains("exists with role auditor"), "{e}");
    assert_eq!(
        (h.count("certificates").await, h.count("audit_log").await),
        (certs, audit),
        "a refusal records nothing"
    );
    // The certificate it would have printed authenticates nothing new: the
    // same role still works and stays auditor.
    let (key, cert) = h
        .auth
        .issue_operator_cert("ci", Role::Auditor)
        .await
        .unwrap();
    let ci = h.with_cert(&cert, &key);
    let (s, v) = post(
        &ci,
        "/v1/entries",
        json!({"spiffe_id": "spiffe://example.org/w", "selectors": ["a:b"]}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}
both_backends!(operator_name_keeps_its_role);
