#[koan::service(every = "1 fortnight")]
#[derive(Default)]
struct Cleanup;

fn main() {}
