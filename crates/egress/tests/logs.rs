//! Captures every log record (TRACE, including `log` records from dependencies) while a
//! proxy injects, rotates, rejects and fails, and checks no secret value shows up.
//! A separate test binary, because the subscriber is process-global.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secret_values_never_reach_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    let secrets = ["sk-test-AAAA1111", "sk-test-BBBB2222", "sk-test-CCCC3333"];
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![rule(
                "Authorization",
                &format!("Bearer {}", secrets[0]),
                Some(&[API]),
            )],
        )
        .unwrap();
    let client = world.client(addr);
    let (_, body) = get_text(&client, &world.https_url(API, "/"), Some("Bearer mock-K")).await;
    assert_eq!(
        echoed(&body, "authorization"),
        [format!("Bearer {}", secrets[0])]
    );

    world
        .proxy
        .set_rules(
            "vm-1",
            vec![rule(
                "Authorization",
                &format!("Bearer {}", secrets[1]),
                None,
            )],
        )
        .unwrap();
    let (_, body) = get_text(&client, &world.https_url(API, "/"), None).await;
    assert_eq!(
        echoed(&body, "authorization"),
        [format!("Bearer {}", secrets[1])]
    );
    get_text(&client, &format!("https://{DOWN}/"), None).await;
    get_text(&client, &world.http_url(PLAIN, "/"), None).await;
    let rejected = world.proxy.set_rules(
        "vm-1",
        vec![rule("X-Key", &format!("{}\r\n", secrets[2]), None)],
    );
    tracing::error!(error = %rejected.unwrap_err(), "rule rejected");
    world.proxy.detach("vm-1").await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("egress rules replaced"),
        "logging was captured"
    );
    assert!(
        logs.contains("https request"),
        "request logging was captured"
    );
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into logs:\n{logs}"
        );
    }
}
