//! The JSON Schemas in `schema/` are generated from the Rust record types; this test fails when they drift.
//! Regenerate with `CONTRASTGEO_UPDATE_SCHEMAS=1 cargo test --release --test schemas`.

use std::path::PathBuf;

use contrastgeo::cli::locate::{LocatedAuthorRecord, LocatedRecord};
use contrastgeo::data::LabelledPost;
use contrastgeo::geo::City;

fn check(name: &str, schema: schemars::Schema) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(format!("{name}.schema.json"));
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("CONTRASTGEO_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the Rust types; regenerate with CONTRASTGEO_UPDATE_SCHEMAS=1 cargo test --release --test schemas",
        path.display()
    );
}

#[test]
fn committed_schemas_match_the_record_types() {
    check("city", schemars::schema_for!(City));
    check("labelled_post", schemars::schema_for!(LabelledPost));
    check(
        "located_post",
        schemars::schema_for!(LocatedRecord<'static>),
    );
    check(
        "located_author",
        schemars::schema_for!(LocatedAuthorRecord<'static>),
    );
}

#[test]
fn fixture_records_parse_as_their_types_and_keep_required_fields() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for line in std::fs::read_to_string(dir.join("cities.jsonl"))
        .unwrap()
        .lines()
    {
        let city: City = serde_json::from_str(line).unwrap();
        let back = serde_json::to_value(&city).unwrap();
        let schema: serde_json::Value = serde_json::to_value(schemars::schema_for!(City)).unwrap();
        for field in schema["required"].as_array().unwrap() {
            assert!(
                back.get(field.as_str().unwrap()).is_some(),
                "{field} missing"
            );
        }
    }
}
