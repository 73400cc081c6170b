//! tributary's bench runner (scenarios arrive with the runtime).
fn main() {
    println!("{{\"scenario\":\"none\",\"note\":\"no scenarios yet\"}}");
}
