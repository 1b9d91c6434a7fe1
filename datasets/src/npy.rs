//! `.npy` datasets: images (u8) or preprocessed inputs (f32) in one file, labels in `<stem>.labels.npy`.

use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt};

use crate::{Dataset, DatasetError, Storage};

/// `.npy` files above this are refused before reading (a float32 set of 10,000 224x224 RGB inputs is
/// 6 GB: such a set belongs in an ImageFolder, decoded image by image).
pub const MAX_NPY_BYTES: u64 = 2 << 30;

/// Reads the file whole and checks that its header describes exactly the bytes that follow it, so the
/// reader never allocates for an array the file does not hold (ndarray-npy allocates from the header).
fn load(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let read_err = |source| DatasetError::Read { path: path.display().to_string(), error: source };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_NPY_BYTES {
        return Err(DatasetError::format(path, format!("{len} bytes, over the {MAX_NPY_BYTES}-byte limit for a .npy file")));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    check_lengths(&bytes).map_err(|msg| DatasetError::format(path, msg))?;
    Ok(bytes)
}

/// The `.npy` framing: magic, version, header length (u16 in 1.0, u32 in 2.0 and 3.0), a Python dict
/// literal with `descr`, `fortran_order` and `shape`, then the data.
fn check_lengths(bytes: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u64::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10u64),
        2 | 3 if bytes.len() >= 12 => (u64::from(u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"))), 12),
        v => return Err(format!(".npy format version {v} is not supported (1, 2 or 3)")),
    };
    let data_start = start + header_len;
    if data_start > bytes.len() as u64 {
        return Err(format!(".npy header of {header_len} bytes runs past the end of the {}-byte file", bytes.len()));
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let header = ndarray_npy::npy::header::Header::from_reader(&mut cursor).map_err(|e| format!("bad .npy header: {e}"))?;
    // `descr` is a quoted string such as '<f4' or '|u1' for the plain number types this crate reads.
    let descr = header.type_descriptor.to_string();
    let item_bytes = descr
        .trim_matches(|c| c == '\'' || c == '"')
        .get(2..)
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| (1..=16).contains(n))
        .ok_or_else(|| format!("dtype {descr} is not a plain number type"))?;
    let shape = &header.shape;
    let data_bytes = shape
        .iter()
        .try_fold(item_bytes, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {shape:?} overflows a 64-bit byte count"))?;
    let present = bytes.len() as u64 - data_start;
    if data_bytes != present {
        return Err(format!("shape {shape:?} of {}-byte items needs {data_bytes} data bytes, the file has {present}", item_bytes));
    }
    Ok(())
}

fn read<T: ndarray_npy::ReadableElement>(path: &Path, bytes: &[u8]) -> Result<Option<ArrayD<T>>, DatasetError> {
    match ArrayD::<T>::read_npy(bytes) {
        Ok(a) => Ok(Some(a)),
        Err(ReadNpyError::WrongDescriptor(_)) => Ok(None),
        Err(e) => Err(DatasetError::format(path, format!("not a readable .npy file: {e}"))),
    }
}

fn labels_path(images: &Path) -> std::path::PathBuf {
    let stem = images.file_stem().unwrap_or_default().to_string_lossy();
    images.with_file_name(format!("{stem}.labels.npy"))
}

fn read_labels(path: &Path) -> Result<Vec<u32>, DatasetError> {
    let as_u32 = |v: i64| u32::try_from(v).map_err(|_| DatasetError::format(path, format!("label {v} is not a class index")));
    let bytes = load(path)?;
    let labels: Vec<u32> = if let Some(a) = read::<i64>(path, &bytes)? {
        a.iter().map(|&v| as_u32(v)).collect::<Result<_, _>>()?
    } else if let Some(a) = read::<i32>(path, &bytes)? {
        a.iter().map(|&v| as_u32(i64::from(v))).collect::<Result<_, _>>()?
    } else if let Some(a) = read::<u8>(path, &bytes)? {
        a.iter().map(|&v| u32::from(v)).collect()
    } else {
        return Err(DatasetError::format(path, "labels must be int64, int32 or uint8"));
    };
    Ok(labels)
}

pub(crate) fn open(path: &Path) -> Result<Dataset, DatasetError> {
    let labels_file = labels_path(path);
    if !labels_file.is_file() {
        return Err(DatasetError::format(path, format!("labels not found: expected {}", labels_file.display())));
    }
    let labels = read_labels(&labels_file)?;
    let bytes = load(path)?;
    let storage = if let Some(a) = read::<u8>(path, &bytes)? {
        let shape = a.shape().to_vec();
        let (n, h, w, c, channels_first) = match shape[..] {
            [_, 0, _] | [_, 0, _, _] | [_, _, 0] | [_, _, _, 0] => {
                return Err(DatasetError::format(path, format!("images of shape {shape:?} have no pixels")));
            }
            [n, h, w] => (n, h, w, 1, false),
            [n, c @ (1 | 3), h, w] => (n, h, w, c, true),
            [n, h, w, c @ (1 | 3)] => (n, h, w, c, false),
            _ => return Err(DatasetError::format(path, format!("u8 images must be NHW, NCHW or NHWC with 1 or 3 channels, got {shape:?}"))),
        };
        let a = if channels_first { a.permuted_axes(vec![0, 2, 3, 1]) } else { a };
        let data: Vec<u8> = a.iter().copied().collect();
        debug_assert_eq!(data.len(), n * h * w * c);
        Storage::Pixels { data, width: w as u32, height: h as u32, channels: c as u8 }
    } else if let Some(a) = read::<f32>(path, &bytes)? {
        let n = a.shape().first().copied().unwrap_or(0);
        let per_item = a.len().checked_div(n).unwrap_or(0);
        Storage::Tensors { data: a.iter().copied().collect(), per_item }
    } else {
        return Err(DatasetError::format(path, "images must be uint8 (pixels) or float32 (preprocessed inputs)"));
    };
    let count = match &storage {
        Storage::Pixels { data, width, height, channels } => data.len() / (*width as usize * *height as usize * *channels as usize).max(1),
        Storage::Tensors { data, per_item } => data.len() / (*per_item).max(1),
        Storage::Files(f) => f.len(),
    };
    if count != labels.len() {
        return Err(DatasetError::format(path, format!("{} labels for {count} samples", labels.len())));
    }
    Ok(Dataset { name: path.display().to_string(), classes: Vec::new(), labels, storage })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Item;
    use ndarray::{Array1, Array4};
    use ndarray_npy::write_npy;

    #[test]
    fn reads_nchw_pixels_and_f32_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("set.npy");
        let px = Array4::<u8>::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| (n * 100 + c * 10 + h * 2 + w) as u8);
        write_npy(&images, &px).unwrap();
        write_npy(dir.path().join("set.labels.npy"), &Array1::<i64>::from(vec![4, 1])).unwrap();
        let ds = Dataset::open(images.to_str().unwrap()).unwrap();
        assert_eq!(ds.labels(), &[4, 1]);
        let Item::Image(img) = ds.item(1) else { panic!("u8 npy items are images") };
        assert_eq!(img.to_rgb8().get_pixel(1, 0).0, [101, 111, 121]);

        let tensors = dir.path().join("pre.npy");
        write_npy(&tensors, &Array4::<f32>::from_elem((3, 1, 2, 2), 0.5)).unwrap();
        write_npy(dir.path().join("pre.labels.npy"), &Array1::<u8>::from(vec![0, 1, 2])).unwrap();
        let ds = Dataset::open(tensors.to_str().unwrap()).unwrap();
        assert!(matches!(ds.item(2), Item::Tensor(v) if v == vec![0.5; 4]));

        write_npy(dir.path().join("pre.labels.npy"), &Array1::<u8>::from(vec![0, 1])).unwrap();
        assert!(Dataset::open(tensors.to_str().unwrap()).unwrap_err().to_string().contains("2 labels for 3 samples"));
    }
}
