//! Just enough ELF64 reading for the VM image: is a binary static (no
//! `PT_INTERP`), and what does a kernel module depend on (`depends=` in its
//! `.modinfo` section).

use anyhow::{bail, ensure, Context, Result};

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

fn check_header(elf: &[u8]) -> Result<()> {
    ensure!(elf.get(..4) == Some(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not a little-endian 64-bit ELF file"
    );
    Ok(())
}

/// True when the executable asks for a dynamic loader (so it will not start
/// in an initramfs that has none).
pub fn has_interp(elf: &[u8]) -> Result<bool> {
    check_header(elf)?;
    let (phoff, phentsize, phnum) =
        (|| Some((u64_at(elf, 0x20)?, u16_at(elf, 0x36)?, u16_at(elf, 0x38)?)))()
            .context("truncated ELF header")?;
    for i in 0..usize::from(phnum) {
        let at = phoff + i * usize::from(phentsize);
        let p_type = u32_at(elf, at).context("truncated program header table")?;
        if p_type == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The bytes of section `name`.
pub fn section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    check_header(elf)?;
    let header = || {
        Some((
            u64_at(elf, 0x28)?,
            u16_at(elf, 0x3a)?,
            u16_at(elf, 0x3c)?,
            u16_at(elf, 0x3e)?,
        ))
    };
    let (shoff, shentsize, shnum, shstrndx) = header().context("truncated ELF header")?;
    let shdr = |i: usize| {
        let at = shoff + i * usize::from(shentsize);
        Some((
            u32_at(elf, at)? as usize,
            u64_at(elf, at + 0x18)?,
            u64_at(elf, at + 0x20)?,
        ))
    };
    let (_, str_off, str_size) = shdr(usize::from(shstrndx)).context("no section name table")?;
    let names = elf
        .get(str_off..str_off + str_size)
        .context("section name table out of bounds")?;
    for i in 0..usize::from(shnum) {
        let (name_off, off, size) = shdr(i).context("truncated section header table")?;
        let Some(rest) = names.get(name_off..) else {
            bail!("section name out of bounds");
        };
        let this = rest.split(|&c| c == 0).next().unwrap_or_default();
        if this == name.as_bytes() {
            return elf
                .get(off..off + size)
                .map(Some)
                .context("section out of bounds");
        }
    }
    Ok(None)
}

/// The modules a kernel module needs loaded first (`depends=` in `.modinfo`).
pub fn module_depends(ko: &[u8]) -> Result<Vec<String>> {
    let Some(modinfo) = section(ko, ".modinfo")? else {
        bail!("no .modinfo section");
    };
    Ok(modinfo
        .split(|&c| c == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal ELF64 with the given program header types and sections
    /// (a null section, then `sections`, then the name table).
    pub fn fake_elf(phdrs: &[u32], sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        // program headers right after the header
        let phoff = e.len();
        for &t in phdrs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            e.extend(ph);
        }
        // section contents, then the name table
        let mut names = vec![0u8];
        let mut placed = vec![(0u32, 0usize, 0usize)];
        for (name, data) in sections {
            let name_off = names.len() as u32;
            names.extend(name.as_bytes());
            names.push(0);
            placed.push((name_off, e.len(), data.len()));
            e.extend(*data);
        }
        let shstr_name = names.len() as u32;
        names.extend(b".shstrtab\0");
        placed.push((shstr_name, e.len(), names.len()));
        e.extend(&names);
        let shoff = e.len();
        for (name, off, size) in &placed {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(*off as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(*size as u64).to_le_bytes());
            e.extend(sh);
        }
        e[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        e[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        e[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        e[0x3c..0x3e].copy_from_slice(&(placed.len() as u16).to_le_bytes());
        e[0x3e..0x40].copy_from_slice(&((placed.len() - 1) as u16).to_le_bytes());
        e
    }

    #[test]
    fn interp_means_dynamic() {
        // PT_LOAD, PT_INTERP, PT_DYNAMIC: a dynamically linked executable.
        assert!(has_interp(&fake_elf(&[6, 3, 1, 2], &[])).unwrap());
        // static-pie: PT_LOAD and PT_DYNAMIC but no PT_INTERP.
        assert!(!has_interp(&fake_elf(&[6, 1, 1, 2], &[])).unwrap());
        assert!(has_interp(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn module_depends_come_from_modinfo() {
        // As in Debian 6.1's nf_conntrack.ko .modinfo.
        let modinfo: &[u8] = b"license=GPL\0alias=nf_conntrack-10\0depends=nf_defrag_ipv6,libcrc32c,nf_defrag_ipv4\0retpoline=Y\0intree=Y\0name=nf_conntrack\0";
        let ko = fake_elf(&[], &[(".text", b"\x90\x90"), (".modinfo", modinfo)]);
        assert_eq!(section(&ko, ".text").unwrap(), Some(&b"\x90\x90"[..]));
        assert_eq!(
            module_depends(&ko).unwrap(),
            ["nf_defrag_ipv6", "libcrc32c", "nf_defrag_ipv4"]
        );
        // veth: `depends=` present but empty.
        let ko = fake_elf(&[], &[(".modinfo", b"depends=\0name=veth\0")]);
        assert!(module_depends(&ko).unwrap().is_empty());
        let ko = fake_elf(&[], &[(".text", b"")]);
        assert!(module_depends(&ko).is_err());
    }
}
