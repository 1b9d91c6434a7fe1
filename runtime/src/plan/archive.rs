//! The checks a plan's graph archive passes before tract reads it.
//!
//! tract-nnef trusts its archive: it allocates each tensor from the size its `.dat` header states,
//! reads `graph.nnef` to the end, and decompresses a gzipped archive without bound. A plan's checksum
//! proves only that the bytes are the ones that were sealed, not that whoever sealed them was Perch.
//! So every entry is looked at here first, with the bytes actually present: a tensor tract allocates
//! is then backed by that many bytes in the archive, and the whole archive by at most
//! [`ArchiveLimits::max_bytes`] of memory.

use std::borrow::Cow;
use std::io::{self, Read};
use std::path::{Component, Path};

use super::PlanError;

/// Bounds on a graph archive. [`ArchiveLimits::PLAN`] is what [`super::Plan::from_bytes`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Bytes of the archive once decompressed (a gzip bomb stops here).
    pub max_bytes: u64,
    /// Entries in the archive: a Perch graph has one per weight tensor plus its text, a few hundred
    /// for the largest image classifiers.
    pub max_entries: u64,
    /// Elements of one weight tensor.
    pub max_tensor_elements: u64,
}

impl ArchiveLimits {
    pub const PLAN: ArchiveLimits = ArchiveLimits {
        max_bytes: super::MAX_PLAN_BYTES,
        max_entries: 10_000,
        max_tensor_elements: super::MAX_TENSOR_ELEMENTS,
    };
}

/// Size of the header of an NNEF tensor file (`.dat`).
const TENSOR_HEADER_LEN: usize = 128;
/// tract's vendor code in the `.dat` header (`TR`), used for its string tensors.
const TRACT_VENDOR: u16 = (b'T' as u16) << 8 | b'R' as u16;
const TRACT_STRING: u16 = 0x1000;

/// Checks `graph` (a tar, or a gzipped tar) against `limits` and returns the plain tar, decompressed
/// when it was gzipped, for tract to read.
pub fn check<'a>(graph: &'a [u8], limits: &ArchiveLimits) -> Result<Cow<'a, [u8]>, PlanError> {
    if graph.starts_with(&[0x1f, 0x8b]) {
        let capped = Capped::new(flate2::read::GzDecoder::new(graph), limits.max_bytes, true);
        let plain = scan(capped, limits)?;
        Ok(Cow::Owned(plain))
    } else {
        scan(Capped::new(graph, limits.max_bytes, false), limits)?;
        Ok(Cow::Borrowed(graph))
    }
}

/// A reader that refuses to go past `max` bytes, and keeps what it read when asked to.
struct Capped<R> {
    inner: R,
    read: u64,
    max: u64,
    over: bool,
    kept: Option<Vec<u8>>,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, max: u64, keep: bool) -> Self {
        Capped { inner, read: 0, max, over: false, kept: keep.then(Vec::new) }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            self.over = true;
            return Err(io::Error::other("the graph archive is over its size limit"));
        }
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

fn scan<R: Read>(reader: Capped<R>, limits: &ArchiveLimits) -> Result<Vec<u8>, PlanError> {
    let mut archive = tar::Archive::new(reader);
    let scanned = scan_entries(&mut archive, limits);
    let mut reader = archive.into_inner();
    // What follows the end-of-archive marker is read too, so that the bytes kept are the whole
    // stream (and the size limit covers it). After a damaged entry, a damaged gzip stream is the
    // better explanation: the tar parser saw garbage because the decompressor made it.
    let drained = match &scanned {
        Ok(()) => io::copy(&mut reader, &mut io::sink()).map(drop),
        Err(PlanError::GraphArchive(_)) => {
            reader.kept = None;
            io::copy(&mut reader, &mut io::sink()).map(drop)
        }
        Err(_) => Ok(()),
    };
    if reader.over {
        return Err(PlanError::GraphTooLarge { max: limits.max_bytes });
    }
    match (scanned, drained) {
        (Err(PlanError::GraphArchive(_)), Err(e)) | (Ok(()), Err(e)) => Err(PlanError::GraphArchive(format!("gzip stream: {e}"))),
        (Err(e), _) => Err(e),
        (Ok(()), Ok(())) => Ok(reader.kept.unwrap_or_default()),
    }
}

fn damaged(e: io::Error) -> PlanError {
    PlanError::GraphArchive(super::one_line(&e.to_string()))
}

fn scan_entries<R: Read>(archive: &mut tar::Archive<R>, limits: &ArchiveLimits) -> Result<(), PlanError> {
    let mut count = 0u64;
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        count += 1;
        if count > limits.max_entries {
            return Err(PlanError::TooManyEntries { max: limits.max_entries });
        }
        let path = entry.path().map_err(damaged)?.into_owned();
        let name = path.display().to_string();
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_))) {
            return Err(PlanError::UnsafePath(name));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(PlanError::GraphArchive(format!("entry {name} is a {kind:?}, not a plain file")));
        }
        let size = entry.size();
        if size > limits.max_bytes {
            return Err(PlanError::EntryTooLarge { path: name, bytes: size, max: limits.max_bytes });
        }
        let mut read = 0u64;
        if path.extension().is_some_and(|e| e == "dat") {
            let mut header = [0u8; TENSOR_HEADER_LEN];
            entry.read_exact(&mut header).map_err(|_| tensor_err(&path, format!("entry of {size} bytes has no complete 128-byte header")))?;
            check_tensor_header(&path, &header, size, limits)?;
            read = TENSOR_HEADER_LEN as u64;
        }
        read += io::copy(&mut entry, &mut io::sink()).map_err(damaged)?;
        if read != size {
            return Err(PlanError::GraphArchive(format!("entry {name} is truncated: {read} of its {size} bytes")));
        }
    }
    Ok(())
}

fn tensor_err(path: &Path, why: String) -> PlanError {
    PlanError::Tensor { path: path.display().to_string(), why }
}

/// The NNEF tensor header (tract-nnef `tensors.rs`): magic, version, data bytes, rank, 8 dims, bits per
/// item, item type and vendor, all little-endian.
fn check_tensor_header(path: &Path, h: &[u8; TENSOR_HEADER_LEN], entry_size: u64, limits: &ArchiveLimits) -> Result<(), PlanError> {
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let u16_at = |at: usize| u16::from_le_bytes(h[at..at + 2].try_into().expect("2 bytes"));
    let err = |why: String| Err(tensor_err(path, why));
    if h[..2] != [0x4e, 0xef] {
        return err("not an NNEF tensor (bad magic)".into());
    }
    let data_bytes = u64::from(u32_at(4));
    let rank = u32_at(8);
    if rank > 8 {
        return err(format!("rank {rank}, NNEF tensors have at most 8 dimensions"));
    }
    let dims: Vec<u64> = (0..rank as usize).map(|i| u64::from(u32_at(12 + 4 * i))).collect();
    let Some(elements) = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)) else {
        return err(format!("shape {dims:?} has more elements than a 64-bit count holds"));
    };
    if elements > limits.max_tensor_elements {
        return Err(PlanError::TensorTooLarge { path: path.display().to_string(), elements, max: limits.max_tensor_elements });
    }
    if TENSOR_HEADER_LEN as u64 + data_bytes != entry_size {
        return err(format!("header says {data_bytes} data bytes, the entry holds {}", entry_size.saturating_sub(TENSOR_HEADER_LEN as u64)));
    }
    let bits = u32_at(44);
    let (item_type, vendor) = (u16_at(48), u16_at(50));
    let expected = match (vendor, item_type, bits) {
        (0, 0..=4, 8 | 16 | 32 | 64) => Some(elements * u64::from(bits / 8)),
        (0, 5, 8) => Some(elements),
        (0, 5, 1) => Some(elements.div_ceil(8)),
        // Each string is at least its u32 length.
        (TRACT_VENDOR, TRACT_STRING, _) if elements.saturating_mul(4) <= data_bytes => None,
        (TRACT_VENDOR, TRACT_STRING, _) => {
            return err(format!("{elements} strings cannot fit in {data_bytes} bytes"));
        }
        _ => return err(format!("item type {item_type} (vendor {vendor:#06x}, {bits} bits) is not one Perch plans use")),
    };
    if let Some(expected) = expected
        && expected != data_bytes
    {
        return err(format!("shape {dims:?} of {bits}-bit items needs {expected} bytes, the header says {data_bytes}"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn tensor(dims: &[u32], bits: u32, item_type: u16, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; TENSOR_HEADER_LEN];
        h[..4].copy_from_slice(&[0x4e, 0xef, 1, 0]);
        h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(dims.len() as u32).to_le_bytes());
        for (i, d) in dims.iter().enumerate() {
            h[12 + 4 * i..16 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        h[44..48].copy_from_slice(&bits.to_le_bytes());
        h[48..50].copy_from_slice(&item_type.to_le_bytes());
        h.extend_from_slice(data);
        h
    }

    /// A plain tar of `entries`, as tract-nnef writes them (also for the NNEF tests in `ops`).
    pub(crate) fn tar(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_sound_archive_passes_and_gzip_is_unpacked() {
        let plain = tar(&[("graph.nnef", b"version 1.0;".to_vec()), ("w.dat", tensor(&[2, 3], 32, 0, &[0; 24]))]);
        assert!(matches!(check(&plain, &ArchiveLimits::PLAN).unwrap(), Cow::Borrowed(_)));
        assert_eq!(&*check(&gzip(&plain), &ArchiveLimits::PLAN).unwrap(), &plain[..]);
    }

    #[test]
    fn each_limit_and_damage_has_its_error() {
        let limits = ArchiveLimits { max_bytes: 4096, max_entries: 3, max_tensor_elements: 100 };
        let many = tar(&[("a", vec![]), ("b", vec![]), ("c", vec![]), ("d", vec![])]);
        assert!(matches!(check(&many, &limits), Err(PlanError::TooManyEntries { max: 3 })));
        let bomb = gzip(&vec![0u8; 100_000]);
        assert!(matches!(check(&bomb, &limits), Err(PlanError::GraphTooLarge { max: 4096 })));
        let big = tar(&[("w.dat", tensor(&[11, 10], 8, 3, &[0; 110]))]);
        let err = check(&big, &limits).unwrap_err();
        assert!(matches!(err, PlanError::TensorTooLarge { elements: 110, max: 100, .. }), "{err}");
        let overflow = tar(&[("w.dat", tensor(&[u32::MAX, u32::MAX, u32::MAX], 32, 0, &[0; 4]))]);
        assert!(check(&overflow, &ArchiveLimits::PLAN).unwrap_err().to_string().contains("more elements than"));
        let lying = tar(&[("w.dat", tensor(&[4], 32, 0, &[0; 12]))]);
        assert!(check(&lying, &ArchiveLimits::PLAN).unwrap_err().to_string().contains("needs 16 bytes"));
        let empty_bool = tar(&[("w.dat", tensor(&[9], 1, 5, &[]))]);
        assert!(matches!(check(&empty_bool, &ArchiveLimits::PLAN), Err(PlanError::Tensor { .. })));
        let mut truncated = tar(&[("graph.nnef", vec![b'x'; 2000])]);
        truncated.truncate(1024);
        assert!(check(&truncated, &ArchiveLimits::PLAN).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn paths_out_of_the_archive_are_refused() {
        // tar::Builder refuses `..` itself: write the name into the header by hand.
        let mut bytes = tar(&[("xx/evil.dat", vec![])]);
        bytes[..11].copy_from_slice(b"../evil.dat");
        let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
        h.set_cksum();
        bytes[..512].copy_from_slice(h.as_bytes());
        assert!(matches!(check(&bytes, &ArchiveLimits::PLAN), Err(PlanError::UnsafePath(p)) if p == "../evil.dat"));
    }
}
