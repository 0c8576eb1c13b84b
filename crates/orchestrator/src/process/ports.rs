//! Ports on 127.0.0.1 for runtimes (executor-api §12.5, §19.4: port 3000
//! becomes an allocated port). The OS picks a free one; the allocator
//! remembers what it handed out so two runtimes never get the same port
//! while the first one has not bound it yet.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct PortAllocator {
    taken: Mutex<HashSet<u16>>,
}

impl PortAllocator {
    /// Marks ports of runtimes found on disk as taken.
    pub fn with_taken(ports: impl IntoIterator<Item = u16>) -> Self {
        PortAllocator {
            taken: Mutex::new(ports.into_iter().collect()),
        }
    }

    /// A port free right now and not handed out before.
    pub fn allocate(&self) -> io::Result<u16> {
        // A few tries: the OS may hand back a port we gave out but whose
        // runtime has not bound it yet.
        for _ in 0..16 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
            if taken.insert(port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free port on 127.0.0.1",
        ))
    }

    pub fn release(&self, port: u16) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_free_ports() {
        let a = PortAllocator::default();
        let ports: Vec<u16> = (0..20).map(|_| a.allocate().expect("port")).collect();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        // Free now: binding works.
        TcpListener::bind((Ipv4Addr::LOCALHOST, ports[0])).expect("free");
        a.release(ports[0]);
        assert!(!a.taken.lock().expect("lock").contains(&ports[0]));
    }

    #[test]
    fn remembers_ports_of_adopted_runtimes() {
        let a = PortAllocator::with_taken([5000]);
        assert!(a.taken.lock().expect("lock").contains(&5000));
    }
}
