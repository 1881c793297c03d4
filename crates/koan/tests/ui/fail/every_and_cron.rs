#[koan::service(every = "1h", cron = "0 * * * * *")]
#[derive(Default)]
struct Cleanup;

fn main() {}
