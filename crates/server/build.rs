//! Embeds every file of the browser app (`web/` at the workspace root) in the binary.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = String::from(
        "/// (file name, contents) of every file in web/.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).expect("web/ file names are UTF-8");
        if name.starts_with('.') {
            continue;
        }
        let path = path.canonicalize().expect("web/ file exists");
        println!("cargo:rerun-if-changed={}", path.display());
        let _ = writeln!(out, "    ({name:?}, include_bytes!({:?})),", path.display().to_string());
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_files.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
