//! Shared pieces of the benchmark tools: a process's CPU time from `/proc`.

use std::time::Duration;

/// CPU time a process's live threads have used so far, from the scheduler's nanosecond
/// accounting (`/proc/PID/task/*/schedstat`); falls back to the tick-based `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    let mut any = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()) {
                total += ns;
                any = true;
            }
        }
    }
    if any {
        return Ok(Duration::from_nanos(total));
    }
    process_cpu_ticks(pid)
}

/// User plus system CPU time from `/proc/PID/stat`, in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> anyhow::Result<Duration> {
    let (user, system) = process_cpu_split(pid)?;
    Ok(user + system)
}

/// User and system (kernel) CPU time from `/proc/PID/stat`, in clock ticks.
pub fn process_cpu_split(pid: u32) -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after =
        stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow::anyhow!("bad /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).ok_or_else(|| anyhow::anyhow!("short stat"))?.parse::<u64>()?)
    };
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    let ticks = |t: u64| Duration::from_nanos(t * 1_000_000_000 / per_second);
    Ok((ticks(field(11)?), ticks(field(12)?)))
}
