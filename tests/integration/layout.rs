//! The shape of `src/`, checked: the folders are the layers, in one order ([`LAYERS`]); a module
//! may import (`crate::…`) from its own layer and those below it, never from a layer above, and
//! no two modules import each other round a cycle. A change that breaks either fails here, naming
//! the file and the import, or the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first: each `src/<layer>/` may use its own and the ones before it.
const LAYERS: [&str; 10] = [
    "base", "config", "resolve", "catalog", "fence", "query", "state", "net", "daemon", "cli",
];

/// Names at the crate root that are no layer: the macros `base::warn` exports.
const ROOT_MACROS: [&str; 1] = ["warn_limited"];

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

/// One `crate::…` path of a file: the file (relative to `src/`), its 1-based line, and the path's
/// names (`["catalog", "zones", "Catalog"]`).
struct Import {
    file: String,
    line: usize,
    path: Vec<String>,
}

/// Every `crate::` path of every file of `src/` but `lib.rs` and `main.rs` (the binary uses the
/// library by its crate name), comments included: a doc link is a dependency too.
fn imports() -> Vec<Import> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut out = Vec::new();
    for p in &all {
        let file = p.strip_prefix(&root).unwrap().display().to_string();
        if file == "lib.rs" || file == "main.rs" {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let path: Vec<String> = line[i + 7..]
                    .split("::")
                    .map(|seg| {
                        seg.chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                    })
                    .take_while(|seg| !seg.is_empty())
                    .take(2)
                    .collect();
                if !path.is_empty() {
                    out.push(Import {
                        file: file.clone(),
                        line: n + 1,
                        path,
                    });
                }
            }
        }
    }
    out
}

/// The layer and module a file of `src/` is in: `catalog/source/page.rs` → (`catalog`,
/// `source`); a layer's own `mod.rs` is module `mod`.
fn place(file: &str) -> (String, String) {
    let mut parts = file.split('/');
    let layer = parts.next().unwrap_or_default().trim_end_matches(".rs");
    let module = parts.next().unwrap_or("mod").trim_end_matches(".rs");
    (layer.to_string(), module.to_string())
}

/// What breaks the layering: an import from a layer above, or of a name that is in no layer.
fn violations(imports: &[Import]) -> Vec<String> {
    let rank = |l: &str| LAYERS.iter().position(|x| *x == l);
    let mut out = Vec::new();
    for i in imports {
        let (own, _) = place(&i.file);
        let Some(own_rank) = rank(&own) else {
            out.push(format!("{}: in no layer ({})", i.file, LAYERS.join(", ")));
            continue;
        };
        let target = &i.path[0];
        match rank(target) {
            Some(r) if r > own_rank => out.push(format!(
                "{}:{}: imports crate::{} from layer '{target}', above its own '{own}'",
                i.file,
                i.line,
                i.path.join("::")
            )),
            Some(_) => {}
            None if ROOT_MACROS.contains(&target.as_str()) => {}
            None => out.push(format!(
                "{}:{}: imports crate::{}, which is in no layer",
                i.file,
                i.line,
                i.path.join("::")
            )),
        }
    }
    out
}

/// Module (`layer::module`) → the modules it imports.
fn graph(imports: &[Import]) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in imports {
        let (layer, module) = place(&i.file);
        let from = format!("{layer}::{module}");
        let deps = g.entry(from.clone()).or_default();
        if i.path.len() == 2 && LAYERS.contains(&i.path[0].as_str()) {
            let to = i.path.join("::");
            if to != from {
                deps.insert(to);
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
        done: &mut BTreeSet<String>,
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
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            visit(g, next, path, found, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = BTreeSet::new();
    let mut done = BTreeSet::new();
    for node in g.keys() {
        visit(g, node, &mut Vec::new(), &mut found, &mut done);
    }
    found.into_iter().collect()
}

#[test]
fn every_module_imports_only_from_its_layer_and_below() {
    let imports = imports();
    assert!(
        imports.len() > 200,
        "src/ was read: {} imports",
        imports.len()
    );
    // Every folder of src/ is a layer of the table, and every layer is a folder.
    let mut folders: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let mut layers: Vec<String> = LAYERS.iter().map(|l| l.to_string()).collect();
    layers.sort();
    assert_eq!(folders, layers, "src/'s folders are the layers");
    let v = violations(&imports);
    assert!(v.is_empty(), "layering broken:\n{}", v.join("\n"));
}

#[test]
fn src_modules_import_no_cycle() {
    let g = graph(&imports());
    assert!(
        g.len() > 30,
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
fn the_checks_find_what_they_look_for() {
    let import = |file: &str, path: &str| Import {
        file: file.into(),
        line: 7,
        path: path.split("::").map(str::to_string).collect(),
    };
    let v = violations(&[
        import("catalog/zones.rs", "base::matcher"),
        import("catalog/zones.rs", "catalog::policy"),
        import("base/wire.rs", "catalog::zones"),
        import("resolve/cache.rs", "zones"),
        import("net/tcp.rs", "warn_limited"),
    ]);
    assert_eq!(
        v,
        [
            "base/wire.rs:7: imports crate::catalog::zones from layer 'catalog', above its own 'base'",
            "resolve/cache.rs:7: imports crate::zones, which is in no layer",
        ]
    );
    let mut g = BTreeMap::new();
    g.insert("a::x".to_string(), BTreeSet::from(["a::y".to_string()]));
    g.insert("a::y".to_string(), BTreeSet::from(["b::z".to_string()]));
    g.insert("b::z".to_string(), BTreeSet::from(["a::x".to_string()]));
    g.insert("c::w".to_string(), BTreeSet::from(["a::x".to_string()]));
    assert_eq!(cycles(&g), [vec!["a::x", "a::y", "b::z"]]);
}
