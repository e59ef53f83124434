//! The runtime's seccomp policy, kept as data in `seccomp/<arch>.json`
//! (seccompiler's JSON format) and compiled when the jailer starts.
//!
//! The policy is an allowlist (`allowlist`): any syscall it does not name
//! fails with `EPERM`, in the spirit of Docker's default profile (its
//! unconditional list, less io_uring and file handles; see
//! `seccomp/README.md`). `clone` is allowed only without namespace flags,
//! `socket` for any family but vsock. `clone3` is answered `ENOSYS` by a
//! second filter (`deny_enosys`): its flags live in memory a filter cannot
//! read, and libc then falls back to `clone`. Every filter in the file is
//! installed, in name order; `ENOSYS` wins over the allowlist's `ALLOW`
//! because the kernel returns the most restrictive answer of all filters.
//!
//! seccompiler emits one comparison per syscall in a row, so the kernel
//! walked up to 292 of them for every syscall number when it built its
//! per-filter cache at install (0.7 ms per sandbox, 8% of the CPU of a burst
//! of sandbox starts) and for every syscall with argument rules at run time.
//! [`Policy::compile`] puts a binary search on the syscall number in front
//! of seccompiler's program ([`dispatch_tree`]); the rules themselves are
//! seccompiler's, unchanged.

use seccompiler::{BpfProgram, TargetArch, sock_filter};

/// The policy installed in every sandbox on this architecture (`None` where
/// the repository has none yet: sandboxes refuse to start there).
pub const DEFAULT_POLICY: Option<&str> = if cfg!(target_arch = "x86_64") {
    Some(include_str!("../seccomp/x86_64.json"))
} else {
    None
};

/// Errors of policy compilation and installation.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The host architecture has no seccompiler support.
    #[error("unsupported architecture {0}")]
    Arch(&'static str),
    /// The JSON policy does not compile.
    #[error("compiling seccomp policy: {0}")]
    Compile(seccompiler::Error),
    /// seccompiler's program does not have the shape [`dispatch_tree`]
    /// rewrites (a seccompiler version with another layout).
    #[error("seccomp filter {name}: {message}")]
    Shape {
        /// The filter's name in the policy.
        name: String,
        /// What did not match.
        message: String,
    },
    /// The kernel refused a filter.
    #[error("installing seccomp filter {name}: {source}")]
    Install {
        /// The filter's name in the policy.
        name: String,
        /// What seccompiler reported.
        source: seccompiler::Error,
    },
}

/// Compiled filters, ready to install.
#[derive(Debug)]
pub struct Policy {
    filters: Vec<(String, BpfProgram)>,
}

impl Policy {
    /// Compiles a JSON policy for the running architecture.
    pub fn compile(json: &str) -> Result<Self, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
        let map =
            seccompiler::compile_from_json(json.as_bytes(), arch).map_err(SeccompError::Compile)?;
        let mut filters = map
            .into_iter()
            .map(|(name, prog)| match dispatch_tree(&prog) {
                Ok(tree) => Ok((name, tree)),
                Err(message) => Err(SeccompError::Shape { name, message }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        filters.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { filters })
    }

    /// Installs every filter on the calling thread (sets `no_new_privs` first).
    pub fn install(&self) -> Result<(), SeccompError> {
        for (name, prog) in &self.filters {
            seccompiler::apply_filter(prog).map_err(|source| SeccompError::Install {
                name: name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Names of the filters, in installation order.
    pub fn names(&self) -> Vec<&str> {
        self.filters.iter().map(|(n, _)| n.as_str()).collect()
    }
}

// Classic BPF opcodes (linux/bpf_common.h) that seccompiler's programs use.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const DATA_NR: u32 = 0;
/// The kernel's limit on a classic BPF program.
const BPF_MAXINSNS: usize = 4096;

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Rewrites a seccompiler program so the syscall number is found by binary
/// search instead of by one comparison per syscall in a row.
///
/// seccompiler's layout (0.5): the architecture check, `ld nr`, then one
/// block per syscall number in ascending order, each starting with
/// `jeq NR, 0, 1` whose false branch leaves the block through unconditional
/// jumps only (the block's rules skip each other), then the final
/// `ret <mismatch>`. This finds each block's start by following those false
/// branches, then inserts after `ld nr` a tree of `jge` on the sorted
/// numbers whose leaves are `jeq NR` to the block (whose own `jeq` then
/// matches) or to the final `ret`. A syscall without argument rules needs
/// no block: its leaf returns the action itself. Every other block, rule and
/// action stays as seccompiler emitted it and every jump in them keeps its
/// target. Errors if the program has another shape.
pub fn dispatch_tree(prog: &[sock_filter]) -> Result<BpfProgram, String> {
    let ld = prog
        .iter()
        .position(|i| i.code == BPF_LD_W_ABS && i.k == DATA_NR)
        .ok_or("no load of the syscall number")?;
    // Nothing before `ld nr` may jump past it (it is the arch check).
    for (pc, i) in prog[..ld].iter().enumerate() {
        let reach = if i.code == BPF_JMP_JA {
            usize::try_from(i.k).unwrap_or(usize::MAX)
        } else {
            usize::from(i.jt.max(i.jf))
        };
        if i.code & 0x07 == BPF_JMP_JA && pc.saturating_add(1).saturating_add(reach) > ld {
            return Err(format!(
                "instruction {pc} jumps past the syscall number load"
            ));
        }
    }
    // Each block's start (syscall number, index), in program order.
    let mut blocks: Vec<(u32, usize)> = Vec::new();
    let mut pc = ld + 1;
    let end = loop {
        let i = prog
            .get(pc)
            .ok_or("a block's false branch leaves the program")?;
        match i.code {
            BPF_RET_K => break pc,
            BPF_JMP_JEQ_K if i.jt == 0 && i.jf == 1 => {
                if blocks.last().is_some_and(|&(nr, _)| nr >= i.k) {
                    return Err(format!("syscall {} out of order at {pc}", i.k));
                }
                blocks.push((i.k, pc));
                // Follow the false branch through the rules' skip jumps.
                let mut next = pc + 2;
                while let Some(j) = prog.get(next).filter(|j| j.code == BPF_JMP_JA) {
                    next += 1 + usize::try_from(j.k).map_err(|e| e.to_string())?;
                }
                pc = next;
            }
            _ => return Err(format!("unexpected instruction {:#x} at {pc}", i.code)),
        }
    };
    if end + 1 != prog.len() {
        return Err(format!("the final return is at {end}, not at the end"));
    }
    if blocks.is_empty() {
        return Ok(prog.to_vec());
    }
    // A block without argument rules is `jeq NR, 0, 1; ja 1; ja 2; ret
    // <match>; ret <mismatch>`: its leaf returns <match> itself and the
    // block is left out. The others are kept in order; a kept block's false
    // branch then leads to the next kept one, which is still a correct walk
    // to the final `ret` (and never taken: the tree enters a block only when
    // its number matches).
    let starts: Vec<usize> = blocks.iter().map(|&(_, at)| at).chain([end]).collect();
    // The kept blocks follow the tree (after `ld nr`), then the final ret.
    let base = ld + 1;
    let first_block = base + subtree_len(blocks.len());
    let mut leaves = Vec::with_capacity(blocks.len());
    let mut kept: Vec<&[sock_filter]> = Vec::new();
    let mut kept_len = 0;
    for (n, &(nr, at)) in blocks.iter().enumerate() {
        let block = &prog[at..starts[n + 1]];
        match block {
            [_, ja1, ja2, ret, _]
                if *ja1 == jump(BPF_JMP_JA, 1, 0, 0)
                    && *ja2 == jump(BPF_JMP_JA, 2, 0, 0)
                    && ret.code == BPF_RET_K =>
            {
                leaves.push(Leaf {
                    nr,
                    to: To::Return(ret.k),
                });
            }
            _ => {
                leaves.push(Leaf {
                    nr,
                    to: To::Block(first_block + kept_len),
                });
                kept.push(block);
                kept_len += block.len();
            }
        }
    }
    let mut out = Vec::with_capacity(first_block + kept_len + 1);
    out.extend_from_slice(&prog[..base]);
    emit(&leaves, first_block + kept_len, &mut out)?;
    debug_assert_eq!(out.len(), first_block);
    for block in kept {
        out.extend_from_slice(block);
    }
    out.push(prog[end].clone());
    if out.len() > BPF_MAXINSNS {
        return Err(format!(
            "{} instructions with the search tree (kernel limit {BPF_MAXINSNS})",
            out.len()
        ));
    }
    Ok(out)
}

/// One syscall number at the bottom of the tree.
struct Leaf {
    nr: u32,
    to: To,
}

/// Where a matched syscall number goes.
enum To {
    /// Straight to `ret k`.
    Return(u32),
    /// The block at this absolute index (its own `jeq` then matches).
    Block(usize),
}

/// Instructions of the tree over `n` blocks (see [`emit`]).
fn subtree_len(n: usize) -> usize {
    if n == 1 {
        return 3;
    }
    let left = subtree_len(n / 2);
    let right = subtree_len(n - n / 2);
    // `jge` with its true branch over the left subtree, or through a `ja`
    // when the left subtree is longer than a conditional jump reaches.
    if left <= usize::from(u8::MAX) {
        1 + left + right
    } else {
        2 + left + right
    }
}

/// Appends the tree over `leaves` (sorted by number) to `out`, whose
/// instructions are at absolute indices (`out.len()` is the next one).
fn emit(leaves: &[Leaf], default: usize, out: &mut Vec<sock_filter>) -> Result<(), String> {
    let ja = |from: usize, to: usize| -> Result<sock_filter, String> {
        let off = to.checked_sub(from + 1).ok_or("a backward jump")?;
        Ok(jump(
            BPF_JMP_JA,
            u32::try_from(off).map_err(|e| e.to_string())?,
            0,
            0,
        ))
    };
    if let [Leaf { nr, ref to }] = *leaves {
        // jeq nr -> its action, else -> the final ret.
        out.push(jump(BPF_JMP_JEQ_K, nr, 0, 1));
        match *to {
            To::Return(k) => out.push(jump(BPF_RET_K, k, 0, 0)),
            To::Block(at) => out.push(ja(out.len(), at)?),
        }
        out.push(ja(out.len(), default)?);
        return Ok(());
    }
    let (left, right) = leaves.split_at(leaves.len() / 2);
    let pivot = right[0].nr;
    let left_len = subtree_len(left.len());
    if let Ok(over) = u8::try_from(left_len) {
        // nr >= pivot: over the left subtree; else fall into it.
        out.push(jump(BPF_JMP_JGE_K, pivot, over, 0));
        emit(left, default, out)?;
    } else {
        // nr >= pivot: the next `ja`; else skip it into the left subtree.
        out.push(jump(BPF_JMP_JGE_K, pivot, 0, 1));
        let at = out.len();
        out.push(ja(at, at + 1 + left_len)?);
        emit(left, default, out)?;
    }
    emit(right, default, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_json() -> serde_json::Value {
        serde_json::from_str(DEFAULT_POLICY.expect("a policy for this arch")).expect("json")
    }

    /// The syscalls the allowlist lets through, with or without conditions.
    fn allowed() -> Vec<String> {
        policy_json()["allowlist"]["filter"]
            .as_array()
            .expect("filter")
            .iter()
            .map(|r| r["syscall"].as_str().expect("name").to_owned())
            .collect()
    }

    /// A classic BPF interpreter for what seccompiler emits, over a
    /// `struct seccomp_data`; returns the action and the instructions run.
    fn run(prog: &[sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let i = &prog[pc];
            steps += 1;
            let k = i.k;
            let cond = |taken: bool| pc + 1 + usize::from(if taken { i.jt } else { i.jf });
            pc = match i.code {
                BPF_LD_W_ABS => {
                    let at = k as usize;
                    a = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
                    pc + 1
                }
                0x54 => {
                    a &= k; // alu and k
                    pc + 1
                }
                BPF_JMP_JA => pc + 1 + k as usize,
                BPF_JMP_JEQ_K => cond(a == k),
                0x25 => cond(a > k), // jgt k
                BPF_JMP_JGE_K => cond(a >= k),
                BPF_RET_K => return (k, steps),
                other => panic!("opcode {other:#x} at {pc}"),
            };
        }
    }

    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (n, arg) in args.iter().enumerate() {
            d[16 + 8 * n..24 + 8 * n].copy_from_slice(&arg.to_ne_bytes());
        }
        d
    }

    /// The search tree decides exactly as seccompiler's program for every
    /// syscall number (and numbers beyond the table, and a foreign
    /// architecture), with arguments built from every constant the rules
    /// compare against; and it finds any number in a few dozen steps where
    /// the row of comparisons took hundreds.
    #[test]
    fn dispatch_tree_decides_as_seccompiler_does() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).expect("arch");
        let json = DEFAULT_POLICY.expect("policy");
        let linear = seccompiler::compile_from_json(json.as_bytes(), arch).expect("compiles");
        let mut constants: Vec<u64> = vec![0, 1, u64::from(u32::MAX), u64::MAX];
        for prog in linear.values() {
            for i in prog.iter().filter(|i| i.code & 0x07 == BPF_JMP_JA) {
                constants.extend([
                    u64::from(i.k),
                    u64::from(i.k).wrapping_sub(1),
                    u64::from(i.k) + 1,
                ]);
                constants.push(u64::from(i.k) << 32);
            }
        }
        constants.sort_unstable();
        constants.dedup();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut numbers: Vec<u32> = (0..1100).collect();
        numbers.extend([0x4000_0000, 0x4000_0001, 0x7fff_ffff, u32::MAX]);
        let native = 0xc000_003e; // AUDIT_ARCH_X86_64
        let mut worst = (0usize, 0usize);
        let mut lengths = (0usize, 0usize);
        let mut checked = 0;
        for (name, prog) in &linear {
            let tree = dispatch_tree(prog).expect("seccompiler's shape");
            if name == "allowlist" {
                lengths = (prog.len(), tree.len());
            }
            for &nr in &numbers {
                for round in 0..24 {
                    let args: [u64; 6] = std::array::from_fn(|_| {
                        let r = next();
                        if round == 0 {
                            0
                        } else if r % 4 == 0 {
                            r
                        } else {
                            constants[(r >> 8) as usize % constants.len()]
                                | if r % 7 == 0 {
                                    constants[(r >> 20) as usize % constants.len()]
                                } else {
                                    0
                                }
                        }
                    });
                    for arch in [native, 0x4000_0003] {
                        let d = data(arch, nr, args);
                        let (want, steps_linear) = run(prog, &d);
                        let (got, steps_tree) = run(&tree, &d);
                        assert_eq!(got, want, "{name}: nr {nr} arch {arch:#x} args {args:x?}");
                        if round == 0 && arch == native && name == "allowlist" {
                            worst = (worst.0.max(steps_linear), worst.1.max(steps_tree));
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
        // log2(292) levels + leaf + the block: a few dozen, against hundreds.
        assert!(worst.0 > 500, "the row took at most {} steps", worst.0);
        assert!(worst.1 < 40, "the tree took up to {} steps", worst.1);
        // Syscalls without argument rules return from their leaf: shorter.
        assert!(lengths.1 < lengths.0, "{lengths:?}");
    }

    #[test]
    fn dispatch_tree_refuses_another_shape() {
        // No load of the syscall number.
        assert!(dispatch_tree(&[jump(BPF_RET_K, 0, 0, 0)]).is_err());
        // A block whose false branch is a conditional jump, not skips.
        let odd = [
            jump(BPF_LD_W_ABS, DATA_NR, 0, 0),
            jump(BPF_JMP_JEQ_K, 1, 0, 1),
            jump(BPF_RET_K, 0x7fff_0000, 0, 0),
            jump(BPF_JMP_JGE_K, 5, 0, 0),
            jump(BPF_RET_K, 0, 0, 0),
        ];
        assert!(dispatch_tree(&odd).is_err());
        // Blocks out of order (each as seccompiler emits one without rules).
        let block = |nr| {
            [
                jump(BPF_JMP_JEQ_K, nr, 0, 1),
                jump(BPF_JMP_JA, 1, 0, 0),
                jump(BPF_JMP_JA, 2, 0, 0),
                jump(BPF_RET_K, 0x7fff_0000, 0, 0),
                jump(BPF_RET_K, 0, 0, 0),
            ]
        };
        let mut unordered = vec![jump(BPF_LD_W_ABS, DATA_NR, 0, 0)];
        unordered.extend(block(7));
        unordered.extend(block(3));
        unordered.push(jump(BPF_RET_K, 0, 0, 0));
        let err = dispatch_tree(&unordered).expect_err("out of order");
        assert!(err.contains("out of order"), "{err}");
    }

    #[test]
    fn default_policy_compiles() {
        let policy = Policy::compile(DEFAULT_POLICY.expect("policy")).expect("policy compiles");
        assert_eq!(policy.names(), vec!["allowlist", "deny_enosys"]);
    }

    #[test]
    fn default_policy_denies_by_default() {
        let p = policy_json();
        assert_eq!(
            p["allowlist"]["mismatch_action"],
            serde_json::json!({"errno": 1})
        );
        assert_eq!(p["allowlist"]["filter_action"], "allow");
        assert_eq!(
            p["deny_enosys"]["filter_action"],
            serde_json::json!({"errno": 38})
        );
    }

    #[test]
    fn default_policy_leaves_out_the_dangerous_syscalls() {
        let allowed = allowed();
        for syscall in [
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "swapon",
            "reboot",
            "open_by_handle_at",
            "name_to_handle_at",
            "userfaultfd",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "io_uring_setup",
            "acct",
            "quotactl",
            "syslog",
            "sethostname",
            "settimeofday",
            "iopl",
            "ioperm",
            "kcmp",
            "pidfd_getfd",
            "modify_ldt",
        ] {
            assert!(
                !allowed.iter().any(|a| a == syscall),
                "{syscall} is allowed"
            );
        }
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let p = policy_json();
        let rules: Vec<&serde_json::Value> = p["allowlist"]["filter"]
            .as_array()
            .expect("filter")
            .iter()
            .filter(|r| r["syscall"] == "clone")
            .collect();
        assert_eq!(rules.len(), 1);
        let arg = &rules[0]["args"][0];
        let mask = arg["op"]["masked_eq"].as_u64().expect("mask");
        assert_eq!(arg["val"], 0);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(mask & flag as u64, 0, "flag {flag:#x} not masked");
        }
        assert_eq!(mask & (libc::CLONE_VM | libc::CLONE_THREAD) as u64, 0);
    }

    #[test]
    fn what_runtimes_need_is_allowed() {
        let allowed = allowed();
        for syscall in [
            "read",
            "write",
            "openat",
            "mmap",
            "futex",
            "epoll_wait",
            "clone",
            "execve",
            "arch_prctl",
            "rseq",
            "getrandom",
            "socket",
            "connect",
            "statx",
            "prlimit64",
        ] {
            assert!(allowed.iter().any(|a| a == syscall), "{syscall} is denied");
        }
    }
}
