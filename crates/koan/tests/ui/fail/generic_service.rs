#[koan::service]
struct Worker<T>(T);

fn main() {}
