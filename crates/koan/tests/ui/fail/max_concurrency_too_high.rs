#[koan::service(max_concurrency = 100000000)]
#[derive(Default)]
struct Translator;

fn main() {}
