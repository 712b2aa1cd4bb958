//! The crate dependency rule of DESIGN.md §3, checked by reading every member's `Cargo.toml`
//! (as rust-analyzer's `xtask/src/tidy.rs` and TigerBeetle's `src/tidy.zig` do). Invariant: a crate
//! depends (normal, dev or build, on any target) only on the workspace crates its row allows, and
//! every member inherits the workspace lints.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

/// Each member folder and the member folders it may depend on (DESIGN.md §3). Nothing may depend
/// on `server`, `simulator` or `benches`, except that `simulator` drives `server` and `benches`
/// may use anything.
const RULES: &[(&str, &[&str])] = &[
    ("storage", &[]),
    ("log", &["storage"]),
    ("materializers", &["log", "storage"]),
    ("query", &["materializers", "log", "storage"]),
    ("server", &["query", "materializers", "log", "storage"]),
    (
        "simulator",
        &["server", "query", "materializers", "log", "storage"],
    ),
    (
        "benches",
        &[
            "simulator",
            "server",
            "query",
            "materializers",
            "log",
            "storage",
        ],
    ),
];

const DEPENDENCY_KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// One workspace member: its folder (as listed in the root `members`) and its parsed manifest.
struct Member {
    folder: String,
    manifest: Table,
}

/// Every breach of the dependency rule and the lint rule, one message per breach, each naming the
/// crate, its manifest and what is forbidden.
fn check(root: &Table, members: &[Member], rules: &[(&str, &[&str])]) -> Vec<String> {
    let mut violations = Vec::new();
    let rules: BTreeMap<&str, &[&str]> = rules.iter().copied().collect();
    let workspace_deps = root
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(Value::as_table);

    // Package name -> member folder, so dependencies (which name packages) map onto rule rows.
    let mut folder_of: BTreeMap<&str, &str> = BTreeMap::new();
    for member in members {
        match member
            .manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) => {
                folder_of.insert(name, &member.folder);
            }
            None => violations.push(format!("{}/Cargo.toml has no package name", member.folder)),
        }
    }
    for folder in rules.keys() {
        if !members.iter().any(|m| m.folder == *folder) {
            violations.push(format!(
                "the dependency rule names crate folder `{folder}`, which is not a workspace member"
            ));
        }
    }

    for member in members {
        let folder = member.folder.as_str();
        let name = member
            .manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(folder);
        let lints_inherited = member
            .manifest
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(Value::as_bool)
            == Some(true);
        if !lints_inherited {
            violations.push(format!(
                "{name} ({folder}/Cargo.toml) must set `[lints] workspace = true`"
            ));
        }
        let Some(allowed) = rules.get(folder) else {
            violations.push(format!(
                "{name} ({folder}/Cargo.toml) is not in the dependency rule; add its row to \
                 DESIGN.md §3 and to RULES in server/tests/it/tidy.rs"
            ));
            continue;
        };
        for (section, table) in dependency_tables(&member.manifest) {
            for (key, spec) in table {
                let package = package_name(key, spec, workspace_deps);
                let Some(&target) = folder_of.get(package.as_str()) else {
                    continue; // not a workspace crate
                };
                if !allowed.contains(&target) {
                    let may = if allowed.is_empty() {
                        "nothing in the workspace".to_owned()
                    } else {
                        allowed.join(", ")
                    };
                    violations.push(format!(
                        "{name} ({folder}/Cargo.toml) must not depend on {package} in [{section}]: \
                         DESIGN.md §3 lets {folder} depend on {may}"
                    ));
                }
            }
        }
    }
    violations
}

/// Every dependency table of a manifest with its section name: the plain ones and the
/// `[target.'cfg(…)'.…]` ones.
fn dependency_tables(manifest: &Table) -> Vec<(String, &Table)> {
    let mut tables = Vec::new();
    for kind in DEPENDENCY_KINDS {
        if let Some(table) = manifest.get(kind).and_then(Value::as_table) {
            tables.push((kind.to_owned(), table));
        }
    }
    let targets = manifest.get("target").and_then(Value::as_table);
    for (cfg, target) in targets.into_iter().flatten() {
        for kind in DEPENDENCY_KINDS {
            if let Some(table) = target.get(kind).and_then(Value::as_table) {
                tables.push((format!("target.{cfg}.{kind}"), table));
            }
        }
    }
    tables
}

/// The package a dependency entry refers to: its `package` key if renamed, the workspace entry's
/// `package` key if inherited, else the entry's own name.
fn package_name(key: &str, spec: &Value, workspace_deps: Option<&Table>) -> String {
    let renamed = |spec: &Value| {
        spec.get("package")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(package) = renamed(spec) {
        return package;
    }
    let inherited = spec.get("workspace").and_then(Value::as_bool) == Some(true);
    if inherited && let Some(package) = workspace_deps.and_then(|w| w.get(key)).and_then(renamed) {
        return package;
    }
    key.to_owned()
}

fn read_manifest(path: &Path) -> Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

#[test]
fn workspace_follows_the_dependency_rule() {
    let server_dir = crate::crate_dir();
    let root_dir = server_dir.parent().expect("server/ has a parent");
    let root = read_manifest(&root_dir.join("Cargo.toml"));
    let folders = root
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(Value::as_array)
        .expect("the root Cargo.toml lists [workspace] members");
    let members: Vec<Member> = folders
        .iter()
        .map(|folder| {
            let folder = folder.as_str().expect("members are strings");
            assert!(
                !folder.contains(['*', '?', '[']),
                "member globs are not supported: {folder}"
            );
            let manifest = read_manifest(&root_dir.join(folder).join("Cargo.toml"));
            Member {
                folder: folder.to_owned(),
                manifest,
            }
        })
        .collect();
    assert_eq!(
        members.len(),
        RULES.len(),
        "every crate of DESIGN.md §3 is a member"
    );
    let violations = check(&root, &members, RULES);
    assert!(
        violations.is_empty(),
        "dependency rule broken:\n  {}",
        violations.join("\n  ")
    );
}

/// The table itself says what DESIGN.md §3 says about the three top crates.
#[test]
fn nothing_depends_on_the_top_crates_except_as_allowed() {
    for (folder, allowed) in RULES {
        for top in ["server", "simulator", "benches"] {
            let exception = *folder == "benches" || (*folder == "simulator" && top == "server");
            assert!(
                !allowed.contains(&top) || exception,
                "{folder} may not depend on {top}"
            );
        }
        assert!(
            !allowed.contains(folder),
            "{folder} may not depend on itself"
        );
    }
}

/// A made-up member `folder` with package name `x-{folder}`, workspace lints and `rest` appended.
fn member(folder: &str, rest: &str) -> Member {
    let manifest = format!("[package]\nname = \"x-{folder}\"\n[lints]\nworkspace = true\n{rest}");
    Member {
        folder: folder.to_owned(),
        manifest: manifest.parse().expect("test manifest parses"),
    }
}

/// The checker on a made-up workspace of three layers: a clean one passes, and each kind of breach
/// is caught and named.
#[test]
fn checker_catches_forbidden_dependencies() {
    let root: Table = r#"
        [workspace.dependencies]
        core = { path = "core", package = "x-core" }
        x-top = { path = "top" }
    "#
    .parse()
    .unwrap();
    let rules: &[(&str, &[&str])] = &[("core", &[]), ("mid", &["core"]), ("top", &["mid", "core"])];
    let clean = [
        member("core", "[dependencies]\nserde = \"1\""),
        // `core` is the workspace's name for x-core: the rename is followed, and allowed.
        member("mid", "[dependencies]\ncore.workspace = true"),
        member("top", "[dev-dependencies]\nx-mid = { path = \"../mid\" }"),
    ];
    assert_eq!(check(&root, &clean, rules), Vec::<String>::new());

    let cases = [
        (
            "[dev-dependencies]\nx-top.workspace = true",
            "x-mid (mid/Cargo.toml) must not depend on x-top in [dev-dependencies]: \
             DESIGN.md §3 lets mid depend on core",
        ),
        (
            "[build-dependencies]\nt = { path = \"../top\", package = \"x-top\" }",
            "x-mid (mid/Cargo.toml) must not depend on x-top in [build-dependencies]",
        ),
        (
            "[target.'cfg(unix)'.dependencies]\nx-top = { path = \"../top\" }",
            "x-mid (mid/Cargo.toml) must not depend on x-top in [target.cfg(unix).dependencies]",
        ),
    ];
    for (deps, expected) in cases {
        let members = [member("core", ""), member("mid", deps), member("top", "")];
        let violations = check(&root, &members, rules);
        assert_eq!(violations.len(), 1, "{deps}: {violations:?}");
        assert!(
            violations[0].contains(expected),
            "{deps}: {}",
            violations[0]
        );
    }

    // The lowest layer may depend on nothing in the workspace.
    let members = [
        member("core", "[dependencies]\nx-top.workspace = true"),
        member("mid", ""),
        member("top", ""),
    ];
    assert_eq!(
        check(&root, &members, rules),
        [
            "x-core (core/Cargo.toml) must not depend on x-top in [dependencies]: \
         DESIGN.md §3 lets core depend on nothing in the workspace"
        ]
    );

    // Missing lints, a member without a rule and a rule without a member are reported too.
    let no_lints = Member {
        folder: "mid".to_owned(),
        manifest: "[package]\nname = \"x-mid\"\n".parse().unwrap(),
    };
    let members = [no_lints, member("core", ""), member("extra", "")];
    assert_eq!(
        check(&root, &members, rules),
        [
            "the dependency rule names crate folder `top`, which is not a workspace member",
            "x-mid (mid/Cargo.toml) must set `[lints] workspace = true`",
            "x-extra (extra/Cargo.toml) is not in the dependency rule; add its row to DESIGN.md §3 \
         and to RULES in server/tests/it/tidy.rs",
        ]
    );
}
