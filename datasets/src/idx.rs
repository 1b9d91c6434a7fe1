//! IDX files (the MNIST / Fashion-MNIST format): a big-endian header, then the raw array.
//! Gzip-compressed files are recognized by their magic bytes, whatever their name.

use std::io::Read;
use std::path::Path;

use crate::DatasetError;

/// An IDX array of unsigned bytes (type code 0x08, the only one (Fashion-)MNIST uses).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Sizes above this are refused: the largest IDX set in use (60k MNIST-size images) is 47 MB.
const MAX_IDX_BYTES: u64 = 1 << 30;

pub fn read(path: &Path) -> Result<IdxArray, DatasetError> {
    let read_err = |source| DatasetError::Read { path: path.display().to_string(), error: source };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_IDX_BYTES {
        return Err(DatasetError::format(path, format!("{len} bytes, over the {MAX_IDX_BYTES}-byte limit for an IDX file")));
    }
    let raw = std::fs::read(path).map_err(read_err)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| DatasetError::format(path, format!("gzip stream is damaged: {e}")))?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(DatasetError::format(path, format!("decompresses to more than {MAX_IDX_BYTES} bytes, the limit")));
        }
        out
    } else {
        raw
    };
    parse(&bytes).map_err(|msg| DatasetError::format(path, msg))
}

pub fn parse(bytes: &[u8]) -> Result<IdxArray, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err("IDX header is truncated".into());
    }
    let dims: Vec<usize> =
        (0..ndim).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or("IDX dimensions overflow")?;
    let data = &bytes[header..];
    if data.len() != len {
        return Err(format!("IDX data has {} bytes, its header ({dims:?}) promises {len}", data.len()));
    }
    Ok(IdxArray { dims, data: data.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_and_checks_lengths() {
        let a = parse(&encode(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        assert!(parse(&encode(&[2, 3], &[1, 2, 3])).unwrap_err().contains("promises 6"));
        assert!(parse(b"\x00\x00\x08").is_err());
        assert!(parse(&encode(&[u32::MAX, u32::MAX, u32::MAX], &[])).is_err());
        let mut float = encode(&[1], &[0]);
        float[2] = 0x0d;
        assert!(parse(&float).unwrap_err().contains("0x0d"));
    }
}
