//! The `.perch` container: a fixed header, the manifest (JSON) and the NNEF graph (tar), checksummed.
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"\x89PERCH\r\n"  (the \x89 and \r\n catch text-mode mangling, as in PNG)
//!      8     4  format version, u32 LE
//!     12     4  manifest length M, u32 LE
//!     16     8  graph length G, u64 LE
//!     24    32  SHA-256 of the manifest and graph bytes, in that order
//!     56     M  manifest, UTF-8 JSON
//!   56+M     G  graph: NNEF archive (tar) as tract-nnef writes it
//! ```

use sha2::{Digest, Sha256};

use super::PlanError;

pub const MAGIC: [u8; 8] = *b"\x89PERCH\r\n";
pub const HEADER_LEN: usize = 56;

/// The parts of a container whose framing and checksum have been verified.
pub struct Parts<'a> {
    pub format_version: u32,
    pub manifest: &'a [u8],
    pub graph: &'a [u8],
    pub checksum: [u8; 32],
}

pub fn checksum(manifest: &[u8], graph: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(manifest);
    h.update(graph);
    h.finalize().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn encode(format_version: u32, manifest: &[u8], graph: &[u8]) -> Result<Vec<u8>, PlanError> {
    let manifest_len =
        u32::try_from(manifest.len()).map_err(|_| PlanError::TooLarge { what: "manifest", bytes: manifest.len() as u64 })?;
    let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + graph.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&format_version.to_le_bytes());
    out.extend_from_slice(&manifest_len.to_le_bytes());
    out.extend_from_slice(&(graph.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(manifest, graph));
    out.extend_from_slice(manifest);
    out.extend_from_slice(graph);
    Ok(out)
}

/// Checks magic, version, lengths and checksum, in that order, so that the first problem found is the
/// one reported: a file from a newer Perch says so even if its layout changed.
pub fn decode(bytes: &[u8], supported_version: u32) -> Result<Parts<'_>, PlanError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(PlanError::NotAPlan);
    }
    if bytes.len() < HEADER_LEN {
        return Err(PlanError::Truncated { expected: HEADER_LEN as u64, found: bytes.len() as u64 });
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let format_version = u32_at(8);
    if format_version != supported_version {
        return Err(PlanError::UnsupportedVersion { found: format_version, supported: supported_version });
    }
    let manifest_len = u64::from(u32_at(12));
    let graph_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let expected = (HEADER_LEN as u64).checked_add(manifest_len).and_then(|n| n.checked_add(graph_len));
    let found = bytes.len() as u64;
    match expected {
        Some(e) if e == found => {}
        Some(e) if e > found => return Err(PlanError::Truncated { expected: e, found }),
        Some(e) => return Err(PlanError::TrailingBytes { expected: e, found }),
        None => return Err(PlanError::Truncated { expected: u64::MAX, found }),
    }
    let checksum_stored: [u8; 32] = bytes[24..56].try_into().expect("32 bytes");
    let manifest = &bytes[HEADER_LEN..HEADER_LEN + manifest_len as usize];
    let graph = &bytes[HEADER_LEN + manifest_len as usize..];
    let actual = checksum(manifest, graph);
    if actual != checksum_stored {
        return Err(PlanError::ChecksumMismatch { stored: hex(&checksum_stored), actual: hex(&actual) });
    }
    Ok(Parts { format_version, manifest, graph, checksum: actual })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_each_kind_of_damage() {
        let bytes = encode(3, b"{}", b"graph bytes").unwrap();
        let parts = decode(&bytes, 3).unwrap();
        assert_eq!((parts.manifest, parts.graph), (&b"{}"[..], &b"graph bytes"[..]));

        assert!(matches!(decode(&bytes, 4), Err(PlanError::UnsupportedVersion { found: 3, supported: 4 })));
        assert!(matches!(decode(b"PK\x03\x04 a zip", 3), Err(PlanError::NotAPlan)));
        assert!(matches!(decode(&bytes[..30], 3), Err(PlanError::Truncated { .. })));
        assert!(matches!(decode(&bytes[..bytes.len() - 1], 3), Err(PlanError::Truncated { .. })));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer, 3), Err(PlanError::TrailingBytes { .. })));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(decode(&flipped, 3), Err(PlanError::ChecksumMismatch { .. })));
    }

    #[test]
    fn huge_declared_lengths_do_not_overflow() {
        let mut bytes = encode(1, b"{}", b"g").unwrap();
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes, 1), Err(PlanError::Truncated { .. })));
    }
}
