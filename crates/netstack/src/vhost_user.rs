//! A vhost-user-net backend (Cloud Hypervisor's NIC, or QEMU's `-netdev vhost-user`) that
//! bridges the guest's virtio-net queues to a [`Transport::Datagram`], so the stack itself is
//! the same whichever VMM carries the frames.
//!
//! The VMM is the vhost-user *frontend*: it connects to the Unix socket [`serve`] listens on,
//! shares the guest's memory (it must be shareable: `--memory shared=on` for Cloud Hypervisor,
//! a `memory-backend-memfd,share=on` for QEMU) and hands over the virtqueues. A dedicated OS
//! thread accepts one frontend at a time and, when it goes away (a VMM restart), accepts the
//! next one on the same socket; the stack's end of the transport stays the same throughout.
//!
//! QEMU 7.2's virtio-net sends `SET_VRING_ENABLE` before `SET_FEATURES`, which the spec (and
//! rust-vmm's backend) refuse: the connection is closed. Its test
//! (in `hv-qemu/tests/qemu_boot.rs`) goes through a shim that holds that message back.
//!
//! # The device
//!
//! virtio-net with one queue pair (RX = queue 0, device → guest; TX = queue 1, guest → device),
//! features `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC`, `VIRTIO_RING_F_EVENT_IDX` and
//! `VHOST_USER_F_PROTOCOL_FEATURES`; protocol features `CONFIG` (the MAC is read from the
//! config space), `MQ` (the frontend asks how many queues there are) and `REPLY_ACK`. No
//! offloads are offered, so every frame is a plain Ethernet frame behind the 12-byte
//! `virtio_net_hdr_v1`.
//!
//! - TX: every available chain is read (header skipped) and sent as one datagram. A full
//!   socket leaves the chain in the queue; the socket is watched edge-triggered for `EPOLLOUT`
//!   and the queue is walked again when the stack has read.
//! - RX: one datagram per chain, behind a zeroed header with `num_buffers = 1`. Without a guest
//!   buffer the frame stays in the socket (backpressure on the stack) and the RX queue's next
//!   kick resumes.
//!
//! Everything the guest controls (descriptor addresses and lengths, ring indexes) goes through
//! `virtio-queue`'s checked accessors: a chain that does not fit guest memory is handed back
//! empty, never a panic.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock, VringState, VringT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::Transport;

/// Length of `virtio_net_hdr_v1`, the header in front of every frame once `VIRTIO_F_VERSION_1`
/// is negotiated (with or without mergeable RX buffers).
pub const VNET_HDR_LEN: usize = 12;

/// The largest buffer (header + frame) either way: the 64 KiB a virtio-net device without
/// offloads ever needs, as other VMMs size it. Longer chains from the guest are dropped, and so
/// are longer frames from the stack (which never makes them).
pub const MAX_BUFFER: usize = 65562;

/// The largest frame carried, without the header.
pub const MAX_FRAME: usize = MAX_BUFFER - VNET_HDR_LEN;

/// The RX queue (device → guest).
const RX_QUEUE: u16 = 0;
/// The TX queue (guest → device).
const TX_QUEUE: u16 = 1;
const NUM_QUEUES: usize = 2;
/// The largest ring a frontend may set up (QEMU and Cloud Hypervisor default to 256).
const MAX_QUEUE_SIZE: usize = 1024;
/// The epoll id of the stack's socket in the vring worker: ids up to `NUM_QUEUES` are the
/// queues' and the worker's own.
const SOCKET_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// The header written in front of each received frame: no checksum or GSO work for the guest,
/// and the frame fits in this one chain (`num_buffers = 1`, little-endian).
const RX_HEADER: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;
type MemoryGuard = GuestMemoryLoadGuard<GuestMemoryMmap>;

/// Frame and connection counts of one backend, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VhostUserStats {
    /// Frontends accepted so far (a VMM restart makes a new one).
    pub connections: u64,
    /// Frames from the guest handed to the stack.
    pub tx_frames: u64,
    /// Frames from the guest dropped: malformed or oversized chains, or the stack was gone.
    pub tx_dropped: u64,
    /// Frames from the stack written into guest buffers.
    pub rx_frames: u64,
    /// Frames from the stack dropped because they did not fit the guest's buffer.
    pub rx_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    tx_frames: AtomicU64,
    tx_dropped: AtomicU64,
    rx_frames: AtomicU64,
    rx_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the handle shares with the serving thread.
struct Control {
    stop: AtomicBool,
    /// Wakes the serving thread while it waits for a frontend.
    wake: EventFd,
    /// The current frontend connection, so `stop` can end it.
    connection: Mutex<Option<ShutdownHandle>>,
    counters: Counters,
}

/// A running vhost-user-net backend: one thread that serves frontends on a Unix socket one after
/// the other. Dropping it (or [`VhostUserNet::stop`]) ends the current connection and the
/// thread, and removes the socket file.
pub struct VhostUserNet {
    path: PathBuf,
    /// `(dev, ino)` of the socket file bound, so only our own file is removed.
    identity: (u64, u64),
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VhostUserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserNet")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Listens for a vhost-user-net frontend at `socket` (a stale socket file there is removed
/// first) and serves a virtio-net device with MAC `mac`, whose frames are exchanged with the
/// returned [`Transport::Datagram`] (give it to [`crate::Network::start`]).
///
/// Must be called inside a Tokio runtime: the transport's socket is registered with the
/// runtime's reactor (outside one this returns an error instead of panicking). The device
/// itself runs on a dedicated OS thread, not on the runtime.
pub fn serve(socket: &Path, mac: [u8; 6]) -> io::Result<(Transport, VhostUserNet)> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "vhost-user-net: serve must be called inside a Tokio runtime",
        ));
    }
    // A datagram pair keeps frame boundaries without framing of our own, and is what
    // `Transport::Datagram` reads. Between the two ends of a pair the kernel bounds the queue
    // by the send buffer only (not `max_dgram_qlen`), and a full one is EAGAIN on our side.
    let (ours, theirs) = UnixDatagram::pair()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(theirs)?);

    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(socket)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", socket.display()),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(socket)?;
    let meta = std::fs::metadata(socket)?;
    let identity = (meta.dev(), meta.ino());

    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        wake: EventFd::new(EFD_NONBLOCK)?,
        connection: Mutex::new(None),
        counters: Counters::default(),
    });
    let thread_control = control.clone();
    let mut handle = VhostUserNet {
        path: socket.to_path_buf(),
        identity,
        control,
        thread: None,
    };
    // On a spawn error `handle` is dropped, which removes the socket file again.
    let thread = std::thread::Builder::new()
        .name("vhost-user-net".into())
        .spawn(move || run(listener, Arc::new(ours), mac, thread_control))?;
    handle.thread = Some(thread);
    Ok((transport, handle))
}

impl VhostUserNet {
    /// The socket the frontend connects to.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Counts so far.
    pub fn stats(&self) -> VhostUserStats {
        let c = &self.control.counters;
        VhostUserStats {
            connections: c.connections.load(Ordering::Relaxed),
            tx_frames: c.tx_frames.load(Ordering::Relaxed),
            tx_dropped: c.tx_dropped.load(Ordering::Relaxed),
            rx_frames: c.rx_frames.load(Ordering::Relaxed),
            rx_dropped: c.rx_dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether the serving thread still runs (it ends only when stopped or on an error it
    /// cannot recover from, which it logs).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Ends the current connection and the serving thread, waits for them (a few
    /// milliseconds: nothing they do blocks) and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.control.stop.store(true, Ordering::SeqCst);
        let _ = self.control.wake.write(1);
        if let Some(connection) = lock(&self.control.connection).as_ref() {
            connection.shutdown();
        }
        // The thread may be inside a blocking accept (a frontend that gave up between the
        // listener becoming readable and the accept): one connection of our own ends it. The
        // thread sees the stop flag before serving it.
        if self.is_ours() {
            let _ = std::os::unix::net::UnixStream::connect(&self.path);
        }
        if thread.join().is_err() {
            tracing::error!("vhost-user-net thread panicked");
        }
    }

    fn is_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity)
    }
}

impl Drop for VhostUserNet {
    fn drop(&mut self) {
        self.shutdown();
        // Only our own file: another backend may have been started on the same path since.
        if self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Epoll ids of the serving thread.
const WAIT_LISTENER: u64 = 0;
const WAIT_STOP: u64 = 1;

/// The serving thread: a frontend at a time until stopped.
fn run(listener: UnixListener, socket: Arc<UnixDatagram>, mac: [u8; 6], control: Arc<Control>) {
    let waiter = match frontend_waiter(&listener, &control) {
        Ok(epoll) => epoll,
        Err(error) => {
            tracing::error!(%error, "vhost-user-net: cannot wait for frontends");
            return;
        }
    };
    // Not unlinked by the listener itself: the handle removes the file (if still ours).
    let mut listener = Listener::from(listener);
    let mut events = [EpollEvent::default(); 2];
    loop {
        match waiter.wait(-1, &mut events) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "vhost-user-net: waiting for a frontend failed");
                return;
            }
        }
        if control.stop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = serve_frontend(&mut listener, &socket, mac, &control) {
            tracing::warn!(%error, "vhost-user-net: frontend connection failed");
            // A persistent error (e.g. out of file descriptors) must not spin the thread.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn frontend_waiter(listener: &UnixListener, control: &Control) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        listener.as_raw_fd(),
        EpollEvent::new(EventSet::IN, WAIT_LISTENER),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        control.wake.as_raw_fd(),
        EpollEvent::new(EventSet::IN, WAIT_STOP),
    )?;
    Ok(epoll)
}

/// Accepts one frontend and serves it until it disconnects or the handle stops. Each frontend
/// gets a fresh daemon (vrings, memory map, vring worker): nothing of a previous VMM's rings
/// may leak into the next one.
fn serve_frontend(
    listener: &mut Listener,
    socket: &Arc<UnixDatagram>,
    mac: [u8; 6],
    control: &Arc<Control>,
) -> Result<(), String> {
    let memory: Memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    // Created here rather than in `exit_event` so a failure is an error now instead of a vring
    // worker that could never be told to exit (and a handle that would wait for it forever).
    let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)
        .map_err(|e| format!("exit event: {e}"))?;
    let device = Arc::new(NetDevice {
        socket: socket.clone(),
        mac,
        memory: memory.clone(),
        exit: Mutex::new(Some(exit)),
        control: control.clone(),
        buffer: Mutex::new(vec![0; MAX_BUFFER]),
        tx_blocked: AtomicBool::new(false),
    });
    let mut daemon =
        VhostUserDaemon::new("vhost-user-net".into(), device, memory).map_err(|e| e.to_string())?;
    for worker in daemon.get_epoll_handlers() {
        // Edge-triggered: a readable socket with no guest buffer must not wake the worker in a
        // loop; the RX queue's kick resumes reading. `OUT` resumes a TX blocked on a full socket.
        worker
            .register_listener(
                socket.as_raw_fd(),
                EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
                u64::from(SOCKET_EVENT),
            )
            .map_err(|e| format!("watch the stack's socket: {e}"))?;
    }
    daemon.start(listener).map_err(|e| e.to_string())?;
    bump(&control.counters.connections);
    tracing::debug!("vhost-user-net: frontend connected");
    *lock(&control.connection) = daemon.shutdown_handle();
    // `stop` may have run before the handle above was published.
    if control.stop.load(Ordering::SeqCst) {
        daemon.request_shutdown();
    }
    let result = daemon.wait();
    *lock(&control.connection) = None;
    match result {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => {
            tracing::debug!("vhost-user-net: frontend disconnected");
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
    // Dropping the daemon signals its vring worker to exit (see `exit_event`) and joins it.
}

/// The virtio-net device of one frontend connection.
struct NetDevice {
    /// The backend's end of the stack's datagram pair (non-blocking).
    socket: Arc<UnixDatagram>,
    mac: [u8; 6],
    memory: Memory,
    exit: Mutex<Option<(EventConsumer, EventNotifier)>>,
    control: Arc<Control>,
    /// One frame in flight (only the vring worker uses it).
    buffer: Mutex<Vec<u8>>,
    /// A TX frame met a full socket: the next `EPOLLOUT` edge walks the TX queue again. (Every
    /// received datagram also reports the socket writable; without a blocked TX that is noise.)
    tx_blocked: AtomicBool,
}

impl VhostUserBackend for NetDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The queues apply it themselves (virtio-queue's notification helpers).
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_bytes(self.mac, offset, size)
    }

    fn update_memory(&self, _memory: Memory) -> io::Result<()> {
        // `self.memory` is the same atomic map the daemon updates.
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        lock(&self.exit).take()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        let (Some(rx), Some(tx)) = (
            vrings.get(usize::from(RX_QUEUE)),
            vrings.get(usize::from(TX_QUEUE)),
        ) else {
            return Ok(());
        };
        match device_event {
            RX_QUEUE => self.receive(rx),
            TX_QUEUE => self.transmit(tx),
            SOCKET_EVENT => {
                if evset.contains(EventSet::IN) {
                    self.receive(rx);
                }
                if evset.contains(EventSet::OUT) && self.tx_blocked.load(Ordering::Relaxed) {
                    self.transmit(tx);
                }
            }
            other => tracing::debug!(event = other, "vhost-user-net: unexpected event"),
        }
        // Guest errors are handled per chain; an error here would end the vring worker.
        Ok(())
    }
}

/// `virtio_net_config` from `offset`, `size` bytes long as the protocol requires: the MAC, then
/// zeros (`status` is not offered, `max_virtqueue_pairs` would be 1 but is only read with MQ
/// on the virtio side, which is not offered). Empty (an error for the frontend) past the
/// config space.
fn config_bytes(mac: [u8; 6], offset: u32, size: u32) -> Vec<u8> {
    /// The virtio config space is at most 256 bytes.
    const CONFIG_SPACE: usize = 256;
    let (offset, size) = (offset as usize, size as usize);
    if offset.saturating_add(size) > CONFIG_SPACE {
        return Vec::new();
    }
    let mut config = [0u8; CONFIG_SPACE];
    config[..6].copy_from_slice(&mac);
    config[offset..offset + size].to_vec()
}

/// Why a chain was not used for a frame.
enum ChainError {
    /// It does not hold the frame (or, for TX, is longer than [`MAX_BUFFER`]).
    TooSmall,
    /// Its descriptors point outside guest memory or have the wrong direction.
    Invalid,
}

impl NetDevice {
    fn queue_live(state: &VringState<Memory>) -> bool {
        state.get_queue().ready() && state.is_enabled()
    }

    /// The next available chain, or `None` when the guest has none. Notifications stay enabled
    /// while the queue is walked, so a guest that adds a chain concurrently kicks again.
    fn next_chain(
        state: &mut VringState<Memory>,
        memory: &MemoryGuard,
    ) -> Result<Option<DescriptorChain<MemoryGuard>>, virtio_queue::Error> {
        let queue = state.get_queue_mut();
        if let Some(chain) = queue.iter(memory.clone())?.next() {
            return Ok(Some(chain));
        }
        // Empty: ask the guest to kick when it adds one (with EVENT_IDX this moves
        // `avail_event`), then look once more for one added meanwhile.
        if queue.enable_notification(&**memory)? {
            return Ok(queue.iter(memory.clone())?.next());
        }
        Ok(None)
    }

    /// Guest → stack: every available TX chain, until the queue is empty or the socket full.
    fn transmit(&self, vring: &VringRwLock) {
        let memory = self.memory.memory();
        let mut state = vring.get_mut();
        if !Self::queue_live(&state) {
            return;
        }
        let mut buffer = lock(&self.buffer);
        let counters = &self.control.counters;
        let mut used = false;
        self.tx_blocked.store(false, Ordering::Relaxed);
        loop {
            let chain = match Self::next_chain(&mut state, &memory) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "vhost-user-net: TX queue unusable");
                    break;
                }
            };
            let head = chain.head_index();
            match read_frame(&memory, chain, &mut buffer) {
                Ok(len) => match self.socket.send(&buffer[..len]) {
                    Ok(_) => bump(&counters.tx_frames),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        // The stack has not read yet: keep the chain for the next EPOLLOUT
                        // edge on the socket.
                        state.get_queue_mut().go_to_previous_position();
                        self.tx_blocked.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        // The stack is gone (ECONNREFUSED once its end is closed): the link is
                        // down and the frame is lost, as on an unplugged cable.
                        tracing::trace!(%error, "vhost-user-net: frame from the guest not delivered");
                        bump(&counters.tx_dropped);
                    }
                },
                Err(ChainError::TooSmall) => {
                    // Oversized (or empty) frame: the guest never sends one without offloads.
                    tracing::debug!("vhost-user-net: oversized TX chain dropped");
                    bump(&counters.tx_dropped);
                }
                Err(ChainError::Invalid) => {
                    tracing::debug!("vhost-user-net: invalid TX chain dropped");
                    bump(&counters.tx_dropped);
                }
            }
            // TX chains are only read: the used length is 0 whatever became of the frame.
            if let Err(error) = state.add_used(head, 0) {
                tracing::error!(%error, "vhost-user-net: TX used ring unusable");
                break;
            }
            used = true;
        }
        if used {
            Self::signal(&mut state, "TX");
        }
    }

    /// Stack → guest: a frame per available RX chain, while both last.
    fn receive(&self, vring: &VringRwLock) {
        let memory = self.memory.memory();
        let mut state = vring.get_mut();
        if !Self::queue_live(&state) {
            return;
        }
        let mut buffer = lock(&self.buffer);
        let counters = &self.control.counters;
        let mut used = false;
        loop {
            // A chain first: without one the frame stays in the socket (backpressure).
            let chain = match Self::next_chain(&mut state, &memory) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "vhost-user-net: RX queue unusable");
                    break;
                }
            };
            let len = match self.socket.recv(&mut buffer[VNET_HDR_LEN..]) {
                Ok(len) => len,
                Err(error) => {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        tracing::warn!(%error, "vhost-user-net: reading the stack's frames failed");
                    }
                    state.get_queue_mut().go_to_previous_position();
                    break;
                }
            };
            buffer[..VNET_HDR_LEN].copy_from_slice(&RX_HEADER);
            let head = chain.head_index();
            let written = match write_frame(&memory, chain, &buffer[..VNET_HDR_LEN + len]) {
                Ok(written) => {
                    bump(&counters.rx_frames);
                    written
                }
                Err(ChainError::TooSmall) => {
                    // The chain stays for the next frame; this one is lost, as on a link
                    // whose MTU it exceeds.
                    tracing::debug!(
                        len,
                        "vhost-user-net: frame larger than the RX buffer dropped"
                    );
                    bump(&counters.rx_dropped);
                    state.get_queue_mut().go_to_previous_position();
                    continue;
                }
                Err(ChainError::Invalid) => {
                    tracing::debug!("vhost-user-net: invalid RX chain returned empty");
                    bump(&counters.rx_dropped);
                    0
                }
            };
            if let Err(error) = state.add_used(head, written) {
                tracing::error!(%error, "vhost-user-net: RX used ring unusable");
                break;
            }
            used = true;
        }
        if used {
            Self::signal(&mut state, "RX");
        }
    }

    fn signal(state: &mut VringState<Memory>, queue: &str) {
        match state.needs_notification() {
            Ok(false) => {}
            Ok(true) => {
                if let Err(error) = state.signal_used_queue() {
                    tracing::warn!(%error, queue, "vhost-user-net: signalling the guest failed");
                }
            }
            Err(error) => tracing::error!(%error, queue, "vhost-user-net: used ring unusable"),
        }
    }
}

/// Copies a TX chain's frame (after the header) into `buffer`; its length.
fn read_frame(
    memory: &MemoryGuard,
    chain: DescriptorChain<MemoryGuard>,
    buffer: &mut [u8],
) -> Result<usize, ChainError> {
    let mut reader = chain.reader(&**memory).map_err(|_| ChainError::Invalid)?;
    let total = reader.available_bytes();
    if total <= VNET_HDR_LEN || total > MAX_BUFFER || total > buffer.len() {
        return Err(ChainError::TooSmall);
    }
    // The header only describes offloads, none of which are negotiated.
    let mut header = [0u8; VNET_HDR_LEN];
    let len = total - VNET_HDR_LEN;
    reader
        .read_exact(&mut header)
        .and_then(|()| reader.read_exact(&mut buffer[..len]))
        .map_err(|_| ChainError::Invalid)?;
    Ok(len)
}

/// Writes header + frame (`data`) into an RX chain; the bytes written.
fn write_frame(
    memory: &MemoryGuard,
    chain: DescriptorChain<MemoryGuard>,
    data: &[u8],
) -> Result<u32, ChainError> {
    let mut writer = chain.writer(&**memory).map_err(|_| ChainError::Invalid)?;
    if writer.available_bytes() < data.len() {
        return Err(ChainError::TooSmall);
    }
    writer.write_all(data).map_err(|_| ChainError::Invalid)?;
    u32::try_from(data.len()).map_err(|_| ChainError::TooSmall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_is_the_mac_then_zeros_and_bounded() {
        let mac = [2, 0, 0, 0, 9, 0x15];
        assert_eq!(config_bytes(mac, 0, 6), mac.to_vec());
        assert_eq!(config_bytes(mac, 4, 4), vec![9, 0x15, 0, 0]);
        assert_eq!(config_bytes(mac, 0, 256).len(), 256);
        assert!(config_bytes(mac, 250, 10).is_empty());
        assert!(config_bytes(mac, u32::MAX, 2).is_empty());
    }

    #[test]
    fn serve_needs_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let err = serve(&dir.path().join("vu.sock"), [2, 0, 0, 0, 0, 1]).unwrap_err();
        assert!(err.to_string().contains("Tokio runtime"), "{err}");
        assert!(!dir.path().join("vu.sock").exists());
    }

    #[tokio::test]
    async fn stop_removes_the_socket_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vu.sock");
        // A stale socket file from a previous run.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_transport, net) = serve(&path, [2, 0, 0, 0, 0, 1]).unwrap();
        assert!(net.is_running());
        // A frontend that connects and leaves at once does not end the backend.
        drop(std::os::unix::net::UnixStream::connect(&path).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(net.is_running());
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        net.stop();
        assert!(!path.exists());
        // Not a socket: left alone.
        std::fs::write(&path, b"x").unwrap();
        assert!(serve(&path, [2, 0, 0, 0, 0, 1]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }
}
