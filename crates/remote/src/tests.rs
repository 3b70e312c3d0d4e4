#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use hypedeck_secrets::{MemoryStore, SecretStore, Sensitive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const KEY: &str = "hdk_remote_key_must_not_leak";

fn store(dir: &Path) -> (RemoteStore, Arc<MemoryStore>) {
    let secrets = Arc::new(MemoryStore::new());
    (
        RemoteStore::new(dir.join("config/remotes.json"), secrets.clone()),
        secrets,
    )
}

#[test]
fn remotes_keep_their_keys_in_the_keychain_only() {
    let dir = tempfile::tempdir().unwrap();
    let (remotes, secrets) = store(dir.path());
    assert_eq!(remotes.list().unwrap(), vec![]);
    let added = remotes
        .add(
            " staging ",
            "https://hypeman.example.com:8443/",
            &Sensitive::new(KEY.into()),
        )
        .unwrap();
    assert_eq!(added.name, "staging");
    assert_eq!(added.url, "https://hypeman.example.com:8443");
    assert_eq!(remotes.list().unwrap(), vec![added.clone()]);
    let (got, key) = remotes.get(&added.id).unwrap();
    assert_eq!((got, key.expose().as_str()), (added.clone(), KEY));

    // The list on disk has names and URLs, never the key.
    let on_disk = std::fs::read_to_string(remotes.file()).unwrap();
    assert!(on_disk.contains("hypeman.example.com"), "{on_disk}");
    assert!(!on_disk.contains(KEY), "{on_disk}");
    assert!(!format!("{remotes:?} {secrets:?}").contains(KEY));

    remotes.remove(&added.id).unwrap();
    assert_eq!(remotes.list().unwrap(), vec![]);
    assert!(
        secrets
            .get(&format!("remote/{}", added.id))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        remotes.remove(&added.id),
        Err(RemoteError::NotFound(_))
    ));
}

#[test]
fn bad_names_urls_and_keys_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (remotes, _) = store(dir.path());
    let key = Sensitive::new(KEY.to_string());
    remotes.add("prod", "http://10.0.0.5:4973", &key).unwrap();
    let cases = [
        ("", "http://a", KEY, "give the remote a name"),
        (
            "x",
            "ftp://a",
            KEY,
            "\"ftp://a\": only http and https URLs are supported",
        ),
        (
            "x",
            "not a url",
            KEY,
            "\"not a url\" is not a URL: relative URL without a base",
        ),
        (
            "x",
            "https://user:pw@a/",
            KEY,
            "\"https://user:pw@a\": give the API's base URL only (no credentials, query or fragment)",
        ),
        (
            "x",
            "https://a?x=1",
            KEY,
            "\"https://a?x=1\": give the API's base URL only (no credentials, query or fragment)",
        ),
        ("x", "https://a", "  ", "the API key is empty"),
        (
            "prod",
            "https://b",
            KEY,
            "a remote named \"prod\" exists already",
        ),
    ];
    for (name, url, key, want) in cases {
        let e = remotes
            .add(name, url, &Sensitive::new(key.to_string()))
            .unwrap_err();
        assert_eq!(e.to_string(), want, "{name} {url}");
        assert!(!e.to_string().contains(KEY));
    }
    assert_eq!(remotes.list().unwrap().len(), 1);
}

#[test]
fn a_damaged_list_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (remotes, _) = store(dir.path());
    std::fs::create_dir_all(remotes.file().parent().unwrap()).unwrap();
    std::fs::write(remotes.file(), "{not json").unwrap();
    let e = remotes.list().unwrap_err().to_string();
    assert!(
        e.starts_with("remotes list: ") && e.contains("is damaged"),
        "{e}"
    );
}

/// A minimal Hypeman: `GET /instances` answers 200 `[]` for `Bearer good`, upstream's 401
/// otherwise; `hang` accepts and never answers.
async fn server(hang: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if hang {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let (status, body) = if request.contains("authorization: bearer good\r\n") {
                    ("200 OK", "[]".to_string())
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"code":"Unauthorized","message":"invalid token"}"#.to_string(),
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn health_measures_a_working_server_and_names_a_refused_key() {
    let url = server(false).await;
    let ok = check(&url, &Sensitive::new("good".into())).await;
    assert_eq!(ok.problem, None);
    assert!(ok.latency_ms.is_some_and(|ms| ms >= 0.0));

    let refused = check(&url, &Sensitive::new(KEY.into())).await;
    let p = refused.problem.unwrap();
    assert_eq!(p.code, "unauthorized");
    let host = url.trim_start_matches("http://");
    assert_eq!(
        p.message,
        format!("{host} refused the API key (401: invalid token)")
    );
    assert!(!p.message.contains(KEY));
}

#[tokio::test]
async fn health_names_unreachable_hosts_tls_failures_and_timeouts() {
    // Nothing listens on a port that was just freed.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let down = check(
        &format!("http://127.0.0.1:{port}"),
        &Sensitive::new(KEY.into()),
    )
    .await;
    let p = down.problem.clone().unwrap();
    assert_eq!(p.code, "unreachable", "{}", p.message);
    assert!(
        p.message
            .starts_with(&format!("cannot reach 127.0.0.1:{port}: ")),
        "{}",
        p.message
    );

    // https to a plain-HTTP server: the handshake fails.
    let plain = server(false).await;
    let tls = check(
        &plain.replace("http://", "https://"),
        &Sensitive::new(KEY.into()),
    )
    .await;
    let p = tls.problem.clone().unwrap();
    assert_eq!(p.code, "tls", "{}", p.message);
    assert!(
        p.message.starts_with("TLS with 127.0.0.1:"),
        "{}",
        p.message
    );

    let hung = server(true).await;
    let slow = check(&hung, &Sensitive::new(KEY.into())).await;
    let p = slow.problem.clone().unwrap();
    assert_eq!(p.code, "timeout", "{}", p.message);
    assert!(
        p.message.ends_with("did not answer within 5 s"),
        "{}",
        p.message
    );
    for message in [down, tls, slow].iter().filter_map(|h| h.problem.as_ref()) {
        assert!(!message.message.contains(KEY));
    }
}
