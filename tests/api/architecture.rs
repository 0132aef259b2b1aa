//! The shape of the house, checked: the kernel never imports a feature (only the registry names
//! them), features import each other without cycles and only at the top of a file, and what the
//! registry declares matches the docs and the schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn source_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (relative, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// Lines that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
}

#[test]
fn no_kernel_module_imports_a_feature() {
    // The registry (`src/features/mod.rs`) and its one kernel window (`src/schema.rs`) name the
    // features; `src/lib.rs` declares the module; the binary's entry (`src/cli.rs`) hands each
    // command to the feature that owns it (`admin …` to the admin feature).
    let allowed = ["src/schema.rs", "src/lib.rs", "src/cli.rs"];
    let offenders: Vec<String> = source_files()
        .into_iter()
        .filter(|(path, _)| !path.starts_with("src/features/") && !allowed.contains(&path.as_str()))
        .filter(|(_, text)| code_lines(text).any(|line| line.contains("crate::features")))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "kernel files naming features: {offenders:?}"
    );
}

#[test]
fn features_import_each_other_without_cycles_and_only_at_the_top() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in source_files() {
        let Some(rest) = path.strip_prefix("src/features/") else {
            continue;
        };
        let Some((feature, _)) = rest.split_once('/') else {
            continue; // the registry itself
        };
        for line in code_lines(&text) {
            if line.starts_with(char::is_whitespace)
                && line.trim_start().starts_with("use crate::features")
            {
                panic!(
                    "{path}: a `use` of another feature inside a body hides a dependency: {line}"
                );
            }
            let mut rest = line;
            while let Some(at) = rest.find("crate::features::") {
                rest = &rest[at + "crate::features::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !target.is_empty() && target != feature {
                    edges.entry(feature.to_owned()).or_default().insert(target);
                }
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("features import each other in a cycle: {:?}", &path[at..]);
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut vec![], &mut done);
    }
}

#[test]
fn docs_permissions_lists_exactly_the_catalogue() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/permissions.md"))
            .unwrap();
    let documented: BTreeSet<String> = doc
        .lines()
        .filter(|line| line.starts_with("| `") && line.contains(':'))
        .filter_map(|line| line.split('`').nth(1))
        .filter(|name| name.contains(':'))
        .map(str::to_owned)
        .collect();
    let catalogue: BTreeSet<String> = multipult::schema::catalogue()
        .all()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    assert_eq!(
        documented, catalogue,
        "docs/permissions.md's table and the catalogue differ"
    );
}

#[test]
fn docs_organizations_lists_exactly_the_organization_permissions_and_their_roles() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/organizations.md"),
    )
    .unwrap();
    // | `name` | declared by | OWNER | ADMIN | MEMBER | VIEWER | allows |
    let documented: BTreeSet<(String, Vec<bool>)> = doc
        .lines()
        .filter(|line| line.starts_with("| `") && line.contains(':'))
        .map(|line| line.split('|').map(str::trim).collect::<Vec<&str>>())
        // The permissions table is the one with a column per role.
        .filter(|cells| cells.len() == 9)
        .map(|cells| {
            let roles = cells[3..7].iter().map(|c| *c == "✓").collect();
            (cells[1].trim_matches('`').to_owned(), roles)
        })
        .collect();
    let catalogue = multipult::schema::catalogue();
    let declared: BTreeSet<(String, Vec<bool>)> = catalogue
        .organization()
        .iter()
        .map(|p| {
            let roles = multipult::identity::OrgRole::ALL
                .iter()
                .map(|role| p.granted_to(*role))
                .collect();
            (p.as_str().to_owned(), roles)
        })
        .collect();
    assert_eq!(
        documented, declared,
        "docs/organizations.md's table and the organization permissions differ"
    );
    // One name, one meaning: no organization permission shadows a global one.
    for permission in catalogue.organization() {
        assert!(
            catalogue.parse(permission.as_str()).is_none(),
            "{permission}"
        );
    }
}

#[test]
fn public_root_fields_exist_in_the_schema() {
    let sdl = multipult::schema::sdl();
    let roots: BTreeSet<String> = ["type QueryRoot {", "type MutationRoot {"]
        .iter()
        .flat_map(|start| {
            let body = sdl
                .split(start)
                .nth(1)
                .unwrap()
                .split("\n}")
                .next()
                .unwrap();
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('"'))
                .filter_map(|l| l.split(['(', ':']).next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    for field in multipult::schema::public_root_fields() {
        if *field == "__typename" {
            continue;
        }
        assert!(
            roots.contains(*field),
            "public root field {field} is not in the schema"
        );
    }
}
