#[koan::service(every = "1h")]
#[derive(Default)]
struct Cleanup;

fn main() {}
