//! Python tools from PyPI for tests (openapi-spec-validator), in the venv the project already
//! keeps for its Python peers: `~/.cache/themis-bench/venv` (themis-bench and scripts/fuzz-api
//! use it too), or `THEMIS_VENV`. Created and filled when missing, as themis-bench does; a
//! failure to install fails the test rather than skipping it.
#![allow(clippy::disallowed_methods)] // test tooling: real processes

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn venv() -> PathBuf {
    match std::env::var_os("THEMIS_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/themis-bench/venv")
        }
    }
}

fn imports(python: &PathBuf, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv's python, after creating the venv and `pip install`ing `requirement` when
/// `module` cannot be imported.
pub fn python_with(module: &str, requirement: &str) -> PathBuf {
    let venv = venv();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is not installed: run ./scripts/test, which installs python3-venv");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
    }
    if !imports(&python, module) {
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(requirement)
            .status()
            .expect("run pip");
        assert!(
            status.success() && imports(&python, module),
            "pip install {requirement} into {} failed",
            venv.display()
        );
    }
    python
}
