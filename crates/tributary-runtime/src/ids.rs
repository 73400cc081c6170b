//! Stable child application ids.

/// A stable id for the child of `parent_app_id` spawned at `parent_seq` by
/// `action` for `task_key`: the same inputs give the same id in every
/// process and every version, so a parent rerun after a crash finds its
/// children; the parent's sequence id differs between two runs of the same
/// parallel action, so a loop does not replay stale children.
///
/// # Examples
///
/// ```
/// use tributary_runtime::child_app_id;
///
/// let a = child_app_id("parent", 3, "map", "task-1");
/// assert_eq!(a, child_app_id("parent", 3, "map", "task-1"));
/// assert_ne!(a, child_app_id("parent", 4, "map", "task-1"));
/// assert_eq!(a.len(), 32);
/// ```
pub fn child_app_id(parent_app_id: &str, parent_seq: u64, action: &str, task_key: &str) -> String {
    let seq = parent_seq.to_string();
    let parts = [parent_app_id, seq.as_str(), action, task_key];
    format!(
        "{:016x}{:016x}",
        mix(fnv1a(&parts, 0xcbf2_9ce4_8422_2325)),
        mix(fnv1a(&parts, 0x8422_2325_cbf2_9ce4))
    )
}

/// FNV-1a over length-prefixed parts, so ("ab","c") and ("a","bc") differ.
fn fnv1a(parts: &[&str], offset: u64) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = offset;
    for part in parts {
        for byte in (part.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(part.as_bytes())
        {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// A 64-bit finalizer, so that inputs differing in one byte give ids that
/// differ everywhere.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
