#[koan::service(every = "100000000000d")]
#[derive(Default)]
struct Cleanup;

// A bare number of seconds past u64's milliseconds: the macro panicked
// ("attempt to multiply with overflow") and the struct went missing.
#[koan::service(every = "18446744073709551615")]
#[derive(Default)]
struct Sweep;

fn main() {}
