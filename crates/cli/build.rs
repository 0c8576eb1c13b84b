//! Embeds the runtime files (workers, helpers, hooks) into `opr`, so the
//! binary alone can serve functions and run an executor.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .join("../../runtimes");
    // runtimes/<language>/helpers link to the shared helpers.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("common/helpers").display()
    );
    let mut code = String::from("pub const RUNTIME_FILES: &[(&str, &str, &[u8], bool)] = &[\n");
    for lang in ["node", "python", "bun"] {
        for sub in ["helpers", "hooks", "src", "example"] {
            let dir = root.join(lang).join(sub);
            println!("cargo:rerun-if-changed={}", dir.display());
            let mut files = Vec::new();
            collect(&dir, &mut files);
            files.sort();
            for file in files {
                let rel = file
                    .strip_prefix(root.join(lang))
                    .expect("inside")
                    .display()
                    .to_string();
                let exec = std::fs::metadata(&file)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                let abs = std::fs::canonicalize(&file).expect("canonical");
                writeln!(
                    code,
                    "    ({lang:?}, {rel:?}, include_bytes!({:?}), {exec}),",
                    abs.display().to_string()
                )
                .expect("write");
            }
        }
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("runtime_files.rs");
    std::fs::write(out, code).expect("write generated file");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if !path.to_string_lossy().contains("__pycache__") {
            out.push(path);
        }
    }
}
