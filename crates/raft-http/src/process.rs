//! The standard `process_*` metrics, read from `/proc/self` (Linux; elsewhere they are
//! left out).

use crate::metrics::Scrape;

/// Linux's `USER_HZ`, the unit of CPU times in `/proc`: 100 on every architecture Linux
/// supports (it is part of the ABI, unlike the kernel's internal tick rate).
const USER_HZ: f64 = 100.0;

/// Fields of `/proc/self/stat` after the command name (which may hold spaces).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(String::from).collect())
}

/// A `Key:   value kB` line of `/proc/self/status`, in bytes.
fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn start_time_seconds(fields: &[String]) -> Option<f64> {
    // Field 22 of stat (the 20th after the command name): start time in ticks since boot.
    let ticks: f64 = fields.get(19)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + ticks / USER_HZ)
}

/// Adds the process metrics this system provides to a scrape.
pub(crate) fn register(s: &mut Scrape) {
    if let Some(f) = stat_fields() {
        // utime and stime: fields 14 and 15 (the 12th and 13th after the command name).
        let cpu = f
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .zip(f.get(12).and_then(|s| s.parse::<f64>().ok()));
        if let Some((user, system)) = cpu {
            s.counter_f64(
                "process_cpu_seconds",
                "CPU time used by the process (user and system), in seconds.",
                (user + system) / USER_HZ,
            );
        }
        if let Some(t) = start_time_seconds(&f) {
            s.gauge(
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch.",
                t,
            );
        }
    }
    let whole = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if let Some(rss) = status_kb("VmRSS:") {
        s.gauge_int(
            "process_resident_memory_bytes",
            "Resident memory of the process, in bytes.",
            whole(rss),
        );
    }
    if let Some(vm) = status_kb("VmSize:") {
        s.gauge_int(
            "process_virtual_memory_bytes",
            "Virtual memory of the process, in bytes.",
            whole(vm),
        );
    }
    if let Some(n) = open_fds() {
        s.gauge_int(
            "process_open_fds",
            "File descriptors open in the process.",
            whole(n),
        );
    }
    if let Some(n) = max_fds() {
        s.gauge_int(
            "process_max_fds",
            "The process's limit on open file descriptors.",
            whole(n),
        );
    }
}
