#[koan::service(run_on_startup)]
#[derive(Default)]
struct Monitor;

fn main() {}
