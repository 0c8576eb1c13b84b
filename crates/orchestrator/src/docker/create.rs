//! `RuntimeSpec` → the body of `POST /containers/create` (executor-api
//! §7.4, §7.5, §19.3). Pure, so the mapping is tested without an engine.

use super::RUNTIME_PORT;
use crate::{language_of_image, Mounts, OrchestratorError, RestartPolicy, Result, RuntimeSpec};
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, HostConfigLogConfig, PortBinding,
    RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use std::collections::HashMap;
use std::path::Path;

/// Working directory of every runtime (runtime-protocol §5.2).
pub const WORKDIR: &str = "/usr/local/server";
/// CPU limits are quotas per period of 100 ms (executor-api §7.5).
pub const CPU_PERIOD: i64 = 100_000;
/// Container output kept by the engine for `logs`.
const LOG_MAX_SIZE: &str = "10m";

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Docker's init (tini) as PID 1.
    pub init: bool,
    /// Publish port 3000 on this host port; `None`: let the engine choose.
    pub host_port: Option<u16>,
}

/// `(CpuQuota, CpuPeriod)` for `cpus` cores; none when `cpus` is not
/// positive.
pub fn cpu_limits(cpus: f64) -> Option<(i64, i64)> {
    (cpus.is_finite() && cpus > 0.0).then(|| {
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        // The engine refuses quotas under 1 ms.
        (quota.max(1_000), CPU_PERIOD)
    })
}

/// Memory in bytes: decimal megabytes (executor-api §7.5); none for 0.
pub fn memory_bytes(memory_mb: u64) -> Option<i64> {
    (memory_mb > 0).then(|| i64::try_from(memory_mb.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
}

pub fn restart_policy(policy: RestartPolicy) -> DockerRestart {
    let name = match policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    DockerRestart {
        name: Some(name),
        maximum_retry_count: None,
    }
}

/// `host:container:rw` binds of executor-api §7.4. A host path the bind
/// syntax cannot carry (`:` or `,`) is refused rather than misread.
pub fn binds(mounts: &Mounts) -> Result<Vec<String>> {
    let mut pairs: Vec<(&Path, &str)> = vec![
        (&mounts.tmp, "/tmp"),
        (&mounts.code, "/mnt/code"),
        (&mounts.logs, "/mnt/logs"),
        (&mounts.logging, "/tmp/logging"),
    ];
    if let Some(cache) = &mounts.cache {
        pairs.push((cache, "/cache"));
    }
    pairs
        .into_iter()
        .map(|(host, target)| {
            let host = host
                .to_str()
                .filter(|h| h.starts_with('/') && !h.contains([':', ',']) && !h.contains('\n'));
            match host {
                Some(h) => Ok(format!("{h}:{target}:rw")),
                None => Err(OrchestratorError::Failed(format!(
                    "mount source for {target} must be an absolute path without ':' or ','"
                ))),
            }
        })
        .collect()
}

/// The spec's environment, plus `OPR_RUNTIME_LANGUAGE` from the image name
/// (for `opr-runtime --standby`) unless the spec sets it. `opr-runtime`
/// listens on 0.0.0.0:3000 by default, which is what a container needs.
pub fn environment(spec: &RuntimeSpec) -> Vec<String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !spec.env.contains_key("OPR_RUNTIME_LANGUAGE") {
        if let Some(lang) = language_of_image(&spec.image) {
            env.push(format!("OPR_RUNTIME_LANGUAGE={}", lang.name()));
        }
    }
    env
}

pub fn container_body(spec: &RuntimeSpec, options: &Options) -> Result<ContainerCreateBody> {
    let port_key = format!("{RUNTIME_PORT}/tcp");
    let binding = PortBinding {
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(options.host_port.map(|p| p.to_string()).unwrap_or_default()),
    };
    let (cpu_quota, cpu_period) = cpu_limits(spec.cpus).unzip();
    let memory = memory_bytes(spec.memory_mb);
    let host_config = HostConfig {
        binds: Some(binds(&spec.mounts)?),
        cpu_quota,
        cpu_period,
        memory,
        // No swap beyond the memory limit: the limit is the limit.
        memory_swap: memory,
        pids_limit: (spec.pids_limit > 0)
            .then(|| i64::try_from(spec.pids_limit).unwrap_or(i64::MAX)),
        restart_policy: Some(restart_policy(spec.restart)),
        port_bindings: Some(HashMap::from([(port_key.clone(), Some(vec![binding]))])),
        network_mode: spec.network.clone(),
        init: options.init.then_some(true),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".into(), LOG_MAX_SIZE.into()),
                ("max-file".into(), "1".into()),
            ])),
        }),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(spec.hostname.clone()).filter(|h| !h.is_empty()),
        cmd: Some(spec.command.clone()),
        env: Some(environment(spec)),
        working_dir: Some(WORKDIR.into()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: Some(vec![port_key]),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// `POST /containers/{id}/update` for new CPU and memory limits.
pub fn update_body(cpus: f64, memory_mb: u64) -> ContainerUpdateBody {
    let (cpu_quota, cpu_period) = cpu_limits(cpus).unwrap_or((-1, CPU_PERIOD));
    let memory = memory_bytes(memory_mb);
    ContainerUpdateBody {
        cpu_quota: Some(cpu_quota),
        cpu_period: Some(cpu_period),
        memory,
        memory_swap: memory,
        ..Default::default()
    }
}

/// The same for a container limited by `NanoCpus` (Swarm tasks): the
/// engine refuses quota and period there.
pub fn update_body_nano(cpus: f64, memory_mb: u64) -> ContainerUpdateBody {
    let memory = memory_bytes(memory_mb);
    ContainerUpdateBody {
        nano_cpus: Some(
            cpu_limits(cpus).map_or(0, |(quota, period)| quota * 1_000_000_000 / period),
        ),
        memory,
        memory_swap: memory,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LABEL_EXECUTOR, LABEL_RUNTIME_ID};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            name: "exec1-rt1".into(),
            hostname: "0123456789abcdef0123456789abcdef".into(),
            image: "openruntimes/node:v5-22".into(),
            command: vec!["bash".into(), "-c".into(), "echo hi".into()],
            env: BTreeMap::from([("OPEN_RUNTIMES_SECRET".to_string(), "s".to_string())]),
            mounts: Mounts {
                tmp: PathBuf::from("/w/rt1/src"),
                code: PathBuf::from("/w/rt1/builds"),
                logs: PathBuf::from("/w/rt1/logs"),
                logging: PathBuf::from("/w/rt1/logging"),
                cache: None,
            },
            labels: BTreeMap::from([
                (LABEL_EXECUTOR.to_string(), "exec1".to_string()),
                (LABEL_RUNTIME_ID.to_string(), "rt1".to_string()),
            ]),
            cpus: 0.5,
            memory_mb: 256,
            pids_limit: 128,
            restart: RestartPolicy::No,
            network: Some("openruntimes-runtimes".into()),
        }
    }

    const OPTS: Options = Options {
        init: true,
        host_port: None,
    };

    #[test]
    fn limits_and_resources() {
        let body = container_body(&spec(), &OPTS).expect("body");
        let hc = body.host_config.expect("host config");
        assert_eq!(hc.cpu_quota, Some(50_000));
        assert_eq!(hc.cpu_period, Some(100_000));
        assert_eq!(hc.memory, Some(256_000_000));
        assert_eq!(hc.memory_swap, Some(256_000_000));
        assert_eq!(hc.pids_limit, Some(128));
        assert_eq!(hc.init, Some(true));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(hc.network_mode.as_deref(), Some("openruntimes-runtimes"));
    }

    #[test]
    fn unlimited_when_zero() {
        let mut s = spec();
        s.cpus = 0.0;
        s.memory_mb = 0;
        s.pids_limit = 0;
        s.network = None;
        let hc = container_body(&s, &OPTS)
            .expect("body")
            .host_config
            .expect("host config");
        assert_eq!((hc.cpu_quota, hc.cpu_period, hc.memory), (None, None, None));
        assert_eq!(hc.pids_limit, None);
        assert_eq!(hc.network_mode, None);
        assert_eq!(cpu_limits(2.0), Some((200_000, 100_000)));
        assert_eq!(cpu_limits(0.001), Some((1_000, 100_000)));
        assert_eq!(cpu_limits(f64::NAN), None);
    }

    #[test]
    fn identity_command_and_environment() {
        let body = container_body(&spec(), &OPTS).expect("body");
        assert_eq!(body.image.as_deref(), Some("openruntimes/node:v5-22"));
        assert_eq!(
            body.hostname.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(body.working_dir.as_deref(), Some("/usr/local/server"));
        assert_eq!(
            body.cmd,
            Some(vec!["bash".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            body.env,
            Some(vec![
                "OPEN_RUNTIMES_SECRET=s".to_string(),
                "OPR_RUNTIME_LANGUAGE=node".to_string()
            ])
        );
        let labels = body.labels.expect("labels");
        assert_eq!(
            labels.get(LABEL_EXECUTOR).map(String::as_str),
            Some("exec1")
        );
        assert_eq!(
            labels.get(LABEL_RUNTIME_ID).map(String::as_str),
            Some("rt1")
        );

        // The spec's own language wins; unknown images get none.
        let mut s = spec();
        s.env.insert("OPR_RUNTIME_LANGUAGE".into(), "python".into());
        assert!(!environment(&s).contains(&"OPR_RUNTIME_LANGUAGE=node".to_string()));
        s.env.clear();
        s.image = "busybox".into();
        assert!(environment(&s).is_empty());
    }

    #[test]
    fn mounts_and_port() {
        let mut s = spec();
        s.mounts.cache = Some(PathBuf::from("/w/cache/k"));
        let body = container_body(&s, &OPTS).expect("body");
        assert_eq!(body.exposed_ports, Some(vec!["3000/tcp".to_string()]));
        let hc = body.host_config.expect("host config");
        assert_eq!(
            hc.binds,
            Some(vec![
                "/w/rt1/src:/tmp:rw".to_string(),
                "/w/rt1/builds:/mnt/code:rw".to_string(),
                "/w/rt1/logs:/mnt/logs:rw".to_string(),
                "/w/rt1/logging:/tmp/logging:rw".to_string(),
                "/w/cache/k:/cache:rw".to_string(),
            ])
        );
        let ports = hc.port_bindings.expect("ports");
        let b = ports
            .get("3000/tcp")
            .cloned()
            .flatten()
            .expect("3000 bound");
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b[0].host_port.as_deref(), Some(""));

        let fixed = container_body(
            &s,
            &Options {
                init: false,
                host_port: Some(41000),
            },
        )
        .expect("body");
        let hc = fixed.host_config.expect("host config");
        assert_eq!(hc.init, None);
        let b = hc.port_bindings.expect("ports")["3000/tcp"]
            .clone()
            .expect("bound");
        assert_eq!(b[0].host_port.as_deref(), Some("41000"));
    }

    #[test]
    fn unsafe_mount_paths_refused() {
        let mut s = spec();
        s.mounts.code = PathBuf::from("/w/a:b");
        assert!(container_body(&s, &OPTS).is_err());
        s.mounts.code = PathBuf::from("relative");
        assert!(container_body(&s, &OPTS).is_err());
    }

    #[test]
    fn restart_policies_map() {
        for (p, n) in [
            (RestartPolicy::No, RestartPolicyNameEnum::NO),
            (RestartPolicy::Always, RestartPolicyNameEnum::ALWAYS),
            (RestartPolicy::OnFailure, RestartPolicyNameEnum::ON_FAILURE),
            (
                RestartPolicy::UnlessStopped,
                RestartPolicyNameEnum::UNLESS_STOPPED,
            ),
        ] {
            assert_eq!(restart_policy(p).name, Some(n));
        }
    }

    #[test]
    fn update_sets_cpu_and_memory() {
        let u = update_body(1.5, 128);
        assert_eq!(u.cpu_quota, Some(150_000));
        assert_eq!(u.cpu_period, Some(100_000));
        assert_eq!(u.memory, Some(128_000_000));
        assert_eq!(u.memory_swap, Some(128_000_000));
        // No CPU limit: quota -1 lifts it.
        assert_eq!(update_body(0.0, 0).cpu_quota, Some(-1));
        let n = update_body_nano(0.25, 64);
        assert_eq!((n.nano_cpus, n.cpu_quota), (Some(250_000_000), None));
        assert_eq!(n.memory, Some(64_000_000));
        assert_eq!(update_body_nano(0.0, 64).nano_cpus, Some(0));
    }
}
