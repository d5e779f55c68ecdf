//! A line per packet in each direction at TRACE level under the target `peerlink_sctp::wire`
//! (off unless asked for, e.g. `RUST_LOG=peerlink_sctp::wire=trace`): every chunk with its
//! TSN, stream, SSN and flags, cumulative acks, windows and gap blocks. It is how an
//! interoperability failure against another stack is read; nothing is parsed unless the
//! target is enabled.

use crate::chunk::{self, Chunks, Data, ForwardTsn, Init, Sack};
use crate::packet::HEADER;
use std::fmt::Write;

pub(super) const TARGET: &str = "peerlink_sctp::wire";

pub(super) fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::TRACE)
}

/// Logs `packet` (a whole SCTP packet) going `direction` ("in" or "out").
pub(super) fn packet(direction: &str, packet: &[u8]) {
    if !enabled() {
        return;
    }
    tracing::trace!(target: TARGET, "{direction} {}", describe(packet));
}

/// One line for a packet: its verification tag, then its chunks.
pub(super) fn describe(packet: &[u8]) -> String {
    let Some(body) = packet.get(HEADER..) else { return format!("short packet of {} bytes", packet.len()) };
    let tag = u32::from_be_bytes(packet[4..8].try_into().expect("4 bytes"));
    let mut s = format!("vtag {tag:08x}:");
    for raw in Chunks::new(body) {
        let Ok(raw) = raw else {
            s.push_str(" [malformed]");
            break;
        };
        let _ = match raw.typ {
            chunk::DATA => match Data::parse(raw) {
                Ok(d) => write!(
                    s,
                    " DATA(tsn {} s {} ssn {} ppid {} {}{}{} {}B)",
                    d.tsn,
                    d.stream,
                    d.ssn,
                    d.ppid,
                    if d.begin() { "B" } else { "" },
                    if d.end() { "E" } else { "" },
                    if d.unordered() { "U" } else { "" },
                    d.payload.len()
                ),
                Err(_) => write!(s, " DATA(bad)"),
            },
            chunk::SACK => match Sack::parse(raw) {
                Ok(k) => {
                    let _ = write!(s, " SACK(cum {} rwnd {}", k.cumulative_tsn, k.a_rwnd);
                    for (a, b) in k.gaps() {
                        let _ = write!(s, " gap {a}-{b}");
                    }
                    for d in k.duplicates() {
                        let _ = write!(s, " dup {d}");
                    }
                    write!(s, ")")
                }
                Err(_) => write!(s, " SACK(bad)"),
            },
            chunk::INIT | chunk::INIT_ACK => match Init::parse(raw) {
                Ok(i) => write!(
                    s,
                    " {}(tag {:08x} rwnd {} os {} mis {} tsn {} params {:?})",
                    if raw.typ == chunk::INIT { "INIT" } else { "INIT_ACK" },
                    i.tag,
                    i.a_rwnd,
                    i.outbound_streams,
                    i.inbound_streams,
                    i.initial_tsn,
                    i.params().map(|(t, v)| (t, v.len())).collect::<Vec<_>>()
                ),
                Err(_) => write!(s, " INIT(bad)"),
            },
            chunk::FORWARD_TSN => match ForwardTsn::parse(raw) {
                Ok(f) => write!(
                    s,
                    " FORWARD_TSN(cum {} streams {:?})",
                    f.new_cumulative_tsn,
                    f.streams().collect::<Vec<_>>()
                ),
                Err(_) => write!(s, " FORWARD_TSN(bad)"),
            },
            chunk::RECONFIG => {
                write!(s, " RECONFIG({:?})", chunk::Params::new(raw.value).collect::<Vec<_>>())
            }
            chunk::SHUTDOWN => write!(s, " SHUTDOWN({:?})", raw.value.get(..4)),
            other => write!(s, " chunk {other} flags {:#x} {}B", raw.flags, raw.value.len()),
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_empty_truncated_and_garbage_packets_without_panicking() {
        assert!(describe(&[]).contains("short"));
        assert!(describe(&[0; 11]).contains("short"));
        let _ = describe(&[0xff; 40]);
        let mut p = vec![0; 12];
        p.extend_from_slice(&[3, 0, 0, 16, 0, 0, 0, 5, 0, 1, 0, 0, 0, 1, 0, 0]);
        assert!(describe(&p).contains("SACK(bad)"), "{}", describe(&p));
    }
}
