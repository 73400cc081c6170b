//! Build script of the integration tests: says which optional tools are
//! installed, so tests that need them show as ignored instead of failing.

use std::path::Path;

fn main() {
    browser();
}

/// The web view's browser tests need Debian's `chromium` and
/// `chromium-driver`; without them they are ignored (NOT RUN in the
/// summary).
fn browser() {
    println!("cargo::rustc-check-cfg=cfg(tributary_browser)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=/usr/bin/chromedriver");
    println!("cargo::rerun-if-changed=/usr/bin/chromium");
    if Path::new("/usr/bin/chromedriver").exists() && Path::new("/usr/bin/chromium").exists() {
        println!("cargo::rustc-cfg=tributary_browser");
    }
}
