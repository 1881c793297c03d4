//! The JSON Schemas of `docs/wire/` are generated from the types above: this test
//! regenerates them and fails when the checked-in files differ, so the contract and
//! the code cannot drift. `KOAN_BLESS=1 cargo test -p koan-nats wire::schema`
//! rewrites the files after a deliberate change (then say so in `docs/wire.md`).

use std::path::PathBuf;

use super::{Outcome, Reply, WireEvent};

fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("reply", schemars::schema_for!(Reply)),
        ("outcome", schemars::schema_for!(Outcome)),
        ("event", schemars::schema_for!(WireEvent)),
        // The `ok` of the queries' replies, and the registry's values.
        ("status", schemars::schema_for!(koan::status::ServiceStatus)),
        ("health", schemars::schema_for!(koan::health::ServiceHealth)),
        ("info", schemars::schema_for!(koan::service::ServiceInfo)),
        (
            "history",
            schemars::schema_for!(koan::status::ServiceHistory),
        ),
        ("instance", schemars::schema_for!(koan::transport::Instance)),
        // The values of the `koan_jobs` bucket.
        ("job", schemars::schema_for!(koan::job::JobRecord)),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/wire")
}

#[test]
fn checked_in_schemas_match_the_code() {
    let bless = std::env::var("KOAN_BLESS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, schema) in schemas() {
        let path = dir().join(format!("{name}.schema.json"));
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
        text.push('\n');
        if bless {
            std::fs::create_dir_all(dir()).expect("docs/wire can be created");
            std::fs::write(&path, &text).expect("the schema can be written");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == text => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "the wire schemas changed: {}; if that is meant, run `KOAN_BLESS=1 cargo test -p koan-nats wire::schema` and update docs/wire.md",
        stale.join("; ")
    );
}

#[test]
fn every_schema_is_named_in_the_doc() {
    let doc = std::fs::read_to_string(dir().join("../wire.md")).expect("docs/wire.md exists");
    for (name, _) in schemas() {
        let file = format!("wire/{name}.schema.json");
        assert!(doc.contains(&file), "docs/wire.md does not link {file}");
    }
}
