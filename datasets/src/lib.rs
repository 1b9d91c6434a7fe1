#![doc = include_str!("../README.md")]

pub mod idx;
mod npy;

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, RgbImage};

/// The directory where Debian's `dataset-fashion-mnist` package puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, in label order (Zalando's README).
pub const FASHION_MNIST_LABELS: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    #[error("{0}: the dataset is empty")]
    Empty(String),
    #[error(
        "{0}: not a dataset Perch reads (an IDX images file, a directory of IDX files, an ImageFolder directory \
         with one subdirectory per class, or a .npy file with its .labels.npy)"
    )]
    Unrecognized(String),
}

impl DatasetError {
    fn format(path: &Path, msg: impl Into<String>) -> DatasetError {
        DatasetError::Format { path: path.display().to_string(), msg: msg.into() }
    }
}

/// One sample, before preprocessing.
#[derive(Debug, Clone)]
pub enum Item {
    /// A decoded image (IDX, or a u8 .npy).
    Image(DynamicImage),
    /// An image file to decode (ImageFolder).
    File(PathBuf),
    /// Values already preprocessed into the model's input layout (an f32 .npy).
    Tensor(Vec<f32>),
}

#[derive(Debug)]
enum Storage {
    /// `count` images of `height x width x channels` bytes (channels last).
    Pixels { data: Vec<u8>, width: u32, height: u32, channels: u8 },
    Files(Vec<PathBuf>),
    Tensors { data: Vec<f32>, per_item: usize },
}

/// A labelled image dataset.
#[derive(Debug)]
pub struct Dataset {
    /// What the user named, for reports.
    pub name: String,
    /// Class names in label order, where the format carries them (ImageFolder), else empty.
    pub classes: Vec<String>,
    labels: Vec<u32>,
    storage: Storage,
}

impl Dataset {
    /// Opens a dataset by path. Recognized:
    /// - an IDX images file (`*-images-idx3-ubyte[.gz]`), labels from the matching `*-labels-idx1-ubyte[.gz]`;
    /// - a directory holding IDX files: its test split (`t10k-*`), or its train split with `DIR:train`;
    /// - `fashion-mnist` or `fashion-mnist:train|test`: the Debian package's files;
    /// - an ImageFolder directory: one subdirectory per class (sorted names = label order);
    /// - a `.npy` of images (u8 NHW, NHWC or NCHW) or of preprocessed f32 inputs, labels in `<stem>.labels.npy`.
    pub fn open(spec: &str) -> Result<Dataset, DatasetError> {
        let (base, split) = match spec.rsplit_once(':') {
            Some((b, s @ ("train" | "test"))) => (b, Some(s)),
            _ => (spec, None),
        };
        let base = if base == "fashion-mnist" { FASHION_MNIST_DIR } else { base };
        let path = Path::new(base);
        let mut ds = if path.is_dir() && find_idx_images(path, split.unwrap_or("test")).is_some() {
            let images = find_idx_images(path, split.unwrap_or("test")).expect("checked");
            Dataset::open_idx(&images)?
        } else if path.is_dir() {
            Dataset::open_image_folder(path)?
        } else if path.extension().is_some_and(|e| e == "npy") {
            npy::open(path)?
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("idx3")) {
            Dataset::open_idx(path)?
        } else if !path.exists() {
            return Err(DatasetError::Read {
                path: base.to_string(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            });
        } else {
            return Err(DatasetError::Unrecognized(base.to_string()));
        };
        if ds.is_empty() {
            return Err(DatasetError::Empty(spec.to_string()));
        }
        if path.starts_with(FASHION_MNIST_DIR) && ds.classes.is_empty() {
            ds.classes = FASHION_MNIST_LABELS.iter().map(|s| s.to_string()).collect();
        }
        ds.name = spec.to_string();
        Ok(ds)
    }

    /// Opens an IDX images file and its labels file (same name with `labels-idx1` for `images-idx3`).
    pub fn open_idx(images: &Path) -> Result<Dataset, DatasetError> {
        let name = images.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let labels_name = name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1");
        if labels_name == name {
            return Err(DatasetError::format(
                images,
                "cannot tell where its labels are: name the images file *-images-idx3-ubyte[.gz], with the labels in *-labels-idx1-ubyte[.gz] beside it",
            ));
        }
        let labels_path = images.with_file_name(labels_name);
        let imgs = idx::read(images)?;
        let labels = idx::read(&labels_path)?;
        let (count, height, width) = match imgs.dims[..] {
            [n, h, w] if h > 0 && w > 0 => (n, h, w),
            _ => return Err(DatasetError::format(images, format!("images must be 3-D (count, rows, cols) with pixels, got {:?}", imgs.dims))),
        };
        if labels.dims.len() != 1 || labels.dims[0] != count {
            return Err(DatasetError::format(&labels_path, format!("labels of shape {:?} for {count} images", labels.dims)));
        }
        Ok(Dataset {
            name: images.display().to_string(),
            classes: Vec::new(),
            labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
            storage: Storage::Pixels { data: imgs.data, width: width as u32, height: height as u32, channels: 1 },
        })
    }

    /// Opens a torchvision-style ImageFolder: `root/<class>/**/<image>`, classes in sorted order.
    pub fn open_image_folder(root: &Path) -> Result<Dataset, DatasetError> {
        let read_err = |source| DatasetError::Read { path: root.display().to_string(), error: source };
        let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DatasetError::Unrecognized(root.display().to_string()));
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        for (label, dir) in classes.iter().enumerate() {
            let found = perch_runtime::preprocess::image_files(dir)
                .map_err(|source| DatasetError::Read { path: dir.display().to_string(), error: source })?;
            labels.extend(std::iter::repeat_n(label as u32, found.len()));
            files.extend(found);
        }
        Ok(Dataset {
            name: root.display().to_string(),
            classes: classes.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect(),
            labels,
            storage: Storage::Files(files),
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Number of distinct classes: the class names' count where known, else the largest label + 1.
    pub fn class_count(&self) -> usize {
        self.classes.len().max(self.labels.iter().max().map_or(0, |&m| m as usize + 1))
    }

    /// Keeps the first `n` samples.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        match &mut self.storage {
            Storage::Pixels { data, width, height, channels } => {
                data.truncate(n * *width as usize * *height as usize * *channels as usize)
            }
            Storage::Files(files) => files.truncate(n),
            Storage::Tensors { data, per_item } => data.truncate(n * *per_item),
        }
    }

    /// Sample `index` (panics if out of range, like slice indexing).
    pub fn item(&self, index: usize) -> Item {
        match &self.storage {
            Storage::Pixels { data, width, height, channels } => {
                let len = *width as usize * *height as usize * *channels as usize;
                let px = data[index * len..(index + 1) * len].to_vec();
                Item::Image(if *channels == 1 {
                    DynamicImage::ImageLuma8(GrayImage::from_raw(*width, *height, px).expect("sized above"))
                } else {
                    DynamicImage::ImageRgb8(RgbImage::from_raw(*width, *height, px).expect("sized above"))
                })
            }
            Storage::Files(files) => Item::File(files[index].clone()),
            Storage::Tensors { data, per_item } => Item::Tensor(data[index * per_item..(index + 1) * per_item].to_vec()),
        }
    }
}

fn find_idx_images(dir: &Path, split: &str) -> Option<PathBuf> {
    let prefix = if split == "train" { "train" } else { "t10k" };
    ["-images-idx3-ubyte.gz", "-images-idx3-ubyte"]
        .iter()
        .map(|suffix| dir.join(format!("{prefix}{suffix}")))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_folder_sorts_classes_and_walks_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        for (class, file) in [("b_cat", "x/1.png"), ("a_dog", "2.jpg"), ("a_dog", "1.PNG"), ("b_cat", "notes.txt")] {
            let path = dir.path().join(class).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let ds = Dataset::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(ds.classes, vec!["a_dog", "b_cat"]);
        assert_eq!(ds.labels(), &[0, 0, 1]);
        assert!(matches!(ds.item(2), Item::File(p) if p.ends_with("b_cat/x/1.png")));
    }

    #[test]
    fn idx_pairs_images_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        images.extend(0..12u8);
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), &images).unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 2, 7, 3]).unwrap();
        let ds = Dataset::open(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(ds.labels(), &[7, 3]);
        let Item::Image(img) = ds.item(1) else { panic!("IDX items are images") };
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(img.to_luma8().into_raw(), (6..12).collect::<Vec<u8>>());

        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 1, 7]).unwrap();
        let err = Dataset::open(dir.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("labels of shape [1] for 2 images"), "{err}");
    }

    #[test]
    fn unknown_and_missing_paths_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(Dataset::open(file.to_str().unwrap()), Err(DatasetError::Unrecognized(_))));
        assert!(matches!(Dataset::open("/no/such/dir"), Err(DatasetError::Read { .. })));
        assert!(matches!(Dataset::open(dir.path().to_str().unwrap()), Err(DatasetError::Unrecognized(_))));
    }
}
