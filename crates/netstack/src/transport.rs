//! How a guest NIC's Ethernet frames reach the stack. Only the framing differs per backend:
//!
//! - [`Transport::Stream`]: QEMU's `-netdev stream` on a Unix stream socket, each frame
//!   preceded by its length as a 4-byte big-endian integer;
//! - [`Transport::Datagram`]: one frame per datagram on a connected Unix datagram socket
//!   (QEMU's `-netdev dgram`, and vz's `VZFileHandleNetworkDeviceAttachment` on a socketpair).
//!
//! A reader and a writer task turn either into two bounded queues of frames, so the stack's
//! loop waits on a queue (cancel-safe) instead of on a half-read frame.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixDatagram, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The largest frame accepted: an Ethernet frame for a 1500-byte MTU plus a VLAN tag. A
/// longer one from the guest ends a stream transport (its framing can no longer be trusted)
/// and is dropped from a datagram transport.
pub const MAX_FRAME: usize = 1522;

/// Frames queued each way before the stack or the VMM is considered too slow (frames beyond
/// that are dropped, as a congested link would; TCP recovers).
pub const QUEUE_FRAMES: usize = 1024;

/// A connected frame transport.
#[derive(Debug)]
pub enum Transport {
    /// Length-prefixed frames on a stream.
    Stream(UnixStream),
    /// One frame per datagram.
    Datagram(UnixDatagram),
}

/// The stack's ends of a transport: frames from the guest, frames to the guest.
#[derive(Debug)]
pub(crate) struct Frames {
    pub(crate) rx: mpsc::Receiver<Vec<u8>>,
    pub(crate) tx: mpsc::Sender<Vec<u8>>,
}

impl Transport {
    /// Starts the reader and writer tasks; both end with `cancel` or when the peer closes
    /// (then `rx` yields `None`).
    pub(crate) fn spawn(self, cancel: CancellationToken) -> Frames {
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
        match self {
            Transport::Stream(stream) => {
                let (read, write) = stream.into_split();
                tokio::spawn(cancellable(cancel.clone(), read_stream(read, in_tx)));
                tokio::spawn(cancellable(cancel, write_stream(write, out_rx)));
            }
            Transport::Datagram(socket) => {
                let socket = std::sync::Arc::new(socket);
                tokio::spawn(cancellable(
                    cancel.clone(),
                    read_datagrams(socket.clone(), in_tx),
                ));
                tokio::spawn(cancellable(cancel, write_datagrams(socket, out_rx)));
            }
        }
        Frames {
            rx: in_rx,
            tx: out_tx,
        }
    }
}

async fn cancellable(cancel: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = task => {}
    }
}

async fn read_stream(read: tokio::net::unix::OwnedReadHalf, frames: mpsc::Sender<Vec<u8>>) {
    // QEMU writes many frames at once: one read takes them all instead of two per frame.
    let mut read = tokio::io::BufReader::with_capacity(256 * 1024, read);
    loop {
        let mut len = [0u8; 4];
        if read.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            tracing::warn!(len, "oversized frame from the guest; closing its network");
            return;
        }
        let mut frame = vec![0u8; len];
        if read.read_exact(&mut frame).await.is_err() {
            return;
        }
        if frames.send(frame).await.is_err() {
            return;
        }
    }
}

async fn write_stream(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(frame) = frames.recv().await {
        buf.clear();
        push_frame(&mut buf, &frame);
        // Coalesce what is already queued into one write.
        while buf.len() < 60 * 1024 {
            match frames.try_recv() {
                Ok(next) => push_frame(&mut buf, &next),
                Err(_) => break,
            }
        }
        if write.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn push_frame(buf: &mut Vec<u8>, frame: &[u8]) {
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
}

async fn read_datagrams(socket: std::sync::Arc<UnixDatagram>, frames: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(%error, "frame transport closed");
                return;
            }
        };
        if n > MAX_FRAME {
            continue;
        }
        if frames.send(buf[..n].to_vec()).await.is_err() {
            return;
        }
    }
}

async fn write_datagrams(
    socket: std::sync::Arc<UnixDatagram>,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(error) = socket.send(&frame).await {
            // The peer is gone (ECONNREFUSED) or its queue overflowed: drop, as a link would.
            tracing::trace!(%error, "frame not delivered");
            if error.kind() == std::io::ErrorKind::ConnectionRefused {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stream_frames_are_length_prefixed_both_ways() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let cancel = CancellationToken::new();
        let mut frames = Transport::Stream(ours).spawn(cancel.clone());
        theirs
            .write_all(&[0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 1, 9])
            .await
            .unwrap();
        assert_eq!(frames.rx.recv().await.unwrap(), vec![1, 2, 3]);
        assert_eq!(frames.rx.recv().await.unwrap(), vec![9]);
        frames.tx.send(vec![7, 7]).await.unwrap();
        let mut got = [0u8; 6];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0, 0, 0, 2, 7, 7]);
        // An oversized length ends the transport.
        theirs.write_all(&[0, 1, 0, 0]).await.unwrap();
        assert_eq!(frames.rx.recv().await, None);
        cancel.cancel();
    }

    #[tokio::test]
    async fn datagrams_carry_one_frame_each() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let cancel = CancellationToken::new();
        let mut frames = Transport::Datagram(ours).spawn(cancel.clone());
        theirs.send(&[1, 2, 3]).await.unwrap();
        theirs.send(&vec![0u8; MAX_FRAME + 1]).await.unwrap();
        theirs.send(&[4]).await.unwrap();
        assert_eq!(frames.rx.recv().await.unwrap(), vec![1, 2, 3]);
        assert_eq!(
            frames.rx.recv().await.unwrap(),
            vec![4],
            "the oversized one is dropped"
        );
        frames.tx.send(vec![5, 6]).await.unwrap();
        let mut buf = [0u8; 16];
        let n = theirs.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[5, 6]);
        cancel.cancel();
    }
}
