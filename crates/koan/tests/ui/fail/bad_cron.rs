#[koan::service(cron = "*/5 * *")]
#[derive(Default)]
struct Cleanup;

fn main() {}
