//! The shape of `src/`, checked: no import cycle between its top-level modules, and the bottom
//! layer (wire, clock, sync, fileerror) reaches into nothing else of dnsfence. A change that
//! adds a cycle fails here, with the cycle named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules it names as `crate::X`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    let module = |p: &Path| {
        let rel = p.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_string()
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &all {
        let from = module(p);
        if from == "main" || from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let deps = g.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            // Not `dnsfence::crate::`…; the name after `crate::` up to the next `::` or symbol.
            let rest = &text[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                deps.insert(name);
            }
        }
    }
    g
}

/// The cycles of `g` (each as its modules), by a depth-first search from every module.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            // The same cycle found from another start: one rotation only.
            let min = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| n.as_str())
                .unwrap()
                .0;
            cycle.rotate_left(min);
            found.insert(cycle);
            return;
        }
        if path.len() > 32 {
            return;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            visit(g, next, path, found);
        }
        path.pop();
    }
    let mut found = BTreeSet::new();
    for node in g.keys() {
        visit(g, node, &mut Vec::new(), &mut found);
    }
    found.into_iter().collect()
}

#[test]
fn src_modules_import_no_cycle() {
    let g = graph();
    assert!(
        g.len() > 20,
        "the modules of src/ were found: {:?}",
        g.keys()
    );
    let c = cycles(&g);
    assert!(
        c.is_empty(),
        "import cycles between src/ modules: {}",
        c.iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn the_bottom_layer_reaches_up_into_nothing() {
    let g = graph();
    for bottom in ["wire", "clock", "sync", "fileerror", "codec", "caps"] {
        assert_eq!(
            g.get(bottom).cloned().unwrap_or_default(),
            BTreeSet::new(),
            "{bottom} must not depend on other modules of dnsfence"
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), [vec!["a", "b", "c"]]);
}
