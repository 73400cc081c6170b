//! Which process wrote a record: `host/pid/start`, in the form the SQLite
//! tracker stores, so a reader tells a resumed run from a retried one the
//! same way for both backends.

use std::sync::OnceLock;

/// This process, as stored by the tracker.
pub(crate) fn current() -> &'static str {
    static CURRENT: OnceLock<String> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let pid = std::process::id();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().replace('/', "_"))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        // Field 22 of /proc/<pid>/stat: the start time in clock ticks.
        let start = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = &stat[stat.rfind(')')? + 1..];
                after_name.split_whitespace().nth(19).map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        format!("{host}/{pid}/{start}")
    })
}
