//! The module arrows of `docs/architecture.md`, checked: each layer imports only what the
//! picture lets it (a test reads the sources; `metadata` is a crate of its own and cannot
//! import from here at all).

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// (folder or file under `src/`, the modules of this crate it must not name)
    const FORBIDDEN: &[(&str, &[&str])] = &[
        (
            "target",
            &["state", "pipeline", "source", "commands", "cli"],
        ),
        (
            "calibre",
            &["state", "pipeline", "source", "target", "commands", "cli"],
        ),
        (
            "state",
            &["target", "pipeline", "source", "commands", "cli"],
        ),
        (
            "source",
            &["target", "pipeline", "state", "commands", "cli"],
        ),
        ("pipeline", &["commands", "cli"]),
        (
            "hash.rs",
            &["state", "pipeline", "source", "target", "commands", "cli"],
        ),
        (
            "filter.rs",
            &["state", "pipeline", "source", "target", "commands", "cli"],
        ),
        (
            "fault_hook.rs",
            &["state", "pipeline", "source", "target", "commands", "cli"],
        ),
        (
            "tuning.rs",
            &["state", "pipeline", "source", "target", "commands", "cli"],
        ),
    ];

    fn rust_files(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                rust_files(&e.unwrap().path(), out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.to_path_buf());
        }
    }

    /// The `crate::X` paths a source file names outside comments.
    fn crate_paths(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                if let Some(group) = after.strip_prefix('{') {
                    // `use crate::{a, b::c}`: each first name of the group.
                    let inner = group.split('}').next().unwrap_or("");
                    found.extend(inner.split(',').map(|p| first_name(p.trim())));
                } else {
                    found.push(first_name(after));
                }
                rest = after;
            }
        }
        found
    }

    fn first_name(path: &str) -> String {
        path.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    }

    #[test]
    fn each_layer_imports_only_what_the_picture_lets_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (place, forbidden) in FORBIDDEN {
            let mut files = Vec::new();
            rust_files(&src.join(place), &mut files);
            assert!(!files.is_empty(), "src/{place} has no Rust files");
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for name in crate_paths(&text) {
                    if forbidden.contains(&name.as_str()) {
                        wrong.push(format!("{} names crate::{name}", f.display()));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "arrows the picture forbids:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn a_forbidden_path_is_found() {
        let text = "use crate::state::Db; // crate::pipeline in a comment\nlet x = crate::target::X;\nuse crate::{hash, source::calibre};";
        assert_eq!(crate_paths(text), ["state", "target", "hash", "source"]);
    }
}
