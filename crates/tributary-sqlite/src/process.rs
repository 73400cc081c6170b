//! Which process wrote a record, and whether it is still alive.
//!
//! The tracker stores `host/pid/start` with every step it records (`start`
//! is the process's start time in clock ticks since boot, from
//! `/proc/<pid>/stat`). A reader on the same host can then tell a run that
//! is still going from one whose process died: the pid is gone, or now
//! belongs to a process that started at another time. Elsewhere (another
//! host, a system without `/proc`) it cannot tell, and says so.

use std::sync::OnceLock;

/// This process, as stored by the tracker.
pub(crate) fn current() -> &'static str {
    static CURRENT: OnceLock<String> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let pid = std::process::id();
        let start = start_ticks(pid).map_or_else(|| "-".to_owned(), |t| t.to_string());
        format!("{}/{pid}/{start}", host())
    })
}

/// Whether the process `process` (as stored by [`current`]) is still
/// running: `None` when that cannot be told from here.
pub(crate) fn alive(process: &str) -> Option<bool> {
    let mut parts = process.rsplitn(3, '/');
    let start: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    let host_of = parts.next()?;
    if host_of != host() || start_ticks(std::process::id()).is_none() {
        return None;
    }
    Some(start_ticks(pid) == Some(start))
}

fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().replace('/', "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), `None` when there is no such process or no `/proc`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_alive_and_a_stale_start_is_not() {
        let me = current();
        assert_eq!(alive(me), Some(true));
        let (rest, start) = me.rsplit_once('/').unwrap();
        let stale = format!("{rest}/{}", start.parse::<u64>().unwrap() + 1);
        assert_eq!(alive(&stale), Some(false));
        assert_eq!(alive("another-host/1/1"), None);
        assert_eq!(alive("garbage"), None);
    }
}
