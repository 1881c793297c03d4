#[koan::service(every = "1h", every = "2h")]
#[derive(Default)]
struct Cleanup;

fn main() {}
