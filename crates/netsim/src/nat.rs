//! NAT boxes with the behaviours RFC 4787 names: mapping (§4.1) and filtering (§5) that are
//! endpoint-independent, address-dependent or address-and-port-dependent, port
//! preservation (§4.2.1), hairpinning (§6) and mapping refresh and timeout (§4.3).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// RFC 4787 §4.1: which outbound packets share an external address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One mapping per internal address and port, whatever the destination.
    EndpointIndependent,
    /// One per internal endpoint and destination IP address.
    AddressDependent,
    /// One per internal endpoint and destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// RFC 4787 §5: which inbound packets a mapping lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone who knows the mapping.
    EndpointIndependent,
    /// Only addresses the internal endpoint has sent to.
    AddressDependent,
    /// Only addresses and ports the internal endpoint has sent to.
    AddressAndPortDependent,
}

/// How a NAT behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Internal hosts reach each other through the NAT's external addresses (§6).
    pub hairpinning: bool,
    /// A mapping unused (no outbound packet) this long is gone (§4.3: at least 2 minutes).
    pub mapping_timeout: Duration,
    /// Keep the internal port as the external one when it is free (§4.2.1).
    pub preserve_ports: bool,
    /// External ports handed out when the internal one is not kept.
    pub ports: std::ops::RangeInclusive<u16>,
}

impl NatConfig {
    /// "Full cone": endpoint-independent mapping and filtering.
    pub fn full_cone() -> NatConfig {
        NatConfig::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent)
    }

    /// "Restricted cone": endpoint-independent mapping, address-dependent filtering.
    pub fn restricted_cone() -> NatConfig {
        NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressDependent)
    }

    /// "Port-restricted cone": endpoint-independent mapping, address-and-port-dependent
    /// filtering (the most common home router).
    pub fn port_restricted_cone() -> NatConfig {
        NatConfig::new(Mapping::EndpointIndependent, Filtering::AddressAndPortDependent)
    }

    /// "Symmetric": a new external port per destination, address-and-port-dependent
    /// filtering, no port preservation.
    pub fn symmetric() -> NatConfig {
        NatConfig {
            preserve_ports: false,
            ..NatConfig::new(Mapping::AddressAndPortDependent, Filtering::AddressAndPortDependent)
        }
    }

    pub fn new(mapping: Mapping, filtering: Filtering) -> NatConfig {
        NatConfig {
            mapping,
            filtering,
            hairpinning: true,
            mapping_timeout: Duration::from_secs(120),
            preserve_ports: true,
            ports: 49152..=65535,
        }
    }
}

#[derive(Debug)]
struct Binding {
    internal: SocketAddr,
    /// What, beside the internal endpoint, this mapping is for (per `Mapping`).
    destination: Option<SocketAddr>,
    external_port: u16,
    /// Every destination the internal endpoint sent to through this mapping.
    sent_to: Vec<SocketAddr>,
    last_outbound: Instant,
}

/// One NAT: its public address and its live mappings.
#[derive(Debug)]
pub(crate) struct Nat {
    pub(crate) config: NatConfig,
    pub(crate) public_ip: IpAddr,
    bindings: Vec<Binding>,
    next_port: u16,
}

impl Nat {
    pub(crate) fn new(config: NatConfig, public_ip: IpAddr) -> Nat {
        let next_port = *config.ports.start();
        Nat { config, public_ip, bindings: Vec::new(), next_port }
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.config.mapping_timeout;
        self.bindings.retain(|b| now.saturating_duration_since(b.last_outbound) < timeout);
    }

    /// The external source for a packet from `internal` to `destination`, creating or
    /// refreshing the mapping; `None` when the NAT is out of ports.
    pub(crate) fn outbound(
        &mut self,
        now: Instant,
        internal: SocketAddr,
        destination: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let key = match self.config.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::AddressDependent => Some(SocketAddr::new(destination.ip(), 0)),
            Mapping::AddressAndPortDependent => Some(destination),
        };
        let index = match self.bindings.iter().position(|b| b.internal == internal && b.destination == key) {
            Some(index) => index,
            None => {
                let external_port = self.free_port(internal.port())?;
                self.bindings.push(Binding {
                    internal,
                    destination: key,
                    external_port,
                    sent_to: Vec::new(),
                    last_outbound: now,
                });
                self.bindings.len() - 1
            }
        };
        let binding = &mut self.bindings[index];
        binding.last_outbound = now;
        if !binding.sent_to.contains(&destination) {
            binding.sent_to.push(destination);
        }
        Some(SocketAddr::new(self.public_ip, binding.external_port))
    }

    /// `None` when every port of the range is mapped (the packet is dropped).
    fn free_port(&mut self, wanted: u16) -> Option<u16> {
        let used = |port: u16, bindings: &[Binding]| bindings.iter().any(|b| b.external_port == port);
        if self.config.preserve_ports && wanted != 0 && !used(wanted, &self.bindings) {
            return Some(wanted);
        }
        let (first, last) = (*self.config.ports.start(), *self.config.ports.end());
        for _ in first..=last {
            let port = self.next_port;
            self.next_port = if self.next_port >= last { first } else { self.next_port + 1 };
            if !used(port, &self.bindings) {
                return Some(port);
            }
        }
        None
    }

    /// The internal destination for a packet from `remote` to external `port`, if a live
    /// mapping exists and its filtering lets `remote` in. Inbound packets do not refresh.
    pub(crate) fn inbound(&mut self, now: Instant, remote: SocketAddr, port: u16) -> Option<SocketAddr> {
        self.expire(now);
        let filtering = self.config.filtering;
        self.bindings
            .iter()
            .filter(|b| b.external_port == port)
            .find(|b| match filtering {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => b.sent_to.iter().any(|d| d.ip() == remote.ip()),
                Filtering::AddressAndPortDependent => b.sent_to.contains(&remote),
            })
            .map(|b| b.internal)
    }

    /// Live mappings (for tests and debugging).
    pub(crate) fn mappings(&self) -> usize {
        self.bindings.len()
    }
}
