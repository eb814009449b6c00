//! The `lianxin-load` binary.
fn main() {}
