//! Archive formats are told by their first bytes, never by the file name:
//! `code.tar.gz` may hold gzip, zstd or a plain tar (runtime-protocol §5.10).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Squashfs,
    Gzip,
    Zstd,
    Zip,
    Tar,
}

pub fn sniff(head: &[u8]) -> Format {
    match head {
        [0x68, 0x73, 0x71, 0x73, ..] => Format::Squashfs,
        [0x1f, 0x8b, ..] => Format::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Format::Zstd,
        [b'P', b'K', 3, 4, ..] => Format::Zip,
        _ => Format::Tar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide() {
        assert_eq!(sniff(b"hsqs...."), Format::Squashfs);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Format::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Format::Zstd);
        assert_eq!(sniff(b"PK\x03\x04"), Format::Zip);
        assert_eq!(sniff(b"index.js"), Format::Tar);
        assert_eq!(sniff(b""), Format::Tar);
    }
}
