#[koan::service(every = "1h", order = 1)]
#[derive(Default)]
struct Cleanup;

fn main() {}
