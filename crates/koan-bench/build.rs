//! Passes how this binary was built to its output (`src/build_info.rs`): the
//! profile and the overrides of it that Cargo takes from the environment, which
//! move the benchmarks' ratios (BENCHMARKS.md, "Build profile").

fn main() {
    let profile = env("PROFILE");
    let upper = profile.to_uppercase();
    let lto = format!("CARGO_PROFILE_{upper}_LTO");
    let codegen_units = format!("CARGO_PROFILE_{upper}_CODEGEN_UNITS");
    for name in ["CARGO_ENCODED_RUSTFLAGS", &lto, &codegen_units] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    pass("PROFILE", &profile);
    pass("OPT_LEVEL", &env("OPT_LEVEL"));
    pass("LTO", &env(&lto));
    pass("CODEGEN_UNITS", &env(&codegen_units));
    // Flags are separated by 0x1f in their encoded form; spaces read better.
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    let flags: Vec<&str> = flags.split('\x1f').filter(|f| !f.is_empty()).collect();
    pass("RUSTFLAGS", &flags.join(" "));
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// `KOAN_BENCH_BUILD_<key>` for `env!` in the crate.
fn pass(key: &str, value: &str) {
    println!("cargo:rustc-env=KOAN_BENCH_BUILD_{key}={value}");
}
