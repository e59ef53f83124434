//! Names the git commit for `stratus version`: `STRATUS_GIT_COMMIT` is set to
//! `git rev-parse --short HEAD` when this is built from a git checkout. Without
//! git, a `STRATUS_GIT_COMMIT` in the build's environment is used as it is,
//! else no commit is shown. Reruns only when HEAD or the branch it names moves.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=STRATUS_GIT_COMMIT={commit}");
    // `--git-path` finds the files in a worktree too (HEAD per worktree,
    // refs in the common dir). A path that does not exist would make cargo
    // rerun this on every build: packed refs live in `packed-refs`.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
