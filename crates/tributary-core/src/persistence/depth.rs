//! How deep a JSON value nests, measured without recursion.

use serde_json::Value;

/// Whether `value` nests more than `limit` levels deep (each array or
/// object is one level; a scalar is none). Walks the value with an explicit
/// stack, so a value of any depth is safe to measure, and stops at the first
/// branch that goes too deep.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::json_depth_exceeds;
///
/// let v = json!({ "a": [[1]] }); // three levels
/// assert!(!json_depth_exceeds(&v, 3));
/// assert!(json_depth_exceeds(&v, 2));
/// ```
pub fn json_depth_exceeds(value: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, above)) = stack.pop() {
        let depth = above + 1;
        match v {
            Value::Array(_) | Value::Object(_) if depth > limit => return true,
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth))),
            _ => {}
        }
    }
    false
}
