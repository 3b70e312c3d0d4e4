//! The vhost-user-net backend driven by the `vhost` crate's frontend, in the order Cloud
//! Hypervisor uses: protocol features first, then `SET_FEATURES` acking
//! `VHOST_USER_F_PROTOCOL_FEATURES`, then the config space (the MAC) and ring enables; then the
//! frontend goes away and a new one is served on the same socket.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vhost::VhostBackend;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};

const MAC: [u8; 6] = [2, 0, 0, 0, 9, 0x15];
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// One frontend session; the features the backend offered.
fn negotiate(socket: &Path) -> u64 {
    let mut frontend = Frontend::connect(socket, 2).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    let protocol = frontend.get_protocol_features().unwrap();
    assert!(
        protocol.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ),
        "{protocol:?}"
    );
    frontend.set_protocol_features(protocol).unwrap();
    assert_eq!(frontend.get_queue_num().unwrap(), 2);
    frontend.set_features(features).unwrap();
    let (_, config) = frontend
        .get_config(0, 6, VhostUserConfigFlags::empty(), &[0u8; 6])
        .unwrap();
    assert_eq!(config, MAC.to_vec(), "the config space starts with the MAC");
    for queue in 0..2 {
        frontend.set_vring_enable(queue, true).unwrap();
    }
    features
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_frontend_negotiates_reads_the_mac_and_a_new_one_is_served_after_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("net.sock");
    let (_transport, backend) = hypedeck_netstack::vhost_user::serve(&socket, MAC).unwrap();

    let features = negotiate(&socket);
    let wanted = VIRTIO_F_VERSION_1
        | VIRTIO_NET_F_MAC
        | VIRTIO_RING_F_EVENT_IDX
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    assert_eq!(features, wanted, "{features:#x}: no offloads, nothing else");
    wait_until("the first frontend to be gone", || {
        backend.stats().connections == 1
    });

    // A VMM restart: the next frontend on the same socket gets the device again.
    negotiate(&socket);
    wait_until("the second frontend", || backend.stats().connections == 2);
    assert!(backend.is_running());

    backend.stop();
    assert!(!socket.exists(), "stop removes the socket");
    assert!(Frontend::connect(&socket, 2).is_err());
}
