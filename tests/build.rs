//! Tells the tests which services they have: a cfg per service URL, so a
//! test that needs a missing service shows as ignored, never as passed.

fn main() {
    postgres();
}

/// `cfg(tributary_postgres)` when `TRIBUTARY_POSTGRES_URL` is set.
fn postgres() {
    println!("cargo::rustc-check-cfg=cfg(tributary_postgres)");
    println!("cargo:rerun-if-env-changed=TRIBUTARY_POSTGRES_URL");
    if std::env::var_os("TRIBUTARY_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=tributary_postgres");
    }
}
