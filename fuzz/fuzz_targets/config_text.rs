//! Configuration text (TOML, then JSON): layered and read back — the host's own
//! settings, the HTTP options, any section — with errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn read_back(config: &koan::Config) {
    let _ = config.section::<serde_json::Value>("koan");
    let _ = config.section::<serde_json::Value>("background_services.services");
    let _ = config.get("koan.background_services.enabled");
    let _ = koan_http::HttpOptions::from_config(config);
    let _ = koan::Host::builder().config(config.clone()).build();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(b) = koan::Config::builder().toml("fuzz.toml", text) {
        read_back(&b.build());
    }
    if let Ok(b) = koan::Config::builder().json("fuzz.json", text) {
        read_back(&b.build());
    }
});
