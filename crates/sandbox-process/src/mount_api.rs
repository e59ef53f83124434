//! The new mount API calls the runtime pool needs and `nix` lacks:
//! `open_tree` (the server clones a function's code tree into a detached
//! mount, held by a descriptor) and `move_mount` (the sandbox init attaches
//! it in the sandbox's mount namespace). Linux 5.2 and later.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

/// `OPEN_TREE_CLONE` (linux/mount.h): clone the tree into a detached mount.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `MOVE_MOUNT_F_EMPTY_PATH`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)
}

/// A detached, recursive bind-mount clone of `dir` (close-on-exec): what
/// `mount --rbind` would attach, not attached anywhere yet.
pub fn clone_tree(dir: &Path) -> Result<OwnedFd, Errno> {
    let path = c_path(dir)?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path, which outlives the
    // call, and returns a new descriptor or -1; it touches no other memory.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this new descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches the detached mount `tree` on `target` in the caller's mount
/// namespace (which needs `CAP_SYS_ADMIN` there).
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &str) -> Result<(), Errno> {
    let target = CString::new(target).map_err(|_| Errno::EINVAL)?;
    let empty = c"";
    // SAFETY: move_mount reads the two NUL-terminated paths, which outlive
    // the call, and uses `tree`, an open descriptor we borrow; it writes no
    // memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloning_a_missing_dir_fails_cleanly() {
        let err = clone_tree(Path::new("/nonexistent/stratus/tree")).expect_err("no such dir");
        // ENOENT as root; EPERM without CAP_SYS_ADMIN.
        assert!(matches!(err, Errno::ENOENT | Errno::EPERM), "{err}");
        assert_eq!(
            clone_tree(Path::new("/tmp/a\0b")).expect_err("NUL"),
            Errno::EINVAL
        );
    }
}
