//! `stats`: CPU and memory per runtime container, from one-shot samples of
//! the stats API. CPU is the use since the previous call (or since the
//! container was created), as a percentage of one CPU.

use super::client::api_failed;
use crate::{Result, RuntimeStats, LABEL_EXECUTOR};
use bollard::models::{ContainerStatsResponse, ContainerSummary};
use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Stats requests in flight at once.
const PARALLEL: usize = 8;

#[derive(Default)]
pub struct Sampler {
    /// Last CPU sample per runtime: (total usage ns, when).
    prev: Mutex<HashMap<String, (u64, Instant)>>,
}

/// Memory as `docker stats` shows it: usage less the inactive page cache.
pub fn memory_in_use(s: &ContainerStatsResponse) -> Option<u64> {
    let m = s.memory_stats.as_ref()?;
    let usage = m.usage?;
    let inactive = m.stats.as_ref().and_then(|st| {
        st.get("total_inactive_file")
            .or_else(|| st.get("inactive_file"))
            .copied()
    });
    Some(usage.saturating_sub(inactive.unwrap_or(0)))
}

pub fn cpu_total_ns(s: &ContainerStatsResponse) -> Option<u64> {
    s.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage
}

/// `used_ns` of CPU over `elapsed`, as a percentage of one CPU.
pub fn cpu_percent(used_ns: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        used_ns as f64 / 1e9 / secs * 100.0
    }
}

impl Sampler {
    pub fn forget(&self, name: &str) {
        self.prev
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Running containers labelled `openruntimes-executor` (= `executor`
    /// unless empty); `name_of` says which runtime a container is.
    pub async fn sample(
        &self,
        docker: &Docker,
        executor: &str,
        name_of: impl Fn(&ContainerSummary) -> Option<String>,
    ) -> Result<Vec<RuntimeStats>> {
        let label = if executor.is_empty() {
            LABEL_EXECUTOR.to_owned()
        } else {
            format!("{LABEL_EXECUTOR}={executor}")
        };
        let filters = HashMap::from([
            ("label", vec![label]),
            ("status", vec!["running".to_owned()]),
        ]);
        let options = ListContainersOptionsBuilder::new()
            .all(false)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| api_failed("list containers", &e))?;
        let targets: Vec<(String, String, i64)> = containers
            .iter()
            .filter_map(|c| Some((c.id.clone()?, name_of(c)?, c.created.unwrap_or(0))))
            .collect();
        let samples: Vec<(String, i64, Option<ContainerStatsResponse>)> =
            futures_util::stream::iter(targets)
                .map(|(id, name, created)| async move {
                    let options = StatsOptionsBuilder::new()
                        .stream(false)
                        .one_shot(true)
                        .build();
                    let s = docker.stats(&id, Some(options)).next().await;
                    (name, created, s.and_then(|r| r.ok()))
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;

        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut prev = self.prev.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<RuntimeStats> = samples
            .into_iter()
            .map(|(name, created, s)| {
                let total = s.as_ref().and_then(cpu_total_ns);
                let cpu = total.map(|ns| match prev.insert(name.clone(), (ns, now)) {
                    Some((p, at)) => cpu_percent(ns.saturating_sub(p), now.duration_since(at)),
                    None => cpu_percent(
                        ns,
                        Duration::from_secs_f64((wall - created as f64).max(0.001)),
                    ),
                });
                RuntimeStats {
                    name,
                    cpu_percent: cpu,
                    memory_bytes: s.as_ref().and_then(memory_in_use),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    #[test]
    fn cpu_and_memory_from_a_sample() {
        let s = ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(500_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000_000),
                stats: Some(HashMap::from([(
                    "total_inactive_file".to_string(),
                    4_000_000,
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(cpu_total_ns(&s), Some(500_000_000));
        assert_eq!(memory_in_use(&s), Some(6_000_000));
        // Half a second of CPU in one second: 50 % of one CPU.
        assert!((cpu_percent(500_000_000, Duration::from_secs(1)) - 50.0).abs() < 1e-9);
        assert_eq!(cpu_percent(1, Duration::ZERO), 0.0);
    }
}
