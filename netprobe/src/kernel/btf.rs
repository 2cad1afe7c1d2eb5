//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`), enough to
//! find struct member offsets and sizes. Rust eBPF has no CO-RE relocations,
//! so the daemon resolves the offsets itself and hands them to the programs.
//!
//! Built to be fed hostile bytes: every read is bounds-checked, and a bad file
//! is an error, never a panic.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF (bad magic)")]
    BadMagic,
    #[error("BTF truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind { kind: u32, id: u32 },
    #[error("no struct `{0}` in BTF")]
    NoStruct(String),
    #[error("struct `{0}` has no member `{1}`")]
    NoMember(String, String),
    #[error("member `{0}` is a bitfield")]
    Bitfield(String),
    #[error("type {0} does not resolve to a sized type")]
    Unsized(u32),
}

const MAGIC: u16 = 0xeb9f;

mod kinds {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Where a member lives: byte offset from the start of the outer struct, and
/// the size of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// Parsed BTF: the raw bytes plus the byte position of each type record.
pub struct Btf {
    data: Vec<u8>,
    strings: (usize, usize),
    /// `type_at[id - 1]`: position of type `id`'s record in `data`.
    type_at: Vec<u32>,
}

struct TypeHdr {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Position of the kind-specific data that follows the 12-byte header.
    extra: usize,
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed(at))
}

impl Btf {
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Malformed(0));
        }
        if u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len
            .checked_add(type_off)
            .ok_or(BtfError::Malformed(8))?;
        let types_end = types_start
            .checked_add(type_len)
            .ok_or(BtfError::Malformed(12))?;
        let str_start = hdr_len
            .checked_add(str_off)
            .ok_or(BtfError::Malformed(16))?;
        let str_end = str_start
            .checked_add(str_len)
            .ok_or(BtfError::Malformed(20))?;
        if types_end > data.len() || str_end > data.len() {
            return Err(BtfError::Malformed(data.len()));
        }
        let mut btf = Btf {
            data,
            strings: (str_start, str_end),
            type_at: Vec::new(),
        };
        let mut at = types_start;
        while at < types_end {
            btf.type_at.push(at as u32);
            let id = btf.type_at.len() as u32;
            let h = btf.header_at(at)?;
            let extra = match h.kind {
                kinds::INT | kinds::VAR | kinds::DECL_TAG => 4,
                kinds::PTR
                | kinds::FWD
                | kinds::TYPEDEF
                | kinds::VOLATILE
                | kinds::CONST
                | kinds::RESTRICT
                | kinds::FUNC
                | kinds::FLOAT
                | kinds::TYPE_TAG => 0,
                kinds::ARRAY => 12,
                kinds::STRUCT | kinds::UNION | kinds::DATASEC | kinds::ENUM64 => 12 * h.vlen,
                kinds::ENUM | kinds::FUNC_PROTO => 8 * h.vlen,
                kind => return Err(BtfError::UnknownKind { kind, id }),
            } as usize;
            at = h.extra + extra;
            if at > types_end {
                return Err(BtfError::Malformed(at));
            }
        }
        Ok(btf)
    }

    pub fn type_count(&self) -> usize {
        self.type_at.len()
    }

    fn header_at(&self, at: usize) -> Result<TypeHdr, BtfError> {
        let info = u32_at(&self.data, at + 4)?;
        Ok(TypeHdr {
            name_off: u32_at(&self.data, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8)?,
            extra: at + 12,
        })
    }

    fn header(&self, id: u32) -> Result<TypeHdr, BtfError> {
        let at = *self
            .type_at
            .get((id as usize).wrapping_sub(1))
            .ok_or(BtfError::Unsized(id))?;
        self.header_at(at as usize)
    }

    fn name(&self, off: u32) -> &[u8] {
        let (start, end) = self.strings;
        let Some(s) = self.data[start..end].get(off as usize..) else {
            return b"";
        };
        let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..n]
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, TypeHdr), BtfError> {
        for _ in 0..32 {
            let h = self.header(id)?;
            match h.kind {
                kinds::TYPEDEF
                | kinds::VOLATILE
                | kinds::CONST
                | kinds::RESTRICT
                | kinds::TYPE_TAG => id = h.size_or_type,
                _ => return Ok((id, h)),
            }
        }
        Err(BtfError::Unsized(id))
    }

    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let (id, h) = self.resolve(id)?;
        match h.kind {
            kinds::INT
            | kinds::ENUM
            | kinds::ENUM64
            | kinds::STRUCT
            | kinds::UNION
            | kinds::FLOAT => Ok(h.size_or_type),
            kinds::PTR => Ok(8),
            kinds::ARRAY => {
                // Arrays of arrays, a few deep; an array of itself has no size.
                let (mut n, mut at) = (1u32, h.extra);
                for _ in 0..8 {
                    let elem = u32_at(&self.data, at)?;
                    n = n
                        .checked_mul(u32_at(&self.data, at + 8)?)
                        .ok_or(BtfError::Unsized(id))?;
                    let (elem, e) = self.resolve(elem)?;
                    if e.kind != kinds::ARRAY {
                        return self
                            .size_of(elem)?
                            .checked_mul(n)
                            .ok_or(BtfError::Unsized(id));
                    }
                    at = e.extra;
                }
                Err(BtfError::Unsized(id))
            }
            _ => Err(BtfError::Unsized(id)),
        }
    }

    fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        (1..=self.type_at.len() as u32)
            .find(|&id| {
                self.header(id).is_ok_and(|h| {
                    h.kind == kinds::STRUCT && self.name(h.name_off) == name.as_bytes()
                })
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Searches the members of struct/union `id` for `member`, descending into
    /// anonymous structs and unions (`struct_group`s). Returns the bit offset.
    fn find_member(
        &self,
        id: u32,
        member: &str,
        depth: u32,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        if depth > 8 {
            return Ok(None);
        }
        let (_, h) = self.resolve(id)?;
        if h.kind != kinds::STRUCT && h.kind != kinds::UNION {
            return Ok(None);
        }
        for i in 0..h.vlen as usize {
            let at = h.extra + 12 * i;
            let name = self.name(u32_at(&self.data, at)?);
            let ty = u32_at(&self.data, at + 4)?;
            let raw = u32_at(&self.data, at + 8)?;
            let (bit_off, bitfield) = if h.kind_flag {
                (raw & 0xff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if name == member.as_bytes() {
                if bitfield != 0 {
                    return Err(BtfError::Bitfield(member.to_string()));
                }
                return Ok(Some((bit_off, ty)));
            }
            if name.is_empty() {
                if let Some((inner, t)) = self.find_member(ty, member, depth + 1)? {
                    let bits = bit_off.checked_add(inner).ok_or(BtfError::Malformed(at))?;
                    return Ok(Some((bits, t)));
                }
            }
        }
        Ok(None)
    }

    /// Offset and size of `strukt.member` (anonymous nesting followed). A
    /// dotted `member` (`sk_backlog.rmem_alloc`) walks into named nested
    /// structs, adding their offsets.
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let mut id = self.find_struct(strukt)?;
        let mut bits = 0u32;
        for part in member.split('.') {
            let (off, ty) = self
                .find_member(id, part, 0)?
                .ok_or_else(|| BtfError::NoMember(strukt.to_string(), member.to_string()))?;
            bits = bits.checked_add(off).ok_or(BtfError::Unsized(ty))?;
            id = ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield(member.to_string()));
        }
        Ok(Member {
            offset: bits / 8,
            size: self.size_of(id)?,
        })
    }
}

/// The real BTF of the 6.18 kernel kept as test data.
#[cfg(test)]
pub(crate) fn test_btf_6_18() -> Btf {
    use std::io::Read;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/kernels/6.18/vmlinux.btf.gz"
    );
    let gz = std::fs::read(path).unwrap();
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut data)
        .unwrap();
    Btf::parse(data).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_btf_6_18 as btf_6_18;

    #[test]
    fn sk_buff_members_on_6_18() {
        let btf = btf_6_18();
        assert!(btf.type_count() > 10_000);
        // Values as pahole prints them for this kernel's struct sk_buff.
        let head = btf.member("sk_buff", "head").unwrap();
        assert_eq!(head.size, 8);
        // network_header sits inside the anonymous `headers` struct_group.
        let nh = btf.member("sk_buff", "network_header").unwrap();
        let th = btf.member("sk_buff", "transport_header").unwrap();
        assert_eq!((nh.size, th.size), (2, 2));
        assert_eq!(th.offset, nh.offset - 2);
        assert!(head.offset > nh.offset);
        let dport = btf.member("sock_common", "skc_dport").unwrap();
        assert_eq!(dport.size, 2);
        // A dotted path into a named nested struct: sk_rmem_alloc's home.
        let backlog = btf.member("sock", "sk_backlog").unwrap();
        let rmem = btf.member("sock", "sk_backlog.rmem_alloc").unwrap();
        assert_eq!(rmem.size, 4);
        assert!(rmem.offset >= backlog.offset && rmem.offset < backlog.offset + backlog.size);
        assert!(matches!(
            btf.member("sock", "sk_backlog.no_such"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member("sk_buff", "no_such"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.member("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert_eq!(Btf::parse(vec![]).err(), Some(BtfError::Malformed(0)));
        assert_eq!(Btf::parse(vec![0; 64]).err(), Some(BtfError::BadMagic));
        // Header claiming sections beyond the end.
        let mut d = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&u32::MAX.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(Btf::parse(d), Err(BtfError::Malformed(_))));
        // A truncated real file.
        let real = btf_6_18();
        let cut = real.data[..real.data.len() / 2].to_vec();
        assert!(Btf::parse(cut).is_err());
        // Every prefix of a small valid file fails cleanly.
        let small = real.data[..4096].to_vec();
        for n in 0..small.len() {
            let _ = Btf::parse(small[..n].to_vec());
        }
    }

    /// A blob of `types` (records as little-endian words) and `strings`.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let t: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut d = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, t.len() as u32, t.len() as u32, strings.len() as u32] {
            d.extend_from_slice(&w.to_le_bytes());
        }
        d.extend(t);
        d.extend_from_slice(strings);
        d
    }

    const fn info(kind: u32, vlen: u32) -> u32 {
        kind << 24 | vlen
    }

    /// Found by `cargo xtask fuzz btf`: an anonymous member's bit offset
    /// plus its inner member's overflowed u32.
    #[test]
    fn anonymous_member_offsets_that_overflow_are_errors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/fuzz/btf-anon-member-offset-overflow.btf"
        );
        let btf = Btf::parse(std::fs::read(path).unwrap()).unwrap();
        for (s, m) in [
            ("sk_buff", "head"),
            ("sk_buff", "network_header"),
            ("sk_buff", "transport_header"),
            ("sk_buff", "dev"),
            ("net_device", "nd_net.net"),
            ("net", "ns.inum"),
            ("sock_common", "skc_state"),
            ("sock_common", "skc_v6_rcv_saddr"),
            ("sock", "sk_backlog.rmem_alloc"),
        ] {
            let _ = btf.member(s, m);
        }
        // The same shape made by hand: `struct s { struct { int x; }; }`
        // with the anonymous struct at bit 0xffff_fff0 and x at bit 32.
        #[rustfmt::skip]
        const TYPES: [u32; 16] = [
            1, info(kinds::STRUCT, 1), 8, 0, 2, 0xffff_fff0,
            0, info(kinds::STRUCT, 1), 8, 3, 3, 32,
            0, info(kinds::INT, 0), 4, 32,
        ];
        let btf = Btf::parse(blob(&TYPES, b"\0s\0x\0")).unwrap();
        assert!(matches!(btf.member("s", "x"), Err(BtfError::Malformed(_))));
    }

    /// An array whose element type is itself has no size (and must not
    /// recurse for ever).
    #[test]
    fn self_referencing_arrays_are_errors() {
        #[rustfmt::skip]
        const TYPES: [u32; 16] = [
            1, info(kinds::STRUCT, 1), 8, 3, 2, 0,
            0, info(kinds::ARRAY, 0), 0, 2, 3, 1,
            0, info(kinds::INT, 0), 4, 32,
        ];
        let btf = Btf::parse(blob(&TYPES, b"\0s\0x\0")).unwrap();
        assert_eq!(btf.member("s", "x"), Err(BtfError::Unsized(2)));
    }
}
