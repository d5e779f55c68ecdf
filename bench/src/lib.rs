//! Shared pieces of the benchmark tools: a process's CPU time from `/proc`.

use std::time::Duration;

/// User plus system CPU time a process (all its threads) has used so far.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after =
        stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow::anyhow!("bad /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse::<u64>()?
        + fields.get(12).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse::<u64>()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}
