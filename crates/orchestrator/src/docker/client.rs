//! The Engine API connection and the reading of its errors and answers.

use crate::{OrchestratorError, Result};
use bollard::errors::Error as ApiError;
use bollard::models::PortMap;
use bollard::Docker;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Connects to `host` (`unix://…`, `tcp://…`, `http://…`), else to
/// `$DOCKER_HOST`, else to the local socket, and negotiates the API version
/// down to the engine's (bollard speaks a newer one than Debian's 20.10).
pub async fn connect(host: Option<&str>, timeout: Duration) -> Result<Docker> {
    let env_host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let target = host
        .map(str::to_owned)
        .or(env_host)
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let secs = timeout.as_secs().max(1);
    let docker = if target.starts_with("unix://") || target.starts_with('/') {
        Docker::connect_with_socket(&target, secs, bollard::API_DEFAULT_VERSION)
    } else {
        let h = target.replacen("tcp://", "http://", 1);
        Docker::connect_with_http(&h, secs, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|e| unreachable_engine(&target, &e))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable_engine(&target, &e))?;
    docker
        .ping()
        .await
        .map_err(|e| unreachable_engine(&target, &e))?;
    Ok(docker)
}

fn unreachable_engine(target: &str, e: &ApiError) -> OrchestratorError {
    OrchestratorError::Failed(format!(
        "cannot reach the Docker engine at {target}: {e} (is dockerd running? `docker info` \
         must work)"
    ))
}

/// The HTTP status of an engine error answer.
pub fn status_of(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(e: &ApiError) -> String {
    match e {
        ApiError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `Failed` with what was attempted and the engine's message.
pub fn api_failed(what: &str, e: &ApiError) -> OrchestratorError {
    OrchestratorError::Failed(format!("docker: {what}: {}", message_of(e)))
}

/// 404 on create: "No such image: …".
pub fn is_missing_image(e: &ApiError) -> bool {
    message_of(e).to_ascii_lowercase().contains("no such image")
}

/// Create or start refused for want of `network`: "network … not found"
/// (404), or with a swarm active "Could not attach to network …: … not
/// found" (500).
pub fn is_missing_network(e: &ApiError, network: &str) -> bool {
    let m = message_of(e);
    m.contains(network) && m.to_ascii_lowercase().contains("not found")
}

/// Start failed because the fixed host port is in use.
pub fn is_port_taken(e: &ApiError) -> bool {
    let m = message_of(e).to_ascii_lowercase();
    m.contains("port is already allocated") || m.contains("address already in use")
}

/// A container's name from the list API (`["/name"]`).
pub fn container_name(names: &[String]) -> Option<String> {
    names
        .iter()
        .map(|n| n.trim_start_matches('/'))
        // Linked containers show as "/other/alias": the own name has no '/'.
        .find(|n| !n.contains('/'))
        .map(str::to_owned)
}

/// Where `port`/tcp is published, from an inspect's port map. An
/// unspecified host address means every interface: use loopback.
pub fn published_address(ports: Option<&PortMap>, port: u16) -> Option<SocketAddr> {
    let bindings = ports?.get(&format!("{port}/tcp"))?.as_ref()?;
    bindings.iter().find_map(|b| {
        let host_port: u16 = b.host_port.as_deref()?.parse().ok()?;
        let ip = match b.host_ip.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) if !ip.is_unspecified() => ip,
            // IPv6 wildcard bindings are listed too; loopback v4 serves.
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        (host_port != 0).then_some(SocketAddr::new(ip, host_port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;
    use std::collections::HashMap;

    #[test]
    fn names_without_slash() {
        assert_eq!(
            container_name(&["/a/b".into(), "/rt-1".into()]).as_deref(),
            Some("rt-1")
        );
        assert_eq!(container_name(&[]), None);
    }

    #[test]
    fn published_port_read_back() {
        let mut map: PortMap = HashMap::new();
        map.insert(
            "3000/tcp".into(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some("49153".into()),
            }]),
        );
        assert_eq!(
            published_address(Some(&map), 3000),
            Some("127.0.0.1:49153".parse().expect("addr"))
        );
        map.insert(
            "3000/tcp".into(),
            Some(vec![PortBinding {
                host_ip: Some("0.0.0.0".into()),
                host_port: Some("5000".into()),
            }]),
        );
        assert_eq!(
            published_address(Some(&map), 3000),
            Some("127.0.0.1:5000".parse().expect("addr"))
        );
        map.insert("3000/tcp".into(), None);
        assert_eq!(published_address(Some(&map), 3000), None);
        assert_eq!(published_address(None, 3000), None);
    }

    #[test]
    fn error_kinds() {
        let e = |code, m: &str| ApiError::DockerResponseServerError {
            status_code: code,
            message: m.into(),
        };
        assert!(is_missing_image(&e(
            404,
            "No such image: openruntimes/node:v5-22"
        )));
        assert!(is_missing_network(
            &e(404, "network opr-x not found"),
            "opr-x"
        ));
        assert!(is_missing_network(
            &e(
                500,
                "Could not attach to network opr-x: rpc error: code = NotFound desc = network opr-x not found"
            ),
            "opr-x"
        ));
        assert!(!is_missing_network(&e(404, "No such image: x"), "x-net"));
        assert!(is_port_taken(&e(
            500,
            "driver failed programming external connectivity: Bind for 127.0.0.1:4000 failed: port is already allocated"
        )));
        assert_eq!(status_of(&e(409, "x")), Some(409));
    }
}
