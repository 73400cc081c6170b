//! Stable child application ids.

use std::sync::Arc;

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
    ChildIds::new(parent_app_id, parent_seq, action).id(task_key)
}

/// The ids of every child of one (parent, sequence id, action): the hash of
/// the common prefix is computed once, so each child hashes only its key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildIds {
    prefix: [u64; 2],
}

impl ChildIds {
    pub(crate) fn new(parent_app_id: &str, parent_seq: u64, action: &str) -> Self {
        let mut digits = [0u8; 20];
        let seq = decimal(parent_seq, &mut digits);
        let parts = [parent_app_id, seq, action];
        ChildIds {
            prefix: [
                fnv1a(&parts, 0xcbf2_9ce4_8422_2325),
                fnv1a(&parts, 0x8422_2325_cbf2_9ce4),
            ],
        }
    }

    /// [`child_app_id`] of the child with `task_key`.
    pub(crate) fn id(&self, task_key: &str) -> String {
        let mut buf = [0u8; 32];
        self.write(task_key, &mut buf).to_owned()
    }

    /// The same id, shared.
    pub(crate) fn id_arc(&self, task_key: &str) -> Arc<str> {
        let mut buf = [0u8; 32];
        Arc::from(self.write(task_key, &mut buf))
    }

    /// Hex-encoded by hand: `format!` costs more than the hashing, and this
    /// runs once per task.
    fn write<'b>(&self, task_key: &str, buf: &'b mut [u8; 32]) -> &'b str {
        // Both halves in one pass over the key: the same values as
        // `fnv1a(&[task_key], offset)` for each half.
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let [mut a, mut b] = self.prefix;
        for byte in (task_key.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(task_key.as_bytes())
        {
            a = (a ^ u64::from(*byte)).wrapping_mul(PRIME);
            b = (b ^ u64::from(*byte)).wrapping_mul(PRIME);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (half, hash) in [mix(a), mix(b)].into_iter().enumerate() {
            for (i, byte) in hash.to_be_bytes().into_iter().enumerate() {
                buf[half * 16 + 2 * i] = HEX[usize::from(byte >> 4)];
                buf[half * 16 + 2 * i + 1] = HEX[usize::from(byte & 0xf)];
            }
        }
        std::str::from_utf8(buf).expect("hex digits")
    }
}

/// `n` in decimal, written into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).expect("ascii digits")
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

/// A 64-bit finalizer, so that keys differing in one byte give ids that
/// differ everywhere (FNV alone leaves their high digits alike).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_hex_matches_format() {
        for (parent, seq, action, key) in [
            ("p", 0, "a", "k"),
            ("", u64::MAX, "", ""),
            ("run-1", 42, "map", "17"),
            (
                "parent/app",
                7,
                "fan out",
                "a key of some length, é and all",
            ),
        ] {
            let seq_s = seq.to_string();
            let parts = [parent, seq_s.as_str(), action, key];
            let expected = format!(
                "{:016x}{:016x}",
                mix(fnv1a(&parts, 0xcbf2_9ce4_8422_2325)),
                mix(fnv1a(&parts, 0x8422_2325_cbf2_9ce4))
            );
            assert_eq!(child_app_id(parent, seq, action, key), expected);
        }
    }
}
