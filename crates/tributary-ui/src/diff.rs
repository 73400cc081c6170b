//! The change between two states, computed on the server so the page
//! only shows it.

use serde::Serialize;
use serde_json::Value;

/// One change of a state, at a JSON pointer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Change {
    /// `added`, `removed` or `changed`.
    pub(crate) op: &'static str,
    /// Where, as a JSON pointer (`/notes/2`).
    pub(crate) path: String,
    /// The value before (`removed`, `changed`).
    pub(crate) before: Option<Value>,
    /// The value after (`added`, `changed`).
    pub(crate) after: Option<Value>,
}

/// The changes from `before` to `after`, as an RFC 6902 patch read back
/// with the values on both sides.
pub(crate) fn diff(before: &Value, after: &Value) -> Vec<Change> {
    json_patch::diff(before, after)
        .0
        .into_iter()
        .map(|op| {
            use json_patch::PatchOperation as Op;
            let (kind, path) = match &op {
                Op::Add(o) => ("added", o.path.to_string()),
                Op::Remove(o) => ("removed", o.path.to_string()),
                Op::Replace(o) => ("changed", o.path.to_string()),
                Op::Move(o) => ("changed", o.path.to_string()),
                Op::Copy(o) => ("added", o.path.to_string()),
                Op::Test(o) => ("changed", o.path.to_string()),
            };
            Change {
                op: kind,
                before: before.pointer(&path).cloned(),
                after: after.pointer(&path).cloned(),
                path,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_added_removed_and_changed_keys_with_both_sides() {
        let before = json!({ "a": 1, "b": [1, 2], "gone": true });
        let after = json!({ "a": 2, "b": [1, 2, 3], "new": "x" });
        let mut changes = diff(&before, &after);
        changes.sort_by(|x, y| x.path.cmp(&y.path));
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.op, c.path.as_str(), c.before.clone(), c.after.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("changed", "/a", Some(json!(1)), Some(json!(2))),
                ("added", "/b/2", None, Some(json!(3))),
                ("removed", "/gone", Some(json!(true)), None),
                ("added", "/new", None, Some(json!("x"))),
            ]
        );
    }
}
