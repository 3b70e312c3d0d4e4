//! [`EgressProxy`]: the attached instances, each with its own atomically swapped rule set, and
//! the entry points their connections come in by.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ca::CertificateAuthority;
use crate::error::EgressError;
use crate::fingerprint::Fingerprinter;
use crate::instance::{HostCheck, HostCheckSlot, Instance, Shared};
use crate::rules::{InjectRule, RuleSet};
use crate::serve::TestOutcome;
use crate::tasks::InstanceTasks;
use crate::upstream::{DestinationFilter, Dialer, UpstreamTrust};
use crate::usage::UsageSink;

/// Knobs beyond the CA and the upstream trust. `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Host name (lowercase, no port) → address to dial instead of resolving it. An override
    /// is exempt from the loopback policy. Meant for tests (an HTTPS upstream on 127.0.0.1
    /// under a real-looking name such as `api.test.local`) and diagnostics; the guest cannot
    /// influence it. The override's port is used whatever port the guest asked for.
    pub resolve_overrides: HashMap<String, SocketAddr>,
    /// Whether destinations that resolve to loopback or unspecified addresses are allowed.
    /// Default `true`, like upstream (whose proxy dials whatever the guest names). Setting it
    /// to `false` hardens the sandbox: with egress the proxy is the guest's only way out, and through it the guest could otherwise reach host-local services; denied
    /// destinations get a 403.
    pub allow_loopback: bool,
    /// Which other resolved addresses may be dialled (`None`: all). Overrides are exempt.
    pub destinations: Option<DestinationFilter>,
    /// Bound on resolving, connecting and the TLS handshake to an upstream.
    pub connect_timeout: Duration,
    /// Where the credential usage trail goes (`None`: nowhere).
    pub usage: Option<Arc<dyn UsageSink>>,
    /// Fingerprints of credential values in the trail and in "test credential" answers: the
    /// data dir's, shared with the engine so both report the same fingerprint for a value.
    /// `None`: a random key for this proxy alone.
    pub fingerprints: Option<Fingerprinter>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            resolve_overrides: HashMap::new(),
            allow_loopback: true,
            destinations: None,
            connect_timeout: Duration::from_secs(15),
            usage: None,
            fingerprints: None,
        }
    }
}

#[derive(Debug)]
struct Attached {
    instance: Arc<Instance>,
    /// A loopback listener, only for tests and benchmarks ([`EgressProxy::listen`]).
    listener: Option<(SocketAddr, JoinHandle<()>)>,
}

/// The host-side egress proxy. Dropping it stops every listener and connection.
#[derive(Debug)]
pub struct EgressProxy {
    shared: Arc<Shared>,
    instances: Mutex<HashMap<String, Attached>>,
    shutdown: CancellationToken,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl EgressProxy {
    /// A proxy with no instance attached, with [`ProxyOptions::default`].
    pub fn new(
        ca: CertificateAuthority,
        upstream: UpstreamTrust,
    ) -> Result<EgressProxy, EgressError> {
        EgressProxy::with_options(ca, upstream, ProxyOptions::default())
    }

    /// A proxy with explicit [`ProxyOptions`].
    pub fn with_options(
        ca: CertificateAuthority,
        upstream: UpstreamTrust,
        options: ProxyOptions,
    ) -> Result<EgressProxy, EgressError> {
        let dialer = Dialer::new(
            &upstream,
            options.resolve_overrides,
            options.allow_loopback,
            options.destinations,
            options.connect_timeout,
        )?;
        let fingerprints = match options.fingerprints {
            Some(fingerprints) => fingerprints,
            None => Fingerprinter::random()?,
        };
        Ok(EgressProxy {
            shared: Arc::new(Shared {
                ca,
                dialer,
                usage: options.usage,
                fingerprints,
            }),
            instances: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        })
    }

    /// Waits until the trail holds every event recorded so far ([`UsageSink::settle`]), so a
    /// read after a request (or a credential test) sees it. Blocking.
    pub fn settle_usage(&self) {
        if let Some(sink) = &self.shared.usage {
            sink.settle();
        }
    }

    /// The CA certificate PEM the guest must trust.
    pub fn ca_pem(&self) -> String {
        self.shared.ca.cert_pem()
    }

    /// Registers the instance with no rules (nothing is injected until
    /// [`set_rules`](Self::set_rules)). Its guest's connections arrive through
    /// [`serve`](Self::serve), from the instance's own network stack: no port is opened.
    /// Idempotent.
    pub fn attach(&self, instance_id: &str) {
        self.instances()
            .entry(instance_id.to_string())
            .or_insert_with(|| {
                tracing::info!(instance = instance_id, "egress proxy attached");
                Attached {
                    instance: Arc::new(Instance {
                        id: instance_id.to_string(),
                        check: std::sync::RwLock::new(None),
                        rules: ArcSwap::from_pointee(RuleSet::default()),
                        shared: self.shared.clone(),
                        tasks: InstanceTasks::new(self.shutdown.child_token()),
                    }),
                    listener: None,
                }
            });
    }

    /// Sets the instance's host check (replacing any): every CONNECT, absolute-form request and
    /// intercepted connection to a host it refuses is answered 403 (or closed).
    pub fn set_host_check(&self, instance_id: &str, check: HostCheck) {
        if let Some(a) = self.instances().get(instance_id) {
            let mut slot = a.instance.check.write().unwrap_or_else(|p| p.into_inner());
            *slot = Some(HostCheckSlot(check));
        }
    }

    /// Serves one guest connection of an attached instance (a stream from its network stack)
    /// until it closes or the instance is detached. A stream for an instance that is not
    /// attached is dropped (closed). Must be called inside a Tokio runtime.
    pub fn serve<S>(&self, instance_id: &str, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Some(instance) = self.attached(instance_id) else {
            return;
        };
        let conn = crate::serve::guest_connection(stream, instance.clone());
        instance.tasks.spawn(conn);
    }

    /// Serves one connection the instance's network intercepted: the guest dialled `addr`
    /// (port 443: HTTPS, terminated with the CA; port 80: plain HTTP) directly, having
    /// resolved `name` to it if it did. Like [`serve`](Self::serve) otherwise.
    pub fn serve_transparent<S>(
        &self,
        instance_id: &str,
        stream: S,
        addr: SocketAddr,
        name: Option<String>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Some(instance) = self.attached(instance_id) else {
            return;
        };
        let conn = crate::serve::transparent_connection(stream, instance.clone(), addr, name);
        instance.tasks.spawn(conn);
    }

    /// Attaches the instance (if needed) and also serves it on `127.0.0.1:<port>` (`None`:
    /// any free port), returning the address. For tests and benchmarks only: a sandbox's own
    /// connections never use a host port. Idempotent: an instance already listening keeps its
    /// address.
    pub async fn listen(
        &self,
        instance_id: &str,
        port: Option<u16>,
    ) -> Result<SocketAddr, EgressError> {
        self.attach(instance_id);
        let mut instances = self.instances();
        let attached = instances
            .get_mut(instance_id)
            .ok_or_else(|| EgressError::NotAttached(instance_id.to_string()))?;
        if let Some((addr, _)) = &attached.listener {
            return Ok(*addr);
        }
        let wanted = SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(0)));
        let listener = bind(wanted)?;
        let addr = listener.local_addr().map_err(|source| EgressError::Bind {
            addr: wanted,
            source,
        })?;
        let task = tokio::spawn(accept_loop(listener, attached.instance.clone()));
        tracing::info!(instance = instance_id, %addr, "egress proxy listening (tests only)");
        attached.listener = Some((addr, task));
        Ok(addr)
    }

    /// The address of an attached instance's loopback listener, if it has one.
    pub fn address(&self, instance_id: &str) -> Option<SocketAddr> {
        self.instances()
            .get(instance_id)
            .and_then(|a| a.listener.as_ref().map(|(addr, _)| *addr))
    }

    /// Replaces the instance's whole rule set. Atomic: every request uses all of the old set
    /// or all of the new one; requests read the set when they arrive, so once this returns,
    /// every later request (also on connections already open) uses the new set.
    ///
    /// A rule that cannot be applied (bad header name or value) rejects the whole set and
    /// keeps the old one; the error names the rule's index, never its value.
    pub fn set_rules(&self, instance_id: &str, rules: Vec<InjectRule>) -> Result<(), EgressError> {
        let instances = self.instances();
        let attached = instances
            .get(instance_id)
            .ok_or_else(|| EgressError::NotAttached(instance_id.to_string()))?;
        // Under the map lock, so generations of one instance are strictly increasing.
        let generation = attached.instance.rules.load().generation + 1;
        let set = RuleSet::compile(&rules, generation, &attached.instance.shared.fingerprints)?;
        attached.instance.rules.store(Arc::new(set));
        tracing::info!(
            instance = instance_id,
            rules = rules.len(),
            generation,
            "egress rules replaced"
        );
        Ok(())
    }

    /// How many times the instance's rules were set (0: never), for callers and tests that
    /// want to know whether a swap happened without seeing any value.
    pub fn rules_generation(&self, instance_id: &str) -> Option<u64> {
        self.instances()
            .get(instance_id)
            .map(|a| a.instance.rules.load().generation)
    }

    /// "Test credential": one `GET url` (HTTPS, to a host one of the instance's credentials is
    /// injected for) made from the host through the instance's current rules — nothing runs in
    /// the guest. The injections are recorded in the usage trail as `test`. Returns the status
    /// and the credentials (name, fingerprint) that went with it.
    pub async fn test_request(
        &self,
        instance_id: &str,
        url: &str,
    ) -> Result<TestOutcome, EgressError> {
        let instance = self
            .instances()
            .get(instance_id)
            .map(|a| a.instance.clone())
            .ok_or_else(|| EgressError::NotAttached(instance_id.to_string()))?;
        crate::serve::test_request(&instance, url).await
    }

    /// Stops the instance's listener, closes its open connections and drops its rules.
    /// Returns once the port is released and every connection task has ended. Idempotent.
    pub async fn detach(&self, instance_id: &str) {
        let Some(attached) = self.instances().remove(instance_id) else {
            return;
        };
        attached.instance.rules.store(Arc::new(RuleSet::default()));
        attached.instance.tasks.stop();
        if let Some((_, listener)) = attached.listener
            && let Err(error) = listener.await
        {
            tracing::warn!(instance = instance_id, %error, "egress listener task failed");
        }
        attached.instance.tasks.wait().await;
        tracing::info!(instance = instance_id, "egress proxy detached");
    }

    /// An attached instance, for a connection to serve (`None`: not attached; the connection
    /// is dropped, so closed).
    fn attached(&self, instance_id: &str) -> Option<Arc<Instance>> {
        let found = self
            .instances()
            .get(instance_id)
            .map(|a| a.instance.clone());
        if found.is_none() {
            tracing::debug!(instance = instance_id, "connection for a detached instance");
        }
        found
    }

    fn instances(&self) -> MutexGuard<'_, HashMap<String, Attached>> {
        // The map is only ever updated by whole inserts/removes, so a poisoned lock still
        // guards a consistent map.
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, EgressError> {
    let fail = |source| EgressError::Bind { addr, source };
    let socket = TcpSocket::new_v4().map_err(fail)?;
    // Re-attaching to the same port right after a detach must not trip on TIME_WAIT.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

async fn accept_loop(listener: TcpListener, instance: Arc<Instance>) {
    loop {
        tokio::select! {
            () = instance.tasks.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = crate::serve::guest_connection(stream, instance.clone());
                    instance.tasks.spawn(conn);
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(instance = %instance.id, %error, "egress accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
