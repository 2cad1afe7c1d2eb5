//! A cpio "newc" writer (the format the kernel unpacks as an initramfs):
//! directories, files, symlinks and device nodes, all owned by root, without
//! needing root or mknod on the host.

use std::{
    fs::File,
    io::{self, Write},
    path::Path,
};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

pub struct Writer<W: Write> {
    out: W,
    /// Bytes written so far (entries are 4-byte aligned).
    pos: u64,
    next_ino: u32,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            pos: 0,
            next_ino: 1,
        }
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFDIR | perm,
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        })
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFREG | perm,
            nlink: 1,
            size: data.len() as u64,
            rdev: (0, 0),
        })?;
        self.write(data)?;
        self.pad()
    }

    /// A regular file copied from `src` on the host (streamed, not read into memory).
    pub fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> io::Result<()> {
        let mut f = File::open(src)?;
        let size = f.metadata()?.len();
        self.header(Header {
            name,
            mode: S_IFREG | perm,
            nlink: 1,
            size,
            rdev: (0, 0),
        })?;
        let copied = io::copy(&mut f, &mut self.out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "{} changed while being copied",
                src.display()
            )));
        }
        self.pos += copied;
        self.pad()
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size: target.len() as u64,
            rdev: (0, 0),
        })?;
        self.write(target.as_bytes())?;
        self.pad()
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFCHR | perm,
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.header(Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, h: Header) -> io::Result<()> {
        let size = u32::try_from(h.size)
            .map_err(|_| io::Error::other(format!("{} is too big for cpio newc", h.name)))?;
        let ino = self.next_ino;
        if ino != 0 {
            self.next_ino += 1;
        }
        let fields = [
            ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            h.rdev.0,
            h.rdev.1,
            h.name.len() as u32 + 1,
            0, // check
        ];
        let mut text = String::from("070701");
        for f in fields {
            text.push_str(&format!("{f:08x}"));
        }
        self.write(text.as_bytes())?;
        self.write(h.name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.pos % 4) as usize) % 4;
        self.write(&[0; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, rdev, data) of an entry.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Each entry, read back with the format's rules.
    fn read(mut b: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        loop {
            assert_eq!(pos % 4, 0, "entry not aligned");
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let rdev = (field(9), field(10));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(b.len(), next, "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rdev, data));
            b = &b[next..];
            pos += next;
        }
    }

    #[test]
    fn header_is_newc() {
        let mut w = Writer::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        let b = w.finish().unwrap();
        let header = std::str::from_utf8(&b[..110]).unwrap();
        assert_eq!(
            header,
            "070701\
             00000001\
             000041ed\
             00000000\
             00000000\
             00000002\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000004\
             00000000"
        );
        // "bin\0" ends at 114; two NULs pad the entry to 116, then the trailer.
        assert_eq!(&b[110..116], b"bin\0\0\0");
        assert_eq!(&b[116..122], b"070701");
        assert_eq!(b.len() % 4, 0);
    }

    #[test]
    fn entries_round_trip_aligned() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        std::fs::write(&dir, b"hello\n").unwrap();
        let mut w = Writer::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.file_from("etc/greeting", 0o644, &dir).unwrap();
        w.file("empty", 0o644, b"").unwrap();
        let b = w.finish().unwrap();
        std::fs::remove_file(&dir).unwrap();
        let entries = read(&b);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "bin/sh",
                "etc/greeting",
                "empty"
            ]
        );
        assert_eq!(entries[1].1, 0o020600);
        assert_eq!(entries[1].2, (5, 1));
        assert_eq!(entries[2].1, 0o100755);
        assert_eq!(entries[2].3, b"#!/bin/sh\necho hi\n");
        assert_eq!(entries[3].1, 0o120777);
        assert_eq!(entries[3].3, b"busybox");
        assert_eq!(entries[4].3, b"hello\n");
        assert!(entries[5].3.is_empty());
    }
}
