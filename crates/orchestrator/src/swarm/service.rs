//! `RuntimeSpec` → a Swarm service spec (executor-api §19.4 "Docker
//! Swarm"). Pure, so the mapping is tested without an engine.
//!
//! One replica; port 3000 published in `host` mode on a port chosen by the
//! backend (the ingress routing mesh needs IPVS, which this kernel lacks,
//! and host mode needs a fixed published port); the spec's command as the
//! container's arguments (the image's entrypoint stays, as with `docker
//! run`).

use crate::docker::create::{binds, cpu_limits, environment, memory_bytes, WORKDIR};
use crate::docker::RUNTIME_PORT;
use crate::{RestartPolicy, Result, RuntimeSpec};
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, Limit, Mount, MountType, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

/// Label the engine puts on a service's task containers.
pub const SERVICE_NAME_LABEL: &str = "com.docker.swarm.service.name";

/// The runtime's own name, on the service and its task containers: the
/// service name may differ from it (see [`service_name`]).
pub const RUNTIME_NAME_LABEL: &str = "opr-runtime-name";

/// Swarm service names are DNS labels: at most 63 characters, letters,
/// digits, `-` and `_`, starting and ending with a letter or digit.
const MAX_SERVICE_NAME: usize = 63;

/// A removed task gets this long between SIGTERM and SIGKILL (ns).
const STOP_GRACE_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub published_port: u16,
    /// An overlay network to attach, when one is usable.
    pub network: Option<&'a str>,
    pub init: bool,
    /// CPUs of the node: the engine refuses a task limit above them, where
    /// a container quota above them is merely never reached.
    pub max_cpus: f64,
}

/// The service name of runtime `runtime`: the name itself when Swarm takes
/// it, else (a 64-character runtime id after the executor's prefix, or
/// characters Swarm refuses) a readable start plus a hash of the whole name,
/// so that distinct runtimes keep distinct services. Stable across
/// executor restarts (FNV-1a, not the std hasher, whose output may change).
pub fn service_name(runtime: &str) -> String {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let edges_ok = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
    };
    if runtime.len() <= MAX_SERVICE_NAME && runtime.chars().all(valid_char) && edges_ok(runtime) {
        return runtime.to_owned();
    }
    let hash = runtime.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let suffix = format!("-{hash:016x}");
    let keep = MAX_SERVICE_NAME - suffix.len();
    let start: String = runtime
        .chars()
        .map(|c| if valid_char(c) { c } else { '-' })
        .take(keep)
        .collect();
    let start = start.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let start = if start.is_empty() { "r" } else { start };
    format!("{start}{suffix}")
}

/// CPUs for a task limit: at most the node's (see [`Options::max_cpus`]).
pub fn task_cpus(cpus: f64, max_cpus: f64) -> f64 {
    if max_cpus > 0.0 {
        cpus.min(max_cpus)
    } else {
        cpus
    }
}

pub fn restart_policy(policy: RestartPolicy) -> TaskSpecRestartPolicy {
    let condition = match policy {
        RestartPolicy::No => TaskSpecRestartPolicyConditionEnum::NONE,
        RestartPolicy::OnFailure => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
        // Swarm has no "unless stopped": a service is never stopped, only
        // removed, so the two mean the same.
        RestartPolicy::Always | RestartPolicy::UnlessStopped => {
            TaskSpecRestartPolicyConditionEnum::ANY
        }
    };
    TaskSpecRestartPolicy {
        condition: Some(condition),
        ..Default::default()
    }
}

/// Bind mounts of executor-api §7.4, as the service API spells them.
pub fn mounts(spec: &RuntimeSpec) -> Result<Vec<Mount>> {
    Ok(binds(&spec.mounts)?
        .into_iter()
        .filter_map(|b| {
            let mut parts = b.splitn(3, ':');
            let source = parts.next()?.to_owned();
            let target = parts.next()?.to_owned();
            Some(Mount {
                source: Some(source),
                target: Some(target),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            })
        })
        .collect())
}

pub fn service_spec(spec: &RuntimeSpec, options: &Options<'_>) -> Result<ServiceSpec> {
    let mut labels: std::collections::HashMap<String, String> =
        spec.labels.clone().into_iter().collect();
    labels.insert(RUNTIME_NAME_LABEL.to_owned(), spec.name.clone());
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        args: Some(spec.command.clone()),
        hostname: Some(spec.hostname.clone()).filter(|h| !h.is_empty()),
        env: Some(environment(spec)),
        dir: Some(WORKDIR.into()),
        mounts: Some(mounts(spec)?),
        init: options.init.then_some(true),
        stop_grace_period: Some(STOP_GRACE_NS),
        ..Default::default()
    };
    let limits = Limit {
        nano_cpus: cpu_limits(task_cpus(spec.cpus, options.max_cpus))
            .map(|(quota, period)| quota * 1_000_000_000 / period),
        memory_bytes: memory_bytes(spec.memory_mb),
        pids: (spec.pids_limit > 0).then(|| i64::try_from(spec.pids_limit).unwrap_or(i64::MAX)),
    };
    let networks = options.network.map(|n| {
        vec![NetworkAttachmentConfig {
            target: Some(n.to_owned()),
            ..Default::default()
        }]
    });
    Ok(ServiceSpec {
        name: Some(service_name(&spec.name)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(limits),
                ..Default::default()
            }),
            restart_policy: Some(restart_policy(spec.restart)),
            networks,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(RUNTIME_PORT)),
                published_port: Some(i64::from(options.published_port)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The host-mode published port of a service spec.
pub fn published_port(spec: &ServiceSpec) -> Option<u16> {
    spec.endpoint_spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.target_port == Some(i64::from(RUNTIME_PORT)))?
        .published_port
        .and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mounts, LABEL_EXECUTOR};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            name: "exec1-rt1".into(),
            hostname: "0123456789abcdef0123456789abcdef".into(),
            image: "openruntimes/python:v5-3.12".into(),
            command: vec!["opr-runtime".into(), "--standby".into()],
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            mounts: Mounts {
                tmp: PathBuf::from("/w/src"),
                code: PathBuf::from("/w/builds"),
                logs: PathBuf::from("/w/logs"),
                logging: PathBuf::from("/w/logging"),
                cache: None,
            },
            labels: BTreeMap::from([(LABEL_EXECUTOR.to_string(), "exec1".to_string())]),
            cpus: 0.5,
            memory_mb: 64,
            pids_limit: 100,
            restart: RestartPolicy::Always,
            network: None,
        }
    }

    #[test]
    fn service_from_spec() {
        let s = service_spec(
            &spec(),
            &Options {
                published_port: 40123,
                network: Some("opr-net"),
                init: true,
                max_cpus: 2.0,
            },
        )
        .expect("spec");
        assert_eq!(s.name.as_deref(), Some("exec1-rt1"));
        assert_eq!(
            s.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EXECUTOR))
                .cloned(),
            Some("exec1".to_string())
        );
        assert_eq!(published_port(&s), Some(40123));
        let port = &s
            .endpoint_spec
            .as_ref()
            .expect("endpoint")
            .ports
            .as_ref()
            .expect("ports")[0];
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.target_port, Some(3000));
        let task = s.task_template.expect("task");
        let c = task.container_spec.expect("container");
        assert_eq!(c.args, Some(vec!["opr-runtime".into(), "--standby".into()]));
        assert_eq!(c.command, None);
        assert_eq!(c.dir.as_deref(), Some("/usr/local/server"));
        assert_eq!(
            c.env,
            Some(vec![
                "A=1".to_string(),
                "OPR_RUNTIME_LANGUAGE=python".to_string()
            ])
        );
        assert_eq!(c.init, Some(true));
        assert_eq!(
            c.labels.and_then(|l| l.get(LABEL_EXECUTOR).cloned()),
            Some("exec1".to_string())
        );
        let m = c.mounts.expect("mounts");
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].source.as_deref(), Some("/w/src"));
        assert_eq!(m[0].target.as_deref(), Some("/tmp"));
        assert_eq!(m[0].typ, Some(MountType::BIND));
        let limits = task.resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(limits.memory_bytes, Some(64_000_000));
        assert_eq!(limits.pids, Some(100));
        assert_eq!(
            task.restart_policy.and_then(|r| r.condition),
            Some(TaskSpecRestartPolicyConditionEnum::ANY)
        );
        assert_eq!(
            task.networks.expect("networks")[0].target.as_deref(),
            Some("opr-net")
        );
    }

    #[test]
    fn long_or_odd_runtime_names_get_valid_distinct_service_names() {
        assert_eq!(service_name("exec1-rt1"), "exec1-rt1");
        let long_a = format!("t-0123abcd-{}", "a".repeat(64));
        let long_b = format!("t-0123abcd-{}b", "a".repeat(63));
        for (name, other) in [
            (long_a.as_str(), long_b.as_str()),
            ("exec1-my.func", "exec1-my-func"),
            ("exec1-end-", "exec1-end"),
            ("-lead", "lead"),
        ] {
            let s = service_name(name);
            assert!(s.len() <= 63, "{s}");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{s}"
            );
            assert!(s.starts_with(|c: char| c.is_ascii_alphanumeric()), "{s}");
            assert!(s.ends_with(|c: char| c.is_ascii_alphanumeric()), "{s}");
            assert_ne!(s, service_name(other), "{name} vs {other}");
            assert_eq!(s, service_name(name), "stable");
        }
        assert!(service_name(&long_a).starts_with("t-0123abcd-aaaa"));
    }

    #[test]
    fn task_cpus_are_capped_at_the_node() {
        assert_eq!(task_cpus(4.0, 2.0), 2.0);
        assert_eq!(task_cpus(0.5, 2.0), 0.5);
        assert_eq!(task_cpus(4.0, 0.0), 4.0);
        let mut big = spec();
        big.cpus = 8.0;
        let s = service_spec(
            &big,
            &Options {
                published_port: 1,
                network: None,
                init: false,
                max_cpus: 2.0,
            },
        )
        .expect("spec");
        let limits = s
            .task_template
            .and_then(|t| t.resources)
            .and_then(|r| r.limits)
            .expect("limits");
        assert_eq!(limits.nano_cpus, Some(2_000_000_000));
        assert_eq!(
            s.labels.and_then(|l| l.get(RUNTIME_NAME_LABEL).cloned()),
            Some("exec1-rt1".to_string())
        );
    }

    #[test]
    fn restart_conditions() {
        for (p, c) in [
            (RestartPolicy::No, TaskSpecRestartPolicyConditionEnum::NONE),
            (
                RestartPolicy::OnFailure,
                TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            ),
            (
                RestartPolicy::Always,
                TaskSpecRestartPolicyConditionEnum::ANY,
            ),
            (
                RestartPolicy::UnlessStopped,
                TaskSpecRestartPolicyConditionEnum::ANY,
            ),
        ] {
            assert_eq!(restart_policy(p).condition, Some(c));
        }
    }
}
