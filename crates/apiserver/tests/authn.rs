//! HTTPS and authentication, through real kubectl (and curl for the raw 401 body): client
//! certificates, static tokens, anonymous requests.

mod common;

use common::{Backend, Cluster, TOKEN};
use serde_json::Value;

fn whoami(c: &Cluster, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.extend(["auth", "whoami", "-o", "json"]);
    serde_json::from_str(&c.ok(&args)).unwrap()
}

/// curl (kubectl prompts for a password when a user has no credentials at all) with these
/// headers; GET the namespace list, or POST `body` to `path`.
fn curl(
    c: &Cluster,
    headers: &[&str],
    post: Option<(&str, &str)>,
    cert_key: &[&std::path::Path],
) -> Value {
    let ca = c.dir.path().join("pki-0").join("apiserver.crt");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cacert"]).arg(&ca);
    if let [cert, key] = cert_key {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let path = match post {
        Some((path, body)) => {
            cmd.args(["-H", "Content-Type: application/json", "-d", body]);
            path
        }
        None => "/api/v1/namespaces",
    };
    let o = cmd
        .arg(format!("https://{}{path}", c.addr))
        .output()
        .expect("curl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const REVIEW: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;

#[test]
fn certificates_tokens_and_anonymous() {
    let Some(c) = Cluster::start() else { return };
    let me = whoami(&c, &[]);
    assert_eq!(me["kind"], "SelfSubjectReview");
    assert_eq!(me["status"]["userInfo"]["username"], "kybern-admin");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );

    let t = whoami(&c, &["--context", "token"]);
    assert_eq!(
        t["status"]["userInfo"],
        serde_json::json!({"username": "token-user", "uid": "1001",
            "groups": ["dev", "ops", "system:authenticated"]})
    );
    c.ok(&["--context", "token", "create", "cm", "by-token"]);

    // --anonymous-auth defaults to true, as upstream.
    let a = curl(&c, &[], Some((REVIEWS, REVIEW)), &[]);
    assert_eq!(
        a["status"]["userInfo"],
        serde_json::json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]})
    );

    // A token that matches nothing is refused even though anonymous requests are allowed. (kubectl
    // reports a 401 during discovery with this text against upstream too.)
    let e = c.fails(&["--context", "nobody", "--token", "wrong", "get", "ns"]);
    assert!(
        e.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{e}"
    );
    let s = curl(&c, &["Authorization: Bearer wrong"], None, &[]);
    assert_eq!(
        s,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let ok = curl(&c, &[&format!("Authorization: Bearer {TOKEN}")], None, &[]);
    assert_eq!(ok["kind"], "NamespaceList");

    // A client certificate from a CA the server does not trust is a 401, as upstream.
    let pki = c.dir.path();
    let e = c.fails(&[
        "--context",
        "nobody",
        "--client-certificate",
        pki.join("stranger.crt").to_str().unwrap(),
        "--client-key",
        pki.join("stranger.key").to_str().unwrap(),
        "get",
        "ns",
    ]);
    assert!(
        e.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{e}"
    );
    let s = curl(
        &c,
        &[],
        Some((REVIEWS, REVIEW)),
        &[&pki.join("stranger.crt"), &pki.join("stranger.key")],
    );
    assert_eq!(
        (s["code"].as_i64(), s["reason"].as_str()),
        (Some(401), Some("Unauthorized"))
    );
    let s = curl(
        &c,
        &[],
        Some((REVIEWS, REVIEW)),
        &[&pki.join("admin.crt"), &pki.join("admin.key")],
    );
    assert_eq!(s["status"]["userInfo"]["username"], "kybern-admin");
}

#[test]
fn anonymous_auth_off() {
    let Some(kubectl) = common::kubectl_binary() else {
        return;
    };
    let c = Cluster::start_custom(kubectl, 1, Backend::Embedded, &["--anonymous-auth=false"])
        .pop()
        .unwrap();
    let e = c.fails(&["--context", "nobody", "--token", "wrong", "get", "ns"]);
    assert!(
        e.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "{e}"
    );
    let s = curl(&c, &[], Some((REVIEWS, REVIEW)), &[]);
    assert_eq!(s["code"], 401);
    let s = curl(&c, &[], None, &[]);
    assert_eq!(
        (s["code"].as_i64(), s["reason"].as_str()),
        (Some(401), Some("Unauthorized"))
    );
    assert!(c.ok(&["get", "ns"]).contains("default"));
    assert!(c
        .ok(&["--context", "token", "get", "ns"])
        .contains("default"));
}
