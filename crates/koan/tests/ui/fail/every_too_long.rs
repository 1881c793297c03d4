#[koan::service(every = "100000000000d")]
#[derive(Default)]
struct Cleanup;

fn main() {}
