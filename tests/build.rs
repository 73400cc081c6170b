//! Marks the tests that need a service as ignored unless the service's URL
//! is set, so that cargo's own summary counts them as not run.
//!
//! For each variable below that is set (and not empty) when the tests are
//! built, the cfg beside it is on; tests that need the service carry
//! `#[cfg_attr(not(<cfg>), ignore = "needs <VAR>")]`.

const SERVICES: [(&str, &str); 3] = [
    ("TRIBUTARY_REDIS_URL", "tributary_redis"),
    ("TRIBUTARY_NATS_URL", "tributary_nats"),
    ("TRIBUTARY_POSTGRES_URL", "tributary_postgres"),
];

fn main() {
    for (var, cfg) in SERVICES {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if std::env::var(var).is_ok_and(|url| !url.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
