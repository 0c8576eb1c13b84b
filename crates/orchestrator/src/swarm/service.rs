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

/// A removed task gets this long between SIGTERM and SIGKILL (ns).
const STOP_GRACE_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub published_port: u16,
    /// An overlay network to attach, when one is usable.
    pub network: Option<&'a str>,
    pub init: bool,
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
    let labels: std::collections::HashMap<String, String> =
        spec.labels.clone().into_iter().collect();
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
        nano_cpus: cpu_limits(spec.cpus).map(|(quota, period)| quota * 1_000_000_000 / period),
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
        name: Some(spec.name.clone()),
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
