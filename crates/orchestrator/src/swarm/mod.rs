//! The Swarm backend (DESIGN §3, executor-api §19.4): each runtime is a
//! one-replica service. Its port 3000 is published in `host` mode on a port
//! this backend picks (no routing mesh: it needs IPVS), `execute`, `logs`
//! and `set_limits` act on the service's task container, found by the
//! engine's `com.docker.swarm.service.name` label. Built for a single-node
//! swarm, the engine this executor talks to (docs/docker.md).
//!
//! - [`service`]: `RuntimeSpec` → service spec (pure).

pub mod service;

use crate::docker::client::{self, api_failed, status_of};
use crate::docker::{create, exec, failed, images, lock, logs, stats};
use crate::{
    ExecOutcome, Orchestrator, OrchestratorError, Result, RuntimeInfo, RuntimeSpec, RuntimeStats,
};
use async_trait::async_trait;
use bollard::models::{LocalNodeState, NetworkCreateRequest, SwarmInitRequest, TaskState};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use service::{service_name, task_cpus, RUNTIME_NAME_LABEL, SERVICE_NAME_LABEL};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts at a service whose published port turned out taken.
const PORT_ATTEMPTS: usize = 4;

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Engine address; `None`: `$DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// `stats` reports runtimes labelled with this executor (empty: all).
    pub executor_name: String,
    /// Make this engine a single-node swarm manager when it is in no swarm.
    pub init_swarm: bool,
    /// Address the swarm is initialised with (`--advertise-addr`; it also
    /// listens there, on port 2377).
    pub advertise_addr: String,
    /// Docker's init (tini) as PID 1 of each task.
    pub init: bool,
    /// How long `run` waits for the task to be running.
    pub start_timeout: Duration,
    pub request_timeout: Duration,
}

impl SwarmConfig {
    pub fn new(executor_name: impl Into<String>) -> Self {
        SwarmConfig {
            host: None,
            executor_name: executor_name.into(),
            init_swarm: true,
            advertise_addr: "127.0.0.1".into(),
            init: true,
            start_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
        }
    }
}

pub struct SwarmBackend {
    docker: Docker,
    config: SwarmConfig,
    images: Mutex<HashSet<String>>,
    /// Published port per runtime.
    ports: Mutex<HashMap<String, u16>>,
    /// Ports handed out and not yet released: the OS may offer a port
    /// again before the engine has bound it.
    reserved: Mutex<HashSet<u16>>,
    /// Networks tried: usable (an attachable overlay) or not.
    networks: Mutex<HashMap<String, bool>>,
    /// CPUs of the node (0: unknown).
    max_cpus: f64,
    stats: stats::Sampler,
}

impl SwarmBackend {
    /// Connects, and initialises a single-node swarm when the engine is in
    /// none (unless `init_swarm` is false: then that is an error).
    pub async fn connect(config: SwarmConfig) -> Result<Self> {
        let docker = client::connect(config.host.as_deref(), config.request_timeout).await?;
        let info = docker
            .info()
            .await
            .map_err(|e| api_failed("system info", &e))?;
        let max_cpus = info.ncpu.map_or(0.0, |n| n as f64);
        let state = info.swarm.and_then(|s| s.local_node_state);
        match state {
            Some(LocalNodeState::ACTIVE) => {}
            _ if config.init_swarm => {
                let request = SwarmInitRequest {
                    listen_addr: Some(format!("{}:2377", config.advertise_addr)),
                    advertise_addr: Some(config.advertise_addr.clone()),
                    ..Default::default()
                };
                match docker.init_swarm(request).await {
                    Ok(_) => tracing::info!("initialised a single-node swarm"),
                    // Initialised meanwhile by someone else.
                    Err(e)
                        if status_of(&e) == Some(503) || e.to_string().contains("already part") => {
                    }
                    Err(e) => return Err(api_failed("swarm init", &e)),
                }
            }
            other => {
                return Err(failed(format!(
                    "this engine is not a swarm manager (state {other:?}): run `docker swarm \
                     init --advertise-addr 127.0.0.1`"
                )))
            }
        }
        Ok(SwarmBackend {
            docker,
            config,
            images: Mutex::new(HashSet::new()),
            ports: Mutex::new(HashMap::new()),
            reserved: Mutex::new(HashSet::new()),
            networks: Mutex::new(HashMap::new()),
            max_cpus,
            stats: stats::Sampler::default(),
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn reserve_port(&self) -> Result<u16> {
        for _ in 0..16 {
            // Host-mode ports are bound on every interface.
            let port = crate::docker::free_port(Ipv4Addr::UNSPECIFIED)?;
            if lock(&self.reserved).insert(port) {
                return Ok(port);
            }
        }
        Err(failed("cannot find a free port"))
    }

    fn release_port(&self, name: &str) {
        if let Some(p) = lock(&self.ports).remove(name) {
            lock(&self.reserved).remove(&p);
        }
    }

    /// An attachable overlay network named `name`, created if missing;
    /// `None` when overlays cannot be made here (the runtime is still
    /// reached on its published port).
    async fn network(&self, name: &str) -> Option<String> {
        if let Some(ok) = lock(&self.networks).get(name) {
            return ok.then(|| name.to_owned());
        }
        let ok = match self.docker.inspect_network(name, None).await {
            Ok(n) => n.scope.as_deref() == Some("swarm"),
            Err(_) => {
                let request = NetworkCreateRequest {
                    name: name.to_owned(),
                    driver: Some("overlay".into()),
                    attachable: Some(true),
                    ..Default::default()
                };
                match self.docker.create_network(request).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(network = name, "no overlay network, running without: {e}");
                        false
                    }
                }
            }
        };
        lock(&self.networks).insert(name.to_owned(), ok);
        ok.then(|| name.to_owned())
    }

    /// Waits until the service's task runs. `Err(Some(msg))`: the task
    /// failed with `msg`; `Err(None)`: timed out.
    async fn wait_running(&self, name: &str) -> std::result::Result<(), Option<String>> {
        let deadline = Instant::now() + self.config.start_timeout;
        let filters = HashMap::from([("service", vec![service_name(name)])]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let mut pause = Duration::from_millis(5);
        loop {
            let tasks = self
                .docker
                .list_tasks(Some(options.clone()))
                .await
                .map_err(|e| Some(e.to_string()))?;
            for t in &tasks {
                let Some(status) = &t.status else { continue };
                // Started is what counts, as for a container: a task that
                // ran and exited (message "started") was started.
                let ran = status.message.as_deref() == Some("started");
                match status.state {
                    Some(TaskState::RUNNING | TaskState::COMPLETE) => return Ok(()),
                    Some(TaskState::FAILED) if ran => return Ok(()),
                    Some(TaskState::FAILED | TaskState::REJECTED) => {
                        return Err(Some(
                            status
                                .err
                                .clone()
                                .or_else(|| status.message.clone())
                                .unwrap_or_else(|| "task failed".into()),
                        ))
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The service's task containers (running first, newest first).
    async fn task_containers(&self, name: &str, all: bool) -> Result<Vec<String>> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{SERVICE_NAME_LABEL}={}", service_name(name))],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(all)
            .filters(&filters)
            .build();
        let mut list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_failed("list containers", &e))?;
        list.sort_by_key(|c| {
            let running = c.state.map(|s| s.to_string()) == Some("running".into());
            (!running, std::cmp::Reverse(c.created.unwrap_or(0)))
        });
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// The running task container of a runtime.
    async fn task_container(&self, name: &str) -> Result<String> {
        if let Some(id) = self.task_containers(name, false).await?.into_iter().next() {
            return Ok(id);
        }
        match self.docker.inspect_service(&service_name(name), None).await {
            Ok(_) => Err(failed(format!("runtime {name} is not running"))),
            Err(e) if status_of(&e) == Some(404) => {
                Err(OrchestratorError::NotFound(name.to_owned()))
            }
            Err(e) => Err(api_failed(&format!("inspect service {name}"), &e)),
        }
    }

    async fn delete(&self, name: &str) -> std::result::Result<(), bollard::errors::Error> {
        let r = self.docker.delete_service(&service_name(name)).await;
        // The engine stops the tasks in its own time: kill them now so that
        // the runtime is gone when `remove` returns.
        if let Ok(ids) = self.task_containers(name, true).await {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            for id in ids {
                let _ = self
                    .docker
                    .remove_container(&id, Some(options.clone()))
                    .await;
            }
        }
        r
    }
}

#[async_trait]
impl Orchestrator for SwarmBackend {
    fn kind(&self) -> &'static str {
        "swarm"
    }

    /// The image must be on this node already (`opr images build`).
    async fn ensure_image(&self, image: &str) -> Result<()> {
        images::ensure_local(&self.docker, &self.images, image).await
    }

    async fn run(&self, spec: &RuntimeSpec) -> Result<()> {
        if spec.command.is_empty() {
            return Err(failed("empty command"));
        }
        // Services, unlike containers, need their bind sources to exist.
        let m = &spec.mounts;
        for p in [&m.tmp, &m.code, &m.logs, &m.logging]
            .into_iter()
            .chain(m.cache.as_ref())
        {
            std::fs::create_dir_all(p)
                .map_err(|e| failed(format!("cannot create mount folder {}: {e}", p.display())))?;
        }
        let network = match &spec.network {
            Some(n) => self.network(n).await,
            None => None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let port = self.reserve_port()?;
            lock(&self.ports).insert(spec.name.clone(), port);
            let body = service::service_spec(
                spec,
                &service::Options {
                    published_port: port,
                    network: network.as_deref(),
                    init: self.config.init,
                    max_cpus: self.max_cpus,
                },
            )
            .inspect_err(|_| self.release_port(&spec.name))?;
            if let Err(e) = self.docker.create_service(body, None).await {
                self.release_port(&spec.name);
                return Err(match status_of(&e) {
                    Some(409) => OrchestratorError::AlreadyExists(spec.name.clone()),
                    _ => api_failed(&format!("create service {}", spec.name), &e),
                });
            }
            match self.wait_running(&spec.name).await {
                Ok(()) => return Ok(()),
                Err(why) => {
                    let _ = self.delete(&spec.name).await;
                    self.release_port(&spec.name);
                    let why = why.unwrap_or_else(|| {
                        format!(
                            "task not running within {} s",
                            self.config.start_timeout.as_secs()
                        )
                    });
                    let lower = why.to_ascii_lowercase();
                    if lower.contains("no such image") {
                        lock(&self.images).remove(&spec.image);
                        return Err(OrchestratorError::MissingImage(spec.image.clone()));
                    }
                    let port_taken = lower.contains("port") && lower.contains("in use")
                        || lower.contains("already allocated")
                        || lower.contains("address already in use");
                    if !(port_taken && attempt < PORT_ATTEMPTS) {
                        return Err(failed(format!("service {}: {why}", spec.name)));
                    }
                }
            }
        }
        Err(failed(format!("service {}: no free port", spec.name)))
    }

    async fn execute(
        &self,
        name: &str,
        argv: &[String],
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<ExecOutcome> {
        let id = self.task_container(name).await?;
        exec::run(&self.docker, &id, argv, env, timeout)
            .await
            .map_err(|e| match e {
                OrchestratorError::NotFound(_) => OrchestratorError::NotFound(name.to_owned()),
                other => other,
            })
    }

    async fn remove(&self, name: &str) -> Result<()> {
        self.stats.forget(name);
        let r = self.delete(name).await;
        self.release_port(name);
        match r {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                Err(OrchestratorError::NotFound(name.to_owned()))
            }
            Err(e) => Err(api_failed(&format!("remove service {name}"), &e)),
        }
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<RuntimeInfo>> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListServicesOptionsBuilder::new()
            .filters(&filters)
            .status(true)
            .build();
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(|e| api_failed("list services", &e))?;
        let mut out: Vec<RuntimeInfo> = services
            .into_iter()
            .filter_map(|s| {
                let spec = s.spec?;
                let mut labels = spec.labels.unwrap_or_default();
                // Ours, not the caller's: it only carries the name back.
                let name = labels.remove(RUNTIME_NAME_LABEL).or(spec.name)?;
                let running = s
                    .service_status
                    .and_then(|st| st.running_tasks)
                    .unwrap_or(0);
                Some(RuntimeInfo {
                    name,
                    status: if running > 0 { "running" } else { "exited" }.to_owned(),
                    labels: labels.into_iter().collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn address(&self, name: &str) -> Result<SocketAddr> {
        let known = lock(&self.ports).get(name).copied();
        let port = match known {
            Some(p) => p,
            None => {
                let s = self
                    .docker
                    .inspect_service(&service_name(name), None)
                    .await
                    .map_err(|e| match status_of(&e) {
                        Some(404) => OrchestratorError::NotFound(name.to_owned()),
                        _ => api_failed(&format!("inspect service {name}"), &e),
                    })?;
                let p = s
                    .spec
                    .as_ref()
                    .and_then(service::published_port)
                    .ok_or_else(|| failed(format!("service {name} publishes no port 3000")))?;
                lock(&self.ports).insert(name.to_owned(), p);
                lock(&self.reserved).insert(p);
                p
            }
        };
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    async fn stats(&self) -> Result<Vec<RuntimeStats>> {
        self.stats
            .sample(&self.docker, &self.config.executor_name, |c| {
                let labels = c.labels.as_ref()?;
                labels
                    .get(RUNTIME_NAME_LABEL)
                    .or_else(|| labels.get(SERVICE_NAME_LABEL))
                    .cloned()
            })
            .await
    }

    async fn logs(&self, name: &str, max_bytes: usize) -> Result<String> {
        let Some(id) = self.task_containers(name, true).await?.into_iter().next() else {
            return match self.docker.inspect_service(&service_name(name), None).await {
                Ok(_) => Ok(String::new()),
                Err(_) => Err(OrchestratorError::NotFound(name.to_owned())),
            };
        };
        logs::tail(&self.docker, &id, max_bytes).await
    }

    /// Updates the running task container in place: a service update would
    /// replace the task (a new container, losing a warm runtime's state).
    /// The service spec keeps its limits, so a task the swarm reschedules
    /// starts with those.
    async fn set_limits(&self, name: &str, cpus: f64, memory_mb: u64) -> Result<()> {
        let id = self.task_container(name).await?;
        self.docker
            .update_container(
                &id,
                create::update_body_nano(task_cpus(cpus, self.max_cpus), memory_mb),
            )
            .await
            .map_err(|e| api_failed(&format!("update limits of {name}"), &e))
    }

    fn pool_key(&self, image: &str) -> String {
        images::pool_key(image)
    }
}
