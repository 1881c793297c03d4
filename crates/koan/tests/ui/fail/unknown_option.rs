#[koan::service(evry = "1h")]
#[derive(Default)]
struct Cleanup;

fn main() {}
