//! Build script of the integration tests: says which services and tools are
//! available, so that tests needing what is missing show as ignored (not
//! run) in cargo's own summary instead of passing or failing.
//!
//! For each service variable below that is set (and not empty) when the
//! tests are built, the cfg beside it is on; tests that need the service
//! carry `#[cfg_attr(not(<cfg>), ignore = "needs <VAR>")]`. The browser
//! tests carry the same for `tributary_browser`.

use std::path::Path;

const SERVICES: [(&str, &str); 3] = [
    ("TRIBUTARY_REDIS_URL", "tributary_redis"),
    ("TRIBUTARY_NATS_URL", "tributary_nats"),
    ("TRIBUTARY_POSTGRES_URL", "tributary_postgres"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    services();
    browser();
}

/// Redis, NATS and PostgreSQL, by their URL variables.
fn services() {
    for (var, cfg) in SERVICES {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var(var).is_ok_and(|url| !url.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The web view's browser tests need Debian's `chromium` and
/// `chromium-driver`.
fn browser() {
    println!("cargo::rustc-check-cfg=cfg(tributary_browser)");
    println!("cargo::rerun-if-changed=/usr/bin/chromedriver");
    println!("cargo::rerun-if-changed=/usr/bin/chromium");
    if Path::new("/usr/bin/chromedriver").exists() && Path::new("/usr/bin/chromium").exists() {
        println!("cargo::rustc-cfg=tributary_browser");
    }
}
