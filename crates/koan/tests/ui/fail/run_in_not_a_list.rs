#[koan::service(background, run_in = "staging")]
struct Wrong;

#[koan::service(background, run_in = [])]
struct Never;

fn main() {}
