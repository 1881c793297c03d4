#[koan::service(restart = "sometimes")]
#[derive(Default)]
struct Worker;

fn main() {}
