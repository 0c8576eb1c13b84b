//! The Docker backend (DESIGN §3, executor-api §19.3): each runtime is a
//! container created and started through the Engine API (`bollard`), its
//! port 3000 published on 127.0.0.1 and reached there.
//!
//! - [`client`]: connecting, API errors;
//! - [`create`]: `RuntimeSpec` → container create body (pure);
//! - [`exec`]: `execute` (attach, demultiplex, exit code, timeout kill);
//! - [`images`]: image names, aliases and pool keys (pure);
//! - [`context`]: build contexts filtered by a `.dockerignore` (pure);
//! - [`build`]: `opr images build` (base image, runtime images, aliases);
//! - [`stats`]: CPU and memory per runtime; [`logs`]: container output.

pub mod build;
pub mod client;
pub mod context;
pub mod create;
pub mod exec;
pub mod images;
pub mod logs;
pub mod stats;

use crate::{
    ExecOutcome, Orchestrator, OrchestratorError, RestartPolicy, Result, RuntimeInfo, RuntimeSpec,
    RuntimeStats,
};
use async_trait::async_trait;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use client::{api_failed, status_of};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Runtimes listen on this port inside their container (runtime-protocol).
pub const RUNTIME_PORT: u16 = 3000;

/// Attempts at creating a container whose fixed host port turned out taken.
const PORT_ATTEMPTS: usize = 4;

#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    /// `None`: `$DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// `stats` reports containers whose `openruntimes-executor` label has
    /// this value; empty: every container carrying the label.
    pub executor_name: String,
    /// Run Docker's init (tini) as PID 1 of each runtime: reaps zombies and
    /// forwards signals. Default true.
    pub init: bool,
    /// Per-request timeout of the Engine API (until response headers;
    /// streams such as exec output are not limited by it).
    pub request_timeout: Duration,
}

impl DockerConfig {
    pub fn new(executor_name: impl Into<String>) -> Self {
        DockerConfig {
            host: None,
            executor_name: executor_name.into(),
            init: true,
            request_timeout: Duration::from_secs(120),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn failed(msg: impl Into<String>) -> OrchestratorError {
    OrchestratorError::Failed(msg.into())
}

pub struct DockerBackend {
    docker: Docker,
    config: DockerConfig,
    /// Images seen present: `ensure_image` asks the engine once per name;
    /// a create that finds the image gone forgets it.
    images: Mutex<HashSet<String>>,
    /// Published address per runtime, looked up once.
    addresses: Mutex<HashMap<String, SocketAddr>>,
    stats: stats::Sampler,
}

impl DockerBackend {
    /// Connects to the engine and checks that it answers (negotiating the
    /// API version down to the engine's).
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        let docker = client::connect(config.host.as_deref(), config.request_timeout).await?;
        Ok(Self::with_client(docker, config))
    }

    /// Uses an existing connection.
    pub fn with_client(docker: Docker, config: DockerConfig) -> Self {
        DockerBackend {
            docker,
            config,
            images: Mutex::new(HashSet::new()),
            addresses: Mutex::new(HashMap::new()),
            stats: stats::Sampler::default(),
        }
    }

    /// The engine connection (for image building and tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Creates a bridge network unless it exists.
    pub async fn create_network(&self, name: &str) -> Result<()> {
        create_bridge_network(&self.docker, name).await
    }

    /// Creates the container, creating its network on the way when missing.
    async fn create_container(&self, spec: &RuntimeSpec, host_port: Option<u16>) -> Result<()> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let mut network_created = false;
        loop {
            let body = create::container_body(
                spec,
                &create::Options {
                    init: self.config.init,
                    host_port,
                },
            )?;
            match self
                .docker
                .create_container(Some(options.clone()), body)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => match (status_of(&e), &spec.network) {
                    (Some(409), _) => {
                        return Err(OrchestratorError::AlreadyExists(spec.name.clone()))
                    }
                    (_, Some(net)) if !network_created && client::is_missing_network(&e, net) => {
                        create_bridge_network(&self.docker, net).await?;
                        network_created = true;
                    }
                    (Some(404), _) if client::is_missing_image(&e) => {
                        lock(&self.images).remove(&spec.image);
                        return Err(OrchestratorError::MissingImage(spec.image.clone()));
                    }
                    _ => return Err(api_failed(&format!("create {}", spec.name), &e)),
                },
            }
        }
    }

    async fn force_remove(&self, name: &str) -> std::result::Result<(), bollard::errors::Error> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.docker.remove_container(name, Some(options)).await
    }
}

/// `POST /networks/create` (bridge, not internal); an existing network is
/// fine.
pub(crate) async fn create_bridge_network(docker: &Docker, name: &str) -> Result<()> {
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".into()),
        internal: Some(false),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        // Old engines answer a duplicate name with 500 "already exists".
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(api_failed(&format!("create network {name}"), &e)),
    }
}

/// A port free on 127.0.0.1 right now, chosen by the OS.
pub(crate) fn free_port(ip: Ipv4Addr) -> Result<u16> {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| failed(format!("cannot find a free port: {e}")))
}

#[async_trait]
impl Orchestrator for DockerBackend {
    fn kind(&self) -> &'static str {
        "docker"
    }

    /// The image must exist locally: nothing can be pulled here (`opr
    /// images build` makes the images and their Open Runtimes names).
    async fn ensure_image(&self, image: &str) -> Result<()> {
        images::ensure_local(&self.docker, &self.images, image).await
    }

    async fn run(&self, spec: &RuntimeSpec) -> Result<()> {
        if spec.command.is_empty() {
            return Err(failed("empty command"));
        }
        // Docker gives a published port 0 a new number at every restart,
        // which would strand whoever remembered the address: a runtime
        // that restarts gets a fixed port instead.
        let fixed_port = spec.restart != RestartPolicy::No;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let host_port = if fixed_port {
                Some(free_port(Ipv4Addr::LOCALHOST)?)
            } else {
                None
            };
            self.create_container(spec, host_port).await?;
            let mut started = self.docker.start_container(&spec.name, None).await;
            // Engines that accept an unknown network at create refuse it at
            // start: create it, start again.
            if let (Err(e), Some(net)) = (&started, &spec.network) {
                if client::is_missing_network(e, net) {
                    if let Err(e) = create_bridge_network(&self.docker, net).await {
                        let _ = self.force_remove(&spec.name).await;
                        return Err(e);
                    }
                    started = self.docker.start_container(&spec.name, None).await;
                }
            }
            match started {
                Ok(()) => {
                    if let Some(p) = host_port {
                        lock(&self.addresses).insert(
                            spec.name.clone(),
                            SocketAddr::from((Ipv4Addr::LOCALHOST, p)),
                        );
                    }
                    return Ok(());
                }
                Err(e) => {
                    let _ = self.force_remove(&spec.name).await;
                    if fixed_port && attempt < PORT_ATTEMPTS && client::is_port_taken(&e) {
                        continue;
                    }
                    return Err(api_failed(&format!("start {}", spec.name), &e));
                }
            }
        }
    }

    async fn execute(
        &self,
        name: &str,
        argv: &[String],
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<ExecOutcome> {
        exec::run(&self.docker, name, argv, env, timeout).await
    }

    async fn remove(&self, name: &str) -> Result<()> {
        lock(&self.addresses).remove(name);
        self.stats.forget(name);
        match self.force_remove(name).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                Err(OrchestratorError::NotFound(name.to_owned()))
            }
            // Already being removed by someone else: gone soon.
            Err(e) if status_of(&e) == Some(409) && e.to_string().contains("in progress") => Ok(()),
            Err(e) => Err(api_failed(&format!("remove {name}"), &e)),
        }
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<RuntimeInfo>> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_failed("list containers", &e))?;
        let mut out: Vec<RuntimeInfo> = containers
            .into_iter()
            .filter_map(|c| {
                Some(RuntimeInfo {
                    name: client::container_name(c.names.as_deref()?)?,
                    status: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn address(&self, name: &str) -> Result<SocketAddr> {
        if let Some(a) = lock(&self.addresses).get(name) {
            return Ok(*a);
        }
        let info =
            self.docker
                .inspect_container(name, None)
                .await
                .map_err(|e| match status_of(&e) {
                    Some(404) => OrchestratorError::NotFound(name.to_owned()),
                    _ => api_failed(&format!("inspect {name}"), &e),
                })?;
        let ports = info.network_settings.and_then(|n| n.ports);
        let addr = client::published_address(ports.as_ref(), RUNTIME_PORT).ok_or_else(|| {
            failed(format!(
                "runtime {name} has no published port {RUNTIME_PORT} (not running?)"
            ))
        })?;
        lock(&self.addresses).insert(name.to_owned(), addr);
        Ok(addr)
    }

    async fn stats(&self) -> Result<Vec<RuntimeStats>> {
        self.stats
            .sample(&self.docker, &self.config.executor_name, |c| {
                client::container_name(c.names.as_deref()?)
            })
            .await
    }

    async fn logs(&self, name: &str, max_bytes: usize) -> Result<String> {
        logs::tail(&self.docker, name, max_bytes).await
    }

    /// `POST /containers/{name}/update`: a warm-pool runtime takes the
    /// function's limits without a restart.
    async fn set_limits(&self, name: &str, cpus: f64, memory_mb: u64) -> Result<()> {
        let body = create::update_body(cpus, memory_mb);
        self.docker
            .update_container(name, body)
            .await
            .map_err(|e| match status_of(&e) {
                Some(404) => OrchestratorError::NotFound(name.to_owned()),
                _ => api_failed(&format!("update limits of {name}"), &e),
            })
    }

    /// Runtime images made by `opr images build` share one pool per
    /// language; any other image pools alone (see [`images::pool_key`]).
    fn pool_key(&self, image: &str) -> String {
        images::pool_key(image)
    }
}
