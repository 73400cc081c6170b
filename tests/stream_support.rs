//! Helpers of the tributary-stream tests.

use std::time::Duration;

use tributary_stream::Metadata;

/// A bound on anything that could hang.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A name no other test (or run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Metadata from a JSON object literal.
pub(crate) fn meta(value: serde_json::Value) -> Metadata {
    value.as_object().expect("metadata is an object").clone()
}

/// The URL in `var`, or `None` after printing why the test skips.
pub(crate) fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!(
                "SKIP {test}: {var} is not set (run `bash .ci/run --services-only` and export it)"
            );
            None
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("tributary-stream-"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
