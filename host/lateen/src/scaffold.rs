//! `lateen new-filter NAME`: a filter crate to start from, with its config type, a test on
//! the filter test harness, a README and the WasmPlugin that loads it.
//!
//! Inside a Lateen checkout the crate goes in `filters/NAME` and joins the workspace (its
//! build shares the workspace's target directory, so the first `cargo test` reuses the
//! runtime already built). Elsewhere it is a workspace of its own whose path dependencies
//! point at the checkout this binary was built from.

use std::path::{Path, PathBuf};

/// Why a filter crate cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("filter name `{0}`: use lower-case letters, digits and `-`, starting with a letter")]
    BadName(String),
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    #[error(
        "Lateen's sdk/ is not at {0}: pass --lateen PATH (a Lateen checkout) for the crate's path dependencies"
    )]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `new-filter` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    /// Where the crate directory goes; `None`: `filters/` of the checkout the current
    /// directory is in, else the current directory.
    pub dir: Option<PathBuf>,
    /// The Lateen checkout to depend on; `None`: the one this binary was built from.
    pub lateen: Option<PathBuf>,
    /// The cargo target directory the WasmPlugin's `file://` URL points into; `None`:
    /// `$CARGO_TARGET_DIR`, else the workspace's `target/`.
    pub target_dir: Option<PathBuf>,
    /// A component-model filter (`lateen:filter`, `wasm32-wasip2`) instead of a proxy-wasm
    /// module.
    pub component: bool,
}

/// What was made.
#[derive(Debug)]
pub struct Made {
    pub dir: PathBuf,
    /// Whether the crate joined the checkout's workspace.
    pub in_workspace: bool,
    /// Where `cargo build` puts the module.
    pub wasm: PathBuf,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// The Lateen checkout `dir` is in: it has the workspace `Cargo.toml` that names
/// `lateen-sdk`, and `sdk/harness`.
fn checkout_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            d.join("sdk/harness/Cargo.toml").is_file()
                && std::fs::read_to_string(d.join("Cargo.toml"))
                    .is_ok_and(|t| t.contains("[workspace]") && t.contains("lateen-sdk"))
        })
        .map(Path::to_path_buf)
}

/// Makes the crate.
pub fn new_filter(req: &Request) -> Result<Made, ScaffoldError> {
    if !valid_name(&req.name) {
        return Err(ScaffoldError::BadName(req.name.clone()));
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let here = checkout_of(&cwd);
    let parent = match (&req.dir, &here) {
        (Some(d), _) => d.clone(),
        (None, Some(root)) => root.join("filters"),
        (None, None) => cwd.clone(),
    };
    let dir = parent.join(&req.name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    // Joins the workspace only when it lands in that checkout's filters/ (the members glob).
    let in_workspace = here
        .as_ref()
        .is_some_and(|root| dir.parent() == Some(root.join("filters").as_path()));
    let lateen = lateen_checkout(req, here.as_deref())?;
    let target = req
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            if in_workspace {
                lateen.join("target")
            } else {
                dir.join("target")
            }
        });
    let lib_name = req.name.replace('-', "_");
    let triple = if req.component {
        "wasm32-wasip2"
    } else {
        "wasm32-wasip1"
    };
    let wasm = target.join(format!("{triple}/wasm/{lib_name}.wasm"));
    let absolute = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let wasm = absolute(&wasm);
    let cargo_p = if in_workspace {
        format!(" -p {}", req.name)
    } else {
        String::new()
    };
    let fill = |t: &str| {
        t.replace("{{name}}", &req.name)
            .replace("{{metric}}", &lib_name)
            .replace("{{wasm}}", &wasm.display().to_string())
            .replace("{{cargo_p}}", &cargo_p)
            .replace("{{target}}", triple)
            .replace(
                "{{kind}}",
                if req.component {
                    "a WebAssembly component of the `lateen:filter` world"
                } else {
                    "a proxy-wasm module"
                },
            )
    };
    let (lib, test) = if req.component {
        component_sources(&lib_name)
    } else {
        (
            fill(include_str!("scaffold/lib.rs.tmpl")),
            fill(include_str!("scaffold/test.rs.tmpl")),
        )
    };
    let mut files: Vec<(&str, String)> = vec![
        (
            "Cargo.toml",
            cargo_toml(&req.name, in_workspace, &lateen, req.component),
        ),
        ("src/lib.rs", lib),
        ("tests/filter.rs", test),
        ("README.md", fill(include_str!("scaffold/README.md.tmpl"))),
        (
            "wasmplugin.yaml",
            fill(include_str!("scaffold/wasmplugin.yaml.tmpl")),
        ),
    ];
    if !req.component {
        files.push((
            "schema.json",
            fill(include_str!("scaffold/schema.json.tmpl")),
        ));
    }
    write_files(&dir, files)?;
    if !in_workspace {
        // The checkout's lock file, so the crate resolves the versions Lateen is tested with.
        let _ = std::fs::copy(lateen.join("Cargo.lock"), dir.join("Cargo.lock"));
    }
    Ok(Made {
        dir,
        in_workspace,
        wasm,
    })
}

/// The Lateen checkout the crate depends on: the one asked for, the one the crate is made
/// in, else the one this binary was built from (host/lateen/ is CARGO_MANIFEST_DIR).
fn lateen_checkout(req: &Request, here: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let lateen = match (&req.lateen, here) {
        (Some(p), _) => p.clone(),
        (None, Some(root)) => root.to_path_buf(),
        (None, None) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let lateen = lateen.canonicalize().unwrap_or(lateen);
    if !lateen.join("sdk/Cargo.toml").is_file() {
        return Err(ScaffoldError::NoSdk(lateen.join("sdk")));
    }
    Ok(lateen)
}

/// A component filter starts from the sample component, renamed.
fn component_sources(lib_name: &str) -> (String, String) {
    let rename = |t: &str| {
        t.replace(
            "ua_tagger_requests_total",
            &format!("{lib_name}_requests_total"),
        )
    };
    (
        rename(include_str!(
            "../../../filters/ua-tagger-component/src/lib.rs"
        )),
        rename(include_str!(
            "../../../filters/ua-tagger-component/tests/filter.rs"
        )),
    )
}

/// Writes each file under `dir`, making its directories.
fn write_files(dir: &Path, files: Vec<(&str, String)>) -> Result<(), ScaffoldError> {
    for (rel, text) in files {
        let path = dir.join(rel);
        let write = || -> std::io::Result<()> {
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&path, text)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn cargo_toml(name: &str, in_workspace: bool, lateen: &Path, component: bool) -> String {
    // A component is only a cdylib (the wasip2 linker makes the component from it).
    let types = if component {
        "[\"cdylib\"]"
    } else {
        "[\"cdylib\", \"rlib\"]"
    };
    let package = format!(
        "[package]\nname = \"{name}\"\ndescription = \"A Lateen filter\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[lib]\ncrate-type = {types}\n\n"
    );
    let root = if in_workspace {
        "../..".to_string()
    } else {
        lateen.display().to_string()
    };
    // Components use lateen-sdk without proxy-wasm, whose exports a component cannot have.
    let deps = if component {
        format!(
            "lateen-component = {{ path = \"{root}/sdk/component\" }}\n\
             lateen-sdk = {{ path = \"{root}/sdk\", default-features = false }}\n"
        )
    } else if in_workspace {
        "lateen-sdk.workspace = true\n".to_string()
    } else {
        format!("lateen-sdk = {{ path = \"{root}/sdk\" }}\n")
    };
    if in_workspace {
        return package
            + "[dependencies]\n"
            + &deps
            + "serde.workspace = true\nserde_json.workspace = true\n\n\
               [dev-dependencies]\nlateen-harness = { path = \"../../sdk/harness\" }\n\
               serde_json.workspace = true\n";
    }
    let l = lateen.display();
    package
        + &format!(
            "[dependencies]\n{deps}serde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n\n\
             [dev-dependencies]\nlateen-harness = {{ path = \"{l}/sdk/harness\" }}\nserde_json = \"1\"\n\n\
             # A workspace of its own (it lives outside Lateen's).\n[workspace]\n\n\
             # The filter's build: small and fast, and a panic traps the plugin.\n\
             [profile.wasm]\ninherits = \"release\"\nstrip = true\nlto = true\ncodegen-units = 1\npanic = \"abort\"\n\n\
             # The harness compiles the module with cranelift in every test run: optimise it.\n\
             [profile.dev.package.cranelift-codegen]\nopt-level = 3\n\
             [profile.dev.package.wasmtime]\nopt-level = 3\n\
             [profile.dev.package.wasmtime-internal-cranelift]\nopt-level = 3\n\
             [profile.dev.package.regalloc2]\nopt-level = 3\n"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_and_yaml_safe() {
        for ok in ["ua-tagger", "a", "geo2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "UA", "9lives", "a_b", "a-", "../x", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_crate_outside_a_checkout_is_its_own_workspace() {
        let tmp = std::env::temp_dir().join(format!("lateen-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = new_filter(&Request {
            name: "ua-tagger".into(),
            dir: Some(tmp.clone()),
            lateen: None,
            target_dir: Some(tmp.join("t")),
            component: false,
        })
        .unwrap();
        assert!(!made.in_workspace);
        let toml = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(toml.contains("[workspace]") && toml.contains("/sdk/harness"));
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("ua_tagger_requests_total") && !lib.contains("{{name}}"));
        let yaml = std::fs::read_to_string(made.dir.join("wasmplugin.yaml")).unwrap();
        assert!(yaml.contains(&format!(
            "url: file://{}",
            tmp.join("t/wasm32-wasip1/wasm/ua_tagger.wasm").display()
        )));
        assert!(matches!(
            new_filter(&Request {
                name: "ua-tagger".into(),
                dir: Some(tmp.clone()),
                lateen: None,
                target_dir: None,
                component: false,
            }),
            Err(ScaffoldError::Exists(_))
        ));
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_component_filter_starts_from_the_sample_component() {
        let tmp = std::env::temp_dir().join(format!("lateen-scaffold-c-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let made = new_filter(&Request {
            name: "geo-tag".into(),
            dir: Some(tmp.clone()),
            lateen: None,
            target_dir: Some(tmp.join("t")),
            component: true,
        })
        .unwrap();
        let toml = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(toml.contains("sdk/component") && toml.contains("default-features = false"));
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("export_filter!") && lib.contains("geo_tag_requests_total"));
        let yaml = std::fs::read_to_string(made.dir.join("wasmplugin.yaml")).unwrap();
        assert!(yaml.contains("wasm32-wasip2/wasm/geo_tag.wasm"), "{yaml}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
