//! `schema.graphql` is exactly what `multipult export-schema` prints.

#[test]
fn committed_schema_matches_the_export() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists at the repository root");
    let exported = multipult::schema::sdl();
    assert!(
        committed == exported,
        "schema.graphql is out of date: run `cargo run -- export-schema > schema.graphql` and commit it"
    );
}

#[test]
fn the_binary_exports_the_same_schema() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_multipult"))
        .arg("export-schema")
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        multipult::schema::sdl()
    );
}
