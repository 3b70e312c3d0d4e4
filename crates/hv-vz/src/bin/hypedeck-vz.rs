//! `hypedeck-vz`: one Apple Virtualization.framework VM per process, so VMs outlive the app.
//!
//! `hypedeck-vz run <vz-plan.json> [--restore <vz-state.bin>]` builds a
//! `VZVirtualMachineConfiguration` from the plan (one VZ object per plan field, nothing
//! else), validates it, boots the VM (or restores the saved state and resumes it), then
//! serves two unix sockets in the runtime dir: the control socket (`hypedeck_hv_vz::control`)
//! and the hybrid-vsock socket for the exec agent (`hypedeck_hv_vz::vsock`). It holds a
//! `flock` on its pidfile while it lives and exits when the VM stops, whether the guest
//! powered off, the VM failed, or the backend asked (`stop`, `save`).
//!
//! Threading: the `VZVirtualMachine` is created on a private serial dispatch queue and every
//! call to it, and every completion handler and delegate callback, runs on that queue. Socket
//! threads hop onto the queue (`Vmm::call`) and wait on a channel for the result; nothing
//! blocks the queue itself. The main thread parks in `dispatch_main`.
//!
//! The binary needs the `com.apple.security.virtualization` entitlement (see the crate's
//! README for signing). Off macOS it only says that it runs only on macOS.

#[cfg(not(target_os = "macos"))]
fn main() -> std::process::ExitCode {
    eprintln!("hypedeck-vz runs only on macOS");
    std::process::ExitCode::from(2)
}

#[cfg(target_os = "macos")]
fn main() -> std::process::ExitCode {
    macos::main()
}

// Virtualization.framework is Objective-C: every call into it is an FFI call, each wrapped
// in an `unsafe` block whose SAFETY comment says why it holds.
#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod macos {
    use std::ffi::OsString;
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
    use std::time::Duration;

    use block2::RcBlock;
    use dispatch2::{DispatchQueue, DispatchRetained};
    use hypedeck_hv_vz::control::{self, Handler, Request, Response, VmState};
    use hypedeck_hv_vz::pidfile::PidLock;
    use hypedeck_hv_vz::plan::{Launch, NetworkAttachment, RuntimeFiles, VzPlan};
    use hypedeck_hv_vz::vsock::{self, Connector, GuestStream};
    use objc2::rc::Retained;
    use objc2::runtime::{NSObject, NSObjectProtocol};
    use objc2::{AnyThread, available, define_class, msg_send};
    use objc2_foundation::{NSArray, NSData, NSError, NSFileHandle, NSString, NSURL};
    use objc2_virtualization::{
        VZDiskImageStorageDeviceAttachment, VZEntropyDeviceConfiguration,
        VZFileHandleNetworkDeviceAttachment, VZFileSerialPortAttachment,
        VZGenericMachineIdentifier, VZGenericPlatformConfiguration, VZLinuxBootLoader,
        VZMACAddress, VZMemoryBalloonDeviceConfiguration, VZNetworkDeviceConfiguration,
        VZSerialPortConfiguration, VZSocketDeviceConfiguration, VZStorageDeviceConfiguration,
        VZVirtioBlockDeviceConfiguration, VZVirtioConsoleDeviceSerialPortConfiguration,
        VZVirtioEntropyDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
        VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketDeviceConfiguration,
        VZVirtioTraditionalMemoryBalloonDeviceConfiguration, VZVirtualMachine,
        VZVirtualMachineConfiguration, VZVirtualMachineDelegate, VZVirtualMachineState,
    };

    /// Time for a VM to boot or restore.
    const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
    /// Time for an ordinary VM operation.
    const OP_TIMEOUT: Duration = Duration::from_secs(60);
    /// Time to write a saved state.
    const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
    /// Time for the guest to accept a vsock connection.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn main() -> ExitCode {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let launch = match Launch::parse(&args) {
            Ok(launch) => launch,
            Err(usage) => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        };
        match run(&launch) {
            Ok(never) => match never {},
            Err(message) => exit(1, &message),
        }
    }

    /// What the process cleans up when it ends.
    struct Runtime {
        files: RuntimeFiles,
        lock: Mutex<Option<PidLock>>,
    }

    static RUNTIME: OnceLock<Runtime> = OnceLock::new();

    /// Set while the helper itself stops the VM (`stop`, `save`): the control handler exits
    /// after answering, so a delegate callback must not exit first.
    static STOPPING: AtomicBool = AtomicBool::new(false);

    /// Logs `why`, removes the sockets and the pidfile, and ends the process. Destructors do
    /// not run, so VZ objects are never released off their queue.
    fn exit(code: i32, why: &str) -> ! {
        eprintln!("hypedeck-vz: {why}");
        if let Some(runtime) = RUNTIME.get() {
            let _ = std::fs::remove_file(&runtime.files.control);
            let _ = std::fs::remove_file(&runtime.files.vsock);
            let lock = runtime
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(lock) = lock {
                lock.remove();
            }
        }
        std::process::exit(code)
    }

    fn run(launch: &Launch) -> Result<std::convert::Infallible, String> {
        let plan: VzPlan = std::fs::read(&launch.plan)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
            .map_err(|e| format!("read plan {}: {e}", launch.plan.display()))?;
        let lock = PidLock::acquire(&plan.files.pidfile)
            .map_err(|e| format!("lock {}: {e}", plan.files.pidfile.display()))?;
        let _ = RUNTIME.set(Runtime {
            files: plan.files.clone(),
            lock: Mutex::new(Some(lock)),
        });
        eprintln!(
            "hypedeck-vz: {} {}: {} cpus, {} MiB, {} disks",
            if launch.restore.is_some() {
                "restoring"
            } else {
                "booting"
            },
            plan.instance_id,
            plan.cpu_count,
            plan.memory_bytes >> 20,
            plan.disks.len()
        );
        if !available!(macos = 12.0) {
            return Err("hypedeck-vz needs macOS 12 or later".into());
        }
        let restoring = launch.restore.is_some();
        if restoring && !available!(macos = 14.0) {
            return Err("restoring a saved vm needs macOS 14 or later".into());
        }
        let machine_id = machine_identifier(&plan.files.machine_id, restoring)?;
        // The NIC's frames: VZ gets one end of a datagram pair, the engine's network stack
        // asks for the other (`network`), again after it restarts.
        let (nic, network) = match &plan.network {
            Some(_) => {
                let (vm_end, engine_end) = frame_socket_pair()?;
                (Some(vm_end), Some(engine_end))
            }
            None => (None, None),
        };
        let configuration = configure(&plan, &machine_id, nic)?;
        let save_support = if available!(macos = 14.0) {
            // SAFETY: a validated configuration (macOS 14+ checked); the call only inspects it.
            unsafe { configuration.validateSaveRestoreSupportWithError() }
                .map_err(|e| format!("this vm cannot be saved: {}", describe(&e)))
        } else {
            Err("saving a vm needs macOS 14 or later".into())
        };
        if restoring && let Err(why) = &save_support {
            return Err(why.clone());
        }

        let vmm = Arc::new(Vmm::create(configuration));
        match &launch.restore {
            Some(state) => {
                vmm.restore(state)?;
                vmm.resume()?;
            }
            None => vmm.start()?,
        }

        for socket in [&plan.files.control, &plan.files.vsock] {
            let _ = std::fs::remove_file(socket);
        }
        let vsock_listener = UnixListener::bind(&plan.files.vsock)
            .map_err(|e| format!("listen on {}: {e}", plan.files.vsock.display()))?;
        let control_listener = UnixListener::bind(&plan.files.control)
            .map_err(|e| format!("listen on {}: {e}", plan.files.control.display()))?;
        let connector = Arc::new(VsockConnector {
            vmm: Arc::clone(&vmm),
        });
        spawn("vz-vsock-accept", move || {
            if let Err(e) = vsock::serve(vsock_listener, connector) {
                exit(1, &format!("vsock socket failed: {e}"));
            }
        })?;
        let handler = Arc::new(Control {
            vmm,
            network,
            save_support,
            busy: Mutex::new(()),
        });
        // Bound last: an answering control socket is what tells the backend the VM is up.
        spawn("vz-control-accept", move || {
            if let Err(e) = control::serve(control_listener, handler) {
                exit(1, &format!("control socket failed: {e}"));
            }
        })?;
        eprintln!("hypedeck-vz: {} running", plan.instance_id);
        dispatch2::dispatch_main()
    }

    /// A datagram socket pair for Ethernet frames, with the buffer sizes VZ's file-handle
    /// attachment documents (receive at least twice the send buffer).
    fn frame_socket_pair() -> Result<(OwnedFd, OwnedFd), String> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()
            .map_err(|e| format!("create the network socket pair: {e}"))?;
        for end in [&a, &b] {
            rustix::net::sockopt::set_socket_send_buffer_size(end, 1 << 20)
                .and_then(|()| rustix::net::sockopt::set_socket_recv_buffer_size(end, 4 << 20))
                .map_err(|e| format!("size the network socket buffers: {e}"))?;
        }
        Ok((OwnedFd::from(a), OwnedFd::from(b)))
    }

    fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map(drop)
            .map_err(|e| format!("spawn {name}: {e}"))
    }

    // -----------------------------------------------------------------------------------------
    // The configuration.

    fn file_url(what: &str, path: &Path) -> Result<Retained<NSURL>, String> {
        NSURL::from_file_path(path)
            .ok_or_else(|| format!("{what} path {} is not a file url", path.display()))
    }

    /// The machine identifier in `path`, or a new one saved there (not when restoring: the
    /// state only restores under the identifier it was saved with).
    fn machine_identifier(
        path: &Path,
        restoring: bool,
    ) -> Result<Retained<VZGenericMachineIdentifier>, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let data = NSData::with_bytes(&bytes);
                // SAFETY: initWithDataRepresentation: on a fresh allocation with valid NSData;
                // it returns nil for data that is not an identifier.
                unsafe {
                    VZGenericMachineIdentifier::initWithDataRepresentation(
                        VZGenericMachineIdentifier::alloc(),
                        &data,
                    )
                }
                .ok_or_else(|| format!("{} holds no machine identifier", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !restoring => {
                // SAFETY: +new creates a random identifier; dataRepresentation reads it.
                let (id, data) = unsafe {
                    let id = VZGenericMachineIdentifier::new();
                    let data = id.dataRepresentation();
                    (id, data)
                };
                let mut tmp = path.as_os_str().to_owned();
                tmp.push(".tmp");
                std::fs::write(&tmp, data.to_vec())
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .map_err(|e| format!("save machine identifier {}: {e}", path.display()))?;
                Ok(id)
            }
            Err(e) => Err(format!("read machine identifier {}: {e}", path.display())),
        }
    }

    /// One VZ object per plan field, then `validateWithError:`.
    fn configure(
        plan: &VzPlan,
        machine_id: &VZGenericMachineIdentifier,
        nic: Option<OwnedFd>,
    ) -> Result<Retained<VZVirtualMachineConfiguration>, String> {
        // SAFETY (whole function): VZ configuration objects are plain data holders, built and
        // validated here on one thread before any VM exists. Every initializer gets a fresh
        // allocation and valid arguments; arrays hold objects of the element type VZ expects
        // (upcast with `into_super`).
        unsafe {
            let (min_memory, max_memory) = (
                VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
                VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
            );
            if !(min_memory..=max_memory).contains(&plan.memory_bytes) {
                return Err(format!(
                    "{} MiB of memory is outside what this Mac allows ({}-{} MiB)",
                    plan.memory_bytes >> 20,
                    min_memory >> 20,
                    max_memory >> 20
                ));
            }
            let cpus = usize::try_from(plan.cpu_count).unwrap_or(usize::MAX);
            let (min_cpus, max_cpus) = (
                VZVirtualMachineConfiguration::minimumAllowedCPUCount(),
                VZVirtualMachineConfiguration::maximumAllowedCPUCount(),
            );
            if !(min_cpus..=max_cpus).contains(&cpus) {
                return Err(format!(
                    "{cpus} cpus is outside what this Mac allows ({min_cpus}-{max_cpus})"
                ));
            }

            let configuration = VZVirtualMachineConfiguration::new();
            configuration.setCPUCount(cpus);
            configuration.setMemorySize(plan.memory_bytes);

            let platform = VZGenericPlatformConfiguration::new();
            platform.setMachineIdentifier(machine_id);
            configuration.setPlatform(&platform);

            let kernel = file_url("kernel", &plan.boot.kernel)?;
            let initrd = file_url("initrd", &plan.boot.initrd)?;
            let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &kernel);
            boot.setInitialRamdiskURL(Some(&initrd));
            boot.setCommandLine(&NSString::from_str(&plan.boot.command_line));
            configuration.setBootLoader(Some(&boot));

            let mut disks: Vec<Retained<VZStorageDeviceConfiguration>> = Vec::new();
            for disk in &plan.disks {
                let url = file_url("disk", &disk.path)?;
                let attachment = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
                    VZDiskImageStorageDeviceAttachment::alloc(),
                    &url,
                    disk.read_only,
                )
                .map_err(|e| format!("attach disk {}: {}", disk.path.display(), describe(&e)))?;
                let device = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                    VZVirtioBlockDeviceConfiguration::alloc(),
                    &attachment,
                );
                disks.push(Retained::into_super(device));
            }
            configuration.setStorageDevices(&NSArray::from_retained_slice(&disks));

            if let (Some(network), Some(nic)) = (&plan.network, nic) {
                let device = VZVirtioNetworkDeviceConfiguration::new();
                let NetworkAttachment::FileHandle = network.attachment;
                // The file handle owns the descriptor from here (closed on dealloc).
                let handle = NSFileHandle::initWithFileDescriptor_closeOnDealloc(
                    NSFileHandle::alloc(),
                    nic.into_raw_fd(),
                    true,
                );
                let attachment = VZFileHandleNetworkDeviceAttachment::initWithFileHandle(
                    VZFileHandleNetworkDeviceAttachment::alloc(),
                    &handle,
                );
                device.setAttachment(Some(&attachment));
                let mac = VZMACAddress::initWithString(
                    VZMACAddress::alloc(),
                    &NSString::from_str(&network.mac),
                )
                .ok_or_else(|| format!("{} is not a mac address", network.mac))?;
                device.setMACAddress(&mac);
                let devices: [Retained<VZNetworkDeviceConfiguration>; 1] =
                    [Retained::into_super(device)];
                configuration.setNetworkDevices(&NSArray::from_retained_slice(&devices));
            }

            // The console appends to the app log, which must exist first.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&plan.console_log)
                .map_err(|e| format!("open console log {}: {e}", plan.console_log.display()))?;
            let log_url = file_url("console log", &plan.console_log)?;
            let log = VZFileSerialPortAttachment::initWithURL_append_error(
                VZFileSerialPortAttachment::alloc(),
                &log_url,
                true,
            )
            .map_err(|e| format!("attach console log: {}", describe(&e)))?;
            let console = VZVirtioConsoleDeviceSerialPortConfiguration::new();
            console.setAttachment(Some(&log));
            let serial: [Retained<VZSerialPortConfiguration>; 1] = [Retained::into_super(console)];
            configuration.setSerialPorts(&NSArray::from_retained_slice(&serial));

            if plan.devices.vsock {
                let sockets: [Retained<VZSocketDeviceConfiguration>; 1] = [Retained::into_super(
                    VZVirtioSocketDeviceConfiguration::new(),
                )];
                configuration.setSocketDevices(&NSArray::from_retained_slice(&sockets));
            }
            if plan.devices.entropy {
                let entropy: [Retained<VZEntropyDeviceConfiguration>; 1] = [Retained::into_super(
                    VZVirtioEntropyDeviceConfiguration::new(),
                )];
                configuration.setEntropyDevices(&NSArray::from_retained_slice(&entropy));
            }
            if plan.devices.memory_balloon {
                let balloons: [Retained<VZMemoryBalloonDeviceConfiguration>; 1] =
                    [Retained::into_super(
                        VZVirtioTraditionalMemoryBalloonDeviceConfiguration::new(),
                    )];
                configuration.setMemoryBalloonDevices(&NSArray::from_retained_slice(&balloons));
            }

            configuration
                .validateWithError()
                .map_err(|e| format!("invalid vm configuration: {}", describe(&e)))?;
            Ok(configuration)
        }
    }

    /// An NSError as one line: its description, domain and code.
    fn describe(error: &NSError) -> String {
        format!(
            "{} ({} {})",
            error.localizedDescription(),
            error.domain(),
            error.code()
        )
    }

    /// `Ok` for a nil error pointer from a completion handler.
    fn ns_result(error: *mut NSError) -> Result<(), String> {
        // SAFETY: VZ passes nil or an NSError valid for the duration of the callback.
        match unsafe { error.as_ref() } {
            None => Ok(()),
            Some(error) => Err(describe(error)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The VM and its queue.

    /// A value only touched on the VM's serial queue.
    struct QueueBound<T>(T);

    // SAFETY: the wrapped Objective-C objects are only dereferenced through `get`, whose
    // callers run on the VM's serial queue (inside `Vmm::call` work items or VZ callbacks on
    // that queue), so accesses are serialized on one queue as VZ requires. Moving the wrapper
    // between threads moves a pointer without touching the object.
    unsafe impl<T> Send for QueueBound<T> {}
    // SAFETY: as for `Send`: shared references only reach the object on the queue.
    unsafe impl<T> Sync for QueueBound<T> {}

    impl<T> QueueBound<T> {
        /// # Safety
        /// The caller runs on the VM's queue.
        unsafe fn get(&self) -> &T {
            &self.0
        }
    }

    /// One result a queue work item sends back to the waiting thread.
    struct Reply<R>(mpsc::Sender<R>);

    impl<R> Reply<R> {
        fn send(&self, value: R) {
            // The waiter may have timed out; the value is then dropped here, on the queue.
            let _ = self.0.send(value);
        }
    }

    /// A completion block that forwards VZ's error (or success) to `reply`.
    fn completion(reply: Reply<Result<(), String>>) -> RcBlock<dyn Fn(*mut NSError)> {
        RcBlock::new(move |error: *mut NSError| reply.send(ns_result(error)))
    }

    struct Machine {
        vm: Retained<VZVirtualMachine>,
        /// The delegate property is weak: this keeps the observer alive.
        _observer: Retained<StopObserver>,
    }

    struct Vmm {
        queue: DispatchRetained<DispatchQueue>,
        machine: Arc<QueueBound<Machine>>,
    }

    impl Vmm {
        /// Creates the VM on a new serial queue (the VM must be driven from there).
        fn create(configuration: Retained<VZVirtualMachineConfiguration>) -> Vmm {
            let queue = DispatchQueue::new("dev.hypedeck.vz", None);
            let configuration = QueueBound(configuration);
            let mut machine = None;
            queue.exec_sync(|| {
                // SAFETY: on the VM's queue (exec_sync). The configuration was validated and
                // is copied by the initializer; the queue is serial (no attributes).
                let created = unsafe {
                    let vm = VZVirtualMachine::initWithConfiguration_queue(
                        VZVirtualMachine::alloc(),
                        configuration.get(),
                        &queue,
                    );
                    let observer = StopObserver::new();
                    vm.setDelegate(Some(objc2::runtime::ProtocolObject::from_ref(&*observer)));
                    Machine {
                        vm,
                        _observer: observer,
                    }
                };
                machine = Some(QueueBound(created));
            });
            let Some(machine) = machine else {
                // exec_sync runs the closure before returning.
                exit(1, "the vm queue did not run");
            };
            Vmm {
                queue,
                machine: Arc::new(machine),
            }
        }

        /// Runs `work` on the VM's queue and waits (off the queue) for what it replies.
        fn call<R: Send + 'static>(
            &self,
            what: &str,
            timeout: Duration,
            work: impl FnOnce(&VZVirtualMachine, Reply<R>) + Send + 'static,
        ) -> Result<R, String> {
            let (tx, rx) = mpsc::channel();
            let machine = Arc::clone(&self.machine);
            self.queue.exec_async(move || {
                // SAFETY: this work item runs on the VM's queue.
                let machine = unsafe { machine.get() };
                work(&machine.vm, Reply(tx));
            });
            rx.recv_timeout(timeout).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => {
                    format!("{what} did not finish within {}s", timeout.as_secs())
                }
                mpsc::RecvTimeoutError::Disconnected => format!("{what} was dropped"),
            })
        }

        /// Runs a completion-handler operation and waits for it.
        fn operation(
            &self,
            what: &str,
            timeout: Duration,
            work: impl FnOnce(&VZVirtualMachine, Reply<Result<(), String>>) + Send + 'static,
        ) -> Result<(), String> {
            self.call(what, timeout, work)?
                .map_err(|e| format!("{what}: {e}"))
        }

        fn state(&self) -> Result<VmState, String> {
            self.call("state", OP_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue.
                reply.send(vm_state(unsafe { vm.state() }));
            })
        }

        fn start(&self) -> Result<(), String> {
            self.operation("start", BOOT_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue; the block lives until VZ releases it.
                unsafe { vm.startWithCompletionHandler(&completion(reply)) }
            })
        }

        fn restore(&self, state: &Path) -> Result<(), String> {
            let state = state.to_path_buf();
            self.operation("restore", BOOT_TIMEOUT, move |vm, reply| {
                let url = match file_url("saved state", &state) {
                    Ok(url) => url,
                    Err(e) => return reply.send(Err(e)),
                };
                // SAFETY: on the VM's queue (macOS 14+ checked by the caller).
                unsafe { vm.restoreMachineStateFromURL_completionHandler(&url, &completion(reply)) }
            })
        }

        fn pause(&self) -> Result<(), String> {
            self.operation("pause", OP_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue.
                unsafe {
                    if vm.state() == VZVirtualMachineState::Paused {
                        reply.send(Ok(()));
                    } else if vm.canPause() {
                        vm.pauseWithCompletionHandler(&completion(reply));
                    } else {
                        reply.send(Err(format!("the vm is {}", vm_state(vm.state()).as_str())));
                    }
                }
            })
        }

        fn resume(&self) -> Result<(), String> {
            self.operation("resume", OP_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue.
                unsafe {
                    if vm.state() == VZVirtualMachineState::Running {
                        reply.send(Ok(()));
                    } else if vm.canResume() {
                        vm.resumeWithCompletionHandler(&completion(reply));
                    } else {
                        reply.send(Err(format!("the vm is {}", vm_state(vm.state()).as_str())));
                    }
                }
            })
        }

        fn request_stop(&self) -> Result<(), String> {
            self.operation("request stop", OP_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue.
                unsafe {
                    if vm.state() == VZVirtualMachineState::Stopped {
                        reply.send(Ok(()));
                    } else if vm.canRequestStop() {
                        reply.send(vm.requestStopWithError().map_err(|e| describe(&e)));
                    } else {
                        reply.send(Err(format!("the vm is {}", vm_state(vm.state()).as_str())));
                    }
                }
            })
        }

        fn stop(&self) -> Result<(), String> {
            STOPPING.store(true, Ordering::SeqCst);
            let stopped = self.operation("stop", OP_TIMEOUT, |vm, reply| {
                // SAFETY: on the VM's queue.
                unsafe {
                    if vm.canStop() {
                        vm.stopWithCompletionHandler(&completion(reply));
                    } else {
                        // Stopped, or never started: nothing to stop.
                        reply.send(Ok(()));
                    }
                }
            });
            if stopped.is_err() {
                // Still running: a later power-off must end the process again.
                STOPPING.store(false, Ordering::SeqCst);
            }
            stopped
        }

        fn save(&self, path: &Path) -> Result<(), String> {
            let path = path.to_path_buf();
            self.operation("save", SAVE_TIMEOUT, move |vm, reply| {
                let url = match file_url("saved state", &path) {
                    Ok(url) => url,
                    Err(e) => return reply.send(Err(e)),
                };
                // SAFETY: on the VM's queue; the VM is paused (checked by VZ, which fails the
                // save otherwise) and macOS 14+ was checked by the caller.
                unsafe { vm.saveMachineStateToURL_completionHandler(&url, &completion(reply)) }
            })
        }
    }

    fn vm_state(state: VZVirtualMachineState) -> VmState {
        match state {
            VZVirtualMachineState::Stopped => VmState::Stopped,
            VZVirtualMachineState::Running => VmState::Running,
            VZVirtualMachineState::Paused => VmState::Paused,
            VZVirtualMachineState::Starting => VmState::Starting,
            VZVirtualMachineState::Pausing => VmState::Pausing,
            VZVirtualMachineState::Resuming => VmState::Resuming,
            VZVirtualMachineState::Stopping => VmState::Stopping,
            VZVirtualMachineState::Saving => VmState::Saving,
            VZVirtualMachineState::Restoring => VmState::Restoring,
            // VZVirtualMachineStateError, and states newer than these bindings.
            _ => VmState::Error,
        }
    }

    define_class!(
        // SAFETY: NSObject has no subclassing requirements, and StopObserver has no Drop.
        #[unsafe(super(NSObject))]
        #[name = "HypedeckVzStopObserver"]
        struct StopObserver;

        unsafe impl NSObjectProtocol for StopObserver {}

        // Called on the VM's queue.
        unsafe impl VZVirtualMachineDelegate for StopObserver {
            #[unsafe(method(guestDidStopVirtualMachine:))]
            fn guest_did_stop(&self, _vm: &VZVirtualMachine) {
                if !STOPPING.load(Ordering::SeqCst) {
                    exit(0, "the guest powered off");
                }
            }

            #[unsafe(method(virtualMachine:didStopWithError:))]
            fn did_stop_with_error(&self, _vm: &VZVirtualMachine, error: &NSError) {
                exit(
                    1,
                    &format!("the vm stopped with an error: {}", describe(error)),
                );
            }
        }
    );

    impl StopObserver {
        fn new() -> Retained<StopObserver> {
            let this = StopObserver::alloc().set_ivars(());
            // SAFETY: NSObject's designated initializer on a fresh allocation.
            unsafe { msg_send![super(this), init] }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The sockets.

    struct Control {
        vmm: Arc<Vmm>,
        /// The engine's end of the NIC's frame socket.
        network: Option<OwnedFd>,
        save_support: Result<(), String>,
        /// One request at a time: a save is several VM operations in a row.
        busy: Mutex<()>,
    }

    impl Control {
        /// Pause, save, stop. On failure the VM is resumed if it was running.
        fn save(&self, path: &Path) -> Result<(), String> {
            self.save_support.clone()?;
            let was_running = self.vmm.state()? == VmState::Running;
            self.vmm.pause()?;
            if let Err(e) = self.vmm.save(path) {
                let _ = std::fs::remove_file(path);
                if was_running && let Err(resume) = self.vmm.resume() {
                    eprintln!("hypedeck-vz: resume after a failed save: {resume}");
                }
                return Err(e);
            }
            if let Err(e) = self.vmm.stop() {
                // The state is saved; the process ends after answering either way.
                eprintln!("hypedeck-vz: stop after save: {e}");
            }
            Ok(())
        }
    }

    impl Handler for Control {
        fn handle(&self, request: &Request) -> Response {
            let _busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            let done = match request {
                Request::State | Request::Network => Ok(()),
                Request::Pause => self.vmm.pause(),
                Request::Resume => self.vmm.resume(),
                Request::RequestStop => self.vmm.request_stop(),
                Request::Stop => self.vmm.stop(),
                Request::Save(path) => self.save(path),
            };
            match done.and_then(|()| self.vmm.state()) {
                Ok(state) => Response::Ok(state),
                Err(message) => {
                    eprintln!("hypedeck-vz: {}: {message}", request.verb());
                    Response::Err(message)
                }
            }
        }

        fn network_link(&self) -> Option<BorrowedFd<'_>> {
            self.network.as_ref().map(|fd| fd.as_fd())
        }

        fn replied(&self, request: &Request, response: &Response) {
            if let (Request::Stop | Request::Save(_), Response::Ok(_)) = (request, response) {
                exit(0, &format!("stopped on request ({})", request.verb()));
            }
        }
    }

    /// Opens guest vsock connections through the VM's `VZVirtioSocketDevice`.
    struct VsockConnector {
        vmm: Arc<Vmm>,
    }

    /// What a `connectToPort:` completion hands back.
    type Connected = (OwnedFd, u32, QueueBound<Retained<VZVirtioSocketConnection>>);

    impl Connector for VsockConnector {
        fn connect(&self, port: u32) -> io::Result<GuestStream> {
            let connected = self
                .vmm
                .call("vsock connect", CONNECT_TIMEOUT, move |vm, reply| {
                    // SAFETY: on the VM's queue; the block lives until VZ releases it.
                    unsafe {
                        let device = vm
                            .socketDevices()
                            .firstObject()
                            .and_then(|d| d.downcast::<VZVirtioSocketDevice>().ok());
                        let Some(device) = device else {
                            return reply.send(Err("the vm has no vsock device".into()));
                        };
                        let block = RcBlock::new(
                            move |connection: *mut VZVirtioSocketConnection,
                                  error: *mut NSError| {
                                reply.send(take_connection(connection, error));
                            },
                        );
                        device.connectToPort_completionHandler(port, &block);
                    }
                })
                .and_then(|r| r)
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("port {port}: {e}"),
                    )
                })?;
            let (fd, local_port, connection) = connected;
            let queue = self.vmm.queue.clone();
            Ok(GuestStream {
                fd,
                local_port,
                on_close: Some(Box::new(move || {
                    // Close and release the VZ connection on its queue.
                    queue.exec_async(move || {
                        // SAFETY: on the VM's queue.
                        unsafe { connection.get().close() };
                        drop(connection);
                    });
                })),
            })
        }
    }

    /// Keeps the connection object (VZ closes its descriptor when it is released) and a
    /// duplicate of its descriptor for the splice.
    fn take_connection(
        connection: *mut VZVirtioSocketConnection,
        error: *mut NSError,
    ) -> Result<Connected, String> {
        // SAFETY: VZ passes a connection valid for the callback, or nil with an error;
        // retaining keeps it alive past the callback. fileDescriptor and sourcePort are
        // plain getters; fcntl(F_DUPFD_CLOEXEC) on a descriptor the object owns and keeps
        // open, and the new descriptor is owned by nobody else.
        unsafe {
            let Some(connection) = Retained::retain(connection) else {
                return Err(ns_result(error)
                    .err()
                    .unwrap_or_else(|| "no connection".into()));
            };
            let fd = libc::fcntl(connection.fileDescriptor(), libc::F_DUPFD_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("dup: {}", io::Error::last_os_error()));
            }
            let port = connection.sourcePort();
            Ok((OwnedFd::from_raw_fd(fd), port, QueueBound(connection)))
        }
    }
}
