//! Golden snapshots: the demo sample and every fixture under `tests/golden/configs/`
//! compiled by `lateen validate --dump`, and the result compared with the JSON checked in
//! beside it. A change to how config compiles shows up here as a diff; a commit that means
//! it regenerates them with `LATEEN_UPDATE_GOLDEN=1 cargo test -p lateen-e2e golden`.

use lateen_e2e::paths;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Module digests change whenever a filter is rebuilt from changed code, and the filters and
/// staging directories are the machine's: none of them is the config's doing.
fn masked(text: &str, wasm_dir: &Path, staged: &Path) -> String {
    let sha = regex::Regex::new(r#""[0-9a-f]{64}""#).expect("regex");
    let text = text
        .replace(&wasm_dir.display().to_string(), "$FILTERS")
        .replace(&staged.display().to_string(), "$CONFIG");
    sha.replace_all(&text, r#""<sha256>""#).into_owned()
}

/// Copies a config directory with `{{WASM}}` replaced by the built modules' directory, as
/// the e2e tests write theirs, so fixtures can name the test plugins.
fn stage(config: &Path, into: &Path) {
    let wasm = paths().wasm_dir.display().to_string();
    for entry in std::fs::read_dir(config).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read fixture");
            let name = path.file_name().expect("file name");
            std::fs::write(into.join(name), text.replace("{{WASM}}", &wasm)).expect("stage");
        }
    }
}

fn dump(config: &Path) -> String {
    let p = paths();
    let staged = tempfile::tempdir().expect("tempdir");
    stage(config, staged.path());
    let out = Command::new(&p.bin)
        .arg("validate")
        .arg("--dump")
        .arg(staged.path())
        .arg("--filters-dir")
        .arg(&p.wasm_dir)
        .arg("--cache-dir")
        .arg(&p.cache_dir)
        .env_remove("INSTANCE_IP")
        .output()
        .expect("run lateen validate");
    assert!(
        out.status.success(),
        "{}: {}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    masked(
        &String::from_utf8_lossy(&out.stdout),
        &p.wasm_dir,
        staged.path(),
    )
}

fn configs() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<(String, PathBuf)> = ["demo"]
        .iter()
        .map(|s| (format!("sample-{s}"), root.join("../samples").join(s)))
        .collect();
    let fixtures = root.join("golden/configs");
    let mut dirs: Vec<_> = std::fs::read_dir(&fixtures)
        .expect("tests/golden/configs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        out.push((name, d));
    }
    out
}

#[test]
fn compiled_snapshots_match_the_golden_files() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let update = std::env::var_os("LATEEN_UPDATE_GOLDEN").is_some();
    let mut differ = Vec::new();
    let all = configs();
    assert!(all.len() > 5, "fixtures missing: {all:?}");
    for (name, dir) in all {
        let got = dump(&dir);
        let file = golden.join(format!("{name}.json"));
        if update {
            std::fs::write(&file, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if want != got {
            differ.push(format!(
                "{name}: {} differs from the compiled snapshot; first differing line: {}",
                file.display(),
                first_difference(&want, &got)
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

fn first_difference(want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (None, None) => break,
            (a, b) if a == b => continue,
            (a, b) => return format!("line {n}: want {a:?}, got {b:?}"),
        }
    }
    "none".into()
}
