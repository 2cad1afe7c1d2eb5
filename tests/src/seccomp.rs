//! A seccomp filter that makes `bpf(2)` fail with EPERM, for running the
//! daemon as on a kernel (or in a container) where eBPF is refused. Classic
//! BPF, installed with prctl: no library needed.

use std::io;

// include/uapi/linux/filter.h and seccomp.h, audit.h.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `struct seccomp_data`: `nr` then `arch`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JMP_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter: on x86_64, `bpf` gets EPERM and everything else is allowed
/// (another architecture is allowed through untouched).
pub fn program() -> [libc::sock_filter; 6] {
    [
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
        jeq(libc::SYS_bpf as u32, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filter on the calling thread (for `pre_exec`: it then
/// holds for the executed program and all its threads).
pub fn deny_bpf() -> io::Result<()> {
    let filter = program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a valid sock_fprog that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_is_refused_and_nothing_else() {
        // In a child thread: the filter stays with that thread only.
        let (bpf_err, getpid_ok) = std::thread::spawn(|| {
            deny_bpf().expect("install the filter");
            // SAFETY: bpf(2) with a null attr: refused by the filter before
            // the kernel looks at it.
            let r = unsafe { libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0) };
            let err = io::Error::last_os_error().raw_os_error();
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            ((r, err), pid > 0)
        })
        .join()
        .unwrap();
        assert_eq!(bpf_err, (-1, Some(libc::EPERM)));
        assert!(getpid_ok);
    }
}
