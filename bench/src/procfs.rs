//! What the OS knows about a child process: CPU time (user + system, all threads, also the ones
//! that already exited) and memory high-water mark.

use std::time::Duration;

/// Total CPU time the process has used so far (nanosecond resolution): the process CPU clock
/// of `pid`, which Linux lets any process read.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain libc calls with valid out-pointers.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// User and system time from `/proc/<pid>/stat` (clock ticks, converted), for the split.
pub fn user_system(pid: u32) -> std::io::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_user_system(&stat, ticks_per_second())
        .ok_or_else(|| std::io::Error::other("unexpected /proc/<pid>/stat format"))
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line; the command name (field 2)
/// may contain spaces, so counting starts after its closing parenthesis.
pub fn parse_user_system(stat: &str, ticks: u64) -> Option<(Duration, Duration)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let to = |t: u64| Duration::from_nanos(t * 1_000_000_000 / ticks);
    Some((to(utime), to(stime)))
}

/// `VmHWM` (peak resident set) and `VmRSS` of the process, in KiB.
pub fn memory_kib(pid: u32) -> std::io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_memory(&status).ok_or_else(|| std::io::Error::other("no VmHWM/VmRSS in /proc/<pid>/status"))
}

pub fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Voluntary context switches of every thread of the process: each one is the process going to
/// sleep (waiting on a socket, a timer, a lock), so the count tracks its wake-ups.
pub fn voluntary_switches(pid: u32) -> std::io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // a thread that just ended
        };
        total += parse_voluntary_switches(&status).unwrap_or(0);
    }
    Ok(total)
}

pub fn parse_voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 100 0 0";
        let (u, s) = parse_user_system(line, 100).unwrap();
        assert_eq!(u, Duration::from_millis(2500));
        assert_eq!(s, Duration::from_millis(300));
    }

    #[test]
    fn memory_fields() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(parse_memory(status), Some((5120, 4096)));
    }

    #[test]
    fn voluntary_switch_field() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_voluntary_switches(status), Some(42));
        assert!(voluntary_switches(std::process::id()).is_ok());
    }

    #[test]
    fn own_cpu_clock_is_readable() {
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
