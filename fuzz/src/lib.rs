//! What the fuzz targets share: checksum fix-ups, so that mutated inputs get past the integrity checks
//! (which a fuzzer cannot satisfy by chance) and reach the parsers behind them.

use perch_runtime::plan::container;

/// Makes a mutated `.perch` container self-consistent where its framing allows: the tar header
/// checksums of a plain-tar graph, the manifest's `graph_sha256`, and the header's SHA-256. Inputs
/// whose declared lengths do not add up are returned unchanged, so the framing checks stay fuzzed.
pub fn reseal_perch(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    let header = container::HEADER_LEN;
    if bytes.len() < header || bytes[..8] != container::MAGIC {
        return bytes;
    }
    let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as u64;
    let graph_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    if (header as u64).checked_add(manifest_len).and_then(|n| n.checked_add(graph_len)) != Some(bytes.len() as u64) {
        return bytes;
    }
    let graph_at = header + manifest_len as usize;
    let (head, graph) = bytes.split_at_mut(graph_at);
    fix_tar_checksums(graph);
    let graph_hash = container::hex(&container::checksum(b"", graph));
    let manifest = &mut head[header..];
    if let Some(at) = find(manifest, b"\"graph_sha256\"") {
        let rest = &manifest[at + 14..];
        if let Some(open) = rest.iter().position(|&b| b == b'"') {
            let start = at + 14 + open + 1;
            if manifest.get(start + 64) == Some(&b'"') {
                manifest[start..start + 64].copy_from_slice(graph_hash.as_bytes());
            }
        }
    }
    let sum = container::checksum(&bytes[header..graph_at], &bytes[graph_at..]);
    bytes[24..56].copy_from_slice(&sum);
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the checksum of every ustar/GNU header of a tar archive, walking entries by their sizes.
/// A gzipped archive is left alone; a header with a binary size field ends the walk.
fn fix_tar_checksums(tar: &mut [u8]) {
    if tar.starts_with(&[0x1f, 0x8b]) {
        return;
    }
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        if block.iter().all(|&b| b == 0) || block[124] & 0x80 != 0 {
            return;
        }
        let size_field = &block[124..136];
        let digits: Vec<u8> =
            size_field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
        let size = u64::from_str_radix(std::str::from_utf8(&digits).unwrap_or("0"), 8).unwrap_or(0);
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let Some(next) = size.checked_add(511).map(|s| s / 512 * 512).and_then(|s| s.checked_add(512 + at as u64))
        else {
            return;
        };
        at = next.min(usize::MAX as u64) as usize;
    }
}

/// Rewrites the CRC of a mutated `.pmc` plan (offsets from perch-micro's format table: total length
/// at 8, CRC at 12 over bytes 16..total) when its stated length fits the input.
pub fn reseal_pmc(bytes: &mut [u8]) {
    if bytes.len() < 64 || bytes[..4] != *b"PMC\0" {
        return;
    }
    let total = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    if total < 16 || total > bytes.len() {
        return;
    }
    let crc = perch_micro::crc32(&bytes[16..total]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Replaces libfuzzer-sys's abort-on-panic hook with the default one (the message still goes to stderr),
/// for targets whose library deliberately turns a dependency's panic into an error with
/// `catch_unwind`. A panic that escapes the target still aborts: libfuzzer-sys catches it and aborts.
pub fn allow_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::panic::take_hook();
    });
}
