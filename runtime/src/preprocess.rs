//! Image decoding and preprocessing, exactly as a plan's manifest describes its training transforms.
//!
//! The pipeline is torchvision's usual one: decode, colour, resize, center crop, scale to [0, 1],
//! subtract the per-channel mean, divide by the per-channel std. The arithmetic is done in f32 in the
//! same order as PyTorch does it (`x / 255`, then `(x - mean) / std`), so a plan sees the values the
//! model saw in training.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, GenericImageView, ImageDecoder, ImageReader, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::plan::{InputSpec, Layout};

/// Largest width or height accepted from an image file.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation for one image (the decoded pixels, and any buffer the decoder needs).
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;
/// Largest image file read: far above any photo, well below a device's memory.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    /// One channel (luma).
    Grayscale,
    /// Three channels, red first (PIL, torchvision).
    Rgb,
    /// Three channels, blue first (OpenCV).
    Bgr,
}

impl Color {
    pub fn channels(self) -> usize {
        match self {
            Color::Grayscale => 1,
            Color::Rgb | Color::Bgr => 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Resize to exactly this size (aspect ratio not kept).
    Exact { width: u32, height: u32 },
    /// Resize so the shorter side has this length, keeping the aspect ratio (torchvision `Resize(int)`).
    ShorterSide(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos3,
}

impl Filter {
    fn to_image(self) -> FilterType {
        match self {
            Filter::Nearest => FilterType::Nearest,
            Filter::Bilinear => FilterType::Triangle,
            Filter::Bicubic => FilterType::CatmullRom,
            Filter::Lanczos3 => FilterType::Lanczos3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub color: Color,
    /// Skipped for an image that already has the exact target size.
    pub resize: Option<Resize>,
    pub filter: Filter,
    /// (width, height) of a center crop applied after resizing.
    pub center_crop: Option<(u32, u32)>,
    /// Pixels are divided by this first: 255 maps 8-bit pixels to [0, 1].
    pub max_pixel_value: f32,
    /// Per channel, in the model's channel order.
    pub mean: Vec<f32>,
    /// Per channel, in the model's channel order.
    pub std: Vec<f32>,
}

/// What to do with an image whose channels differ from the model's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelPolicy {
    /// Refuse it (an opaque alpha channel is dropped silently, it carries nothing).
    #[default]
    Strict,
    /// Convert: colour to luma for a grayscale model, grey replicated for a colour model.
    Convert,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("image does not decode: {0}")]
    Decode(String),
    #[error(
        "image has {found} but the model takes {expected} channel(s) ({expected_name}) (perch-run: pass --convert \
         to convert it)"
    )]
    Channels { found: String, expected: usize, expected_name: &'static str },
    #[error("image is {width}x{height} after preprocessing, the model takes {want_width}x{want_height}")]
    Size { width: u32, height: u32, want_width: u32, want_height: u32 },
    #[error("image is {width}x{height}: {why}")]
    Dimensions { width: u32, height: u32, why: &'static str },
    #[error("image is {width}x{height}, over the limit of {max} pixels a side")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("image is {width}x{height} and decodes to {bytes} bytes, over the {max}-byte limit")]
    TooManyBytes { width: u32, height: u32, bytes: u64, max: u64 },
    #[error("image decoder stopped at a limit: {0}")]
    Limit(String),
    #[error("{path} is {bytes} bytes, over the {max}-byte limit for an image file")]
    FileTooLarge { path: String, bytes: u64, max: u64 },
    #[error("center crop {crop_w}x{crop_h} is larger than the resized image {width}x{height}")]
    CropTooLarge { crop_w: u32, crop_h: u32, width: u32, height: u32 },
}

/// Decodes an image with size and allocation limits, so a hostile file cannot exhaust memory: the
/// header's dimensions and the decoded size are checked before any pixel is decoded.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Decode("the file is empty".into()));
    }
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError::Decode("unknown image format".into()));
    }
    // A PNG's size is in its first chunk: checked before any decoder is made (on 32-bit targets the
    // png crate's own size arithmetic would otherwise stop it first, with a vaguer message).
    if reader.format() == Some(image::ImageFormat::Png) && bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let (width, height) = (be(16), be(20));
        if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
            return Err(ImageError::TooLarge { width, height, max: MAX_IMAGE_SIDE });
        }
    }
    // Only the allocation limit while the header is read (it bounds what a PNG's ancillary chunks may
    // inflate to); the dimensions are checked below, with their values in the error.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Dimensions { width, height, why: "an image needs pixels" });
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageError::TooLarge { width, height, max: MAX_IMAGE_SIDE });
    }
    let bytes = decoder.total_bytes();
    if bytes > MAX_IMAGE_ALLOC {
        return Err(ImageError::TooManyBytes { width, height, bytes, max: MAX_IMAGE_ALLOC });
    }
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.reserve(bytes).map_err(decode_error)?;
    decoder.set_limits(limits).map_err(decode_error)?;
    DynamicImage::from_decoder(decoder).map_err(decode_error)
}

fn decode_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Limits(l) => ImageError::Limit(l.to_string()),
        e => ImageError::Decode(e.to_string()),
    }
}

/// File extensions taken as images when a directory is searched.
pub const IMAGE_EXTENSIONS: &[&str] =
    &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff", "pgm", "ppm", "pbm", "pnm"];

/// The image files under `dir`, recursively, in sorted path order.
pub fn image_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

pub fn open_image(path: impl AsRef<Path>) -> Result<DynamicImage, ImageError> {
    let path = path.as_ref();
    let read_err = |source| ImageError::Read { path: path.display().to_string(), error: source };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(ImageError::FileTooLarge { path: path.display().to_string(), bytes: len, max: MAX_IMAGE_FILE_BYTES });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    decode_image(&bytes)
}

/// Grey values as PIL's `convert("L")` computes them (ITU-R 601-2 luma, 16-bit fixed point, rounded),
/// which is what torchvision's `Grayscale` gives a model in training. (The image crate uses Rec. 709
/// weights, which would shift every converted pixel.)
fn luma_like_pil(image: &DynamicImage) -> Vec<u8> {
    if !image.color().has_color() {
        return image.to_luma8().into_raw();
    }
    image
        .to_rgb8()
        .pixels()
        .map(|p| ((u32::from(p.0[0]) * 19595 + u32::from(p.0[1]) * 38470 + u32::from(p.0[2]) * 7471 + 0x8000) >> 16) as u8)
        .collect()
}

fn describe(image: &DynamicImage) -> String {
    let c = image.color();
    let name = if c.has_color() { "RGB" } else { "grey" };
    let alpha = if c.has_alpha() { "+alpha" } else { "" };
    format!("{} channel(s) ({name}{alpha})", c.channel_count())
}

fn alpha_is_opaque(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageLumaA8(i) => i.pixels().all(|p| p.0[1] == u8::MAX),
        DynamicImage::ImageRgba8(i) => i.pixels().all(|p| p.0[3] == u8::MAX),
        DynamicImage::ImageLumaA16(i) => i.pixels().all(|p| p.0[1] == u16::MAX),
        DynamicImage::ImageRgba16(i) => i.pixels().all(|p| p.0[3] == u16::MAX),
        DynamicImage::ImageRgba32F(i) => i.pixels().all(|p| p.0[3] >= 1.0),
        _ => true,
    }
}

impl Preprocess {
    /// The defaults for a model input: colour from the channel count, an exact resize to the input's
    /// height and width, pixels scaled to [0, 1], no normalization (mean 0, std 1).
    pub fn default_for(input: &InputSpec) -> Preprocess {
        let channels = input.channels().max(1);
        let (h, w) = input.height_width();
        let color = if channels == 1 { Color::Grayscale } else { Color::Rgb };
        Preprocess {
            color,
            resize: (h > 0 && w > 0).then_some(Resize::Exact { width: w as u32, height: h as u32 }),
            filter: Filter::Bilinear,
            center_crop: None,
            max_pixel_value: 255.0,
            mean: vec![0.0; color.channels()],
            std: vec![1.0; color.channels()],
        }
    }

    /// Checks that this preprocessing produces what `input` takes. Returns what is wrong, in words.
    pub fn check_against(&self, input: &InputSpec) -> Result<(), String> {
        let c = self.color.channels();
        if input.channels() != c {
            return Err(format!("colour {:?} gives {c} channel(s), the model input takes {}", self.color, input.channels()));
        }
        if self.mean.len() != c || self.std.len() != c {
            return Err(format!(
                "mean and std need {c} value(s) each, got {} and {}",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(bad) = self.std.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(format!("std {bad} would divide by zero or overflow"));
        }
        if let Some(bad) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {bad} is not a finite number"));
        }
        let sizes = [
            self.center_crop.map(|(w, h)| w.max(h)),
            match self.resize {
                Some(Resize::Exact { width, height }) => Some(width.max(height)),
                Some(Resize::ShorterSide(side)) => Some(side),
                None => None,
            },
        ];
        if sizes.iter().flatten().any(|&n| n == 0 || n > MAX_IMAGE_SIDE) {
            return Err(format!("resize and crop sizes must be 1 to {MAX_IMAGE_SIDE} pixels"));
        }
        match (self.resize, self.center_crop) {
            (Some(Resize::Exact { width, height }), Some((cw, ch))) if cw > width || ch > height => {
                return Err(format!("center crop {cw}x{ch} does not fit in the {width}x{height} resize"));
            }
            (Some(Resize::ShorterSide(side)), Some((cw, ch))) if cw > side || ch > side => {
                return Err(format!("center crop {cw}x{ch} does not fit in images resized to a shorter side of {side}"));
            }
            _ => {}
        }
        if !(self.max_pixel_value.is_finite() && self.max_pixel_value > 0.0) {
            return Err(format!("max pixel value {} must be positive", self.max_pixel_value));
        }
        let (h, w) = input.height_width();
        let out = match (self.center_crop, self.resize) {
            (Some((cw, ch)), _) => Some((cw, ch)),
            (None, Some(Resize::Exact { width, height })) => Some((width, height)),
            _ => None,
        };
        match out {
            Some((ow, oh)) if (ow as usize, oh as usize) != (w, h) => {
                Err(format!("preprocessing makes {ow}x{oh} images, the model input takes {w}x{h}"))
            }
            None => Err(format!(
                "preprocessing does not fix the image size: give an exact resize or a center crop of {w}x{h}"
            )),
            _ => Ok(()),
        }
    }

    /// Turns one image into the model's input values for one batch element, in the input's layout.
    pub fn apply(&self, image: &DynamicImage, input: &InputSpec, policy: ChannelPolicy) -> Result<Vec<f32>, ImageError> {
        let colored = self.convert_color(image, policy)?;
        let resized = self.resize_and_crop(colored)?;
        let (h, w) = input.height_width();
        if (resized.width() as usize, resized.height() as usize) != (w, h) {
            return Err(ImageError::Size {
                width: resized.width(),
                height: resized.height(),
                want_width: w as u32,
                want_height: h as u32,
            });
        }
        let channels = self.color.channels();
        let pixels: Vec<u8> = match self.color {
            Color::Grayscale => luma_like_pil(&resized),
            Color::Rgb => resized.to_rgb8().into_raw(),
            Color::Bgr => resized.to_rgb8().chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
        };
        let mut out = vec![0f32; pixels.len()];
        let plane = w * h;
        for (i, px) in pixels.chunks_exact(channels).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                let x = (v as f32 / self.max_pixel_value - self.mean[c]) / self.std[c];
                let at = match input.layout {
                    Layout::Nchw => c * plane + i,
                    Layout::Nhwc => i * channels + c,
                };
                out[at] = x;
            }
        }
        Ok(out)
    }

    fn convert_color(&self, image: &DynamicImage, policy: ChannelPolicy) -> Result<DynamicImage, ImageError> {
        let want = self.color.channels();
        let color = image.color();
        let base = color.channel_count() as usize - usize::from(color.has_alpha());
        let matches = base == want && (!color.has_alpha() || alpha_is_opaque(image));
        if !matches && policy == ChannelPolicy::Strict {
            return Err(ImageError::Channels {
                found: describe(image),
                expected: want,
                expected_name: if want == 1 { "grey" } else { "colour" },
            });
        }
        Ok(match self.color {
            Color::Grayscale => {
                let (w, h) = image.dimensions();
                DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, luma_like_pil(image)).expect("w*h bytes"))
            }
            Color::Rgb | Color::Bgr => DynamicImage::ImageRgb8(image.to_rgb8()),
        })
    }

    fn resize_and_crop(&self, image: DynamicImage) -> Result<DynamicImage, ImageError> {
        let (w, h) = image.dimensions();
        let filter = self.filter.to_image();
        let resized = match self.resize {
            Some(Resize::Exact { width, height }) if (width, height) != (w, h) => image.resize_exact(width, height, filter),
            Some(Resize::ShorterSide(side)) if w.min(h) != side => {
                // torchvision: the longer side is scaled and truncated to an integer. decode_image
                // refuses empty images, so w and h are at least 1.
                let long = |l: u32, s: u32| u64::from(side) * u64::from(l) / u64::from(s.max(1));
                let (nw, nh) = if w <= h { (u64::from(side), long(h, w)) } else { (long(w, h), u64::from(side)) };
                if nw > u64::from(MAX_IMAGE_SIDE) || nh > u64::from(MAX_IMAGE_SIDE) {
                    return Err(ImageError::Dimensions { width: w, height: h, why: "too elongated: resizing it would exceed the size limit" });
                }
                image.resize_exact(nw as u32, nh as u32, filter)
            }
            _ => image,
        };
        let Some((cw, ch)) = self.center_crop else { return Ok(resized) };
        let (w, h) = resized.dimensions();
        if cw > w || ch > h {
            return Err(ImageError::CropTooLarge { crop_w: cw, crop_h: ch, width: w, height: h });
        }
        // torchvision: int(round((h - ch) / 2.0)), and Python rounds halves to even.
        let top = ((h - ch) as f64 / 2.0).round_ties_even() as u32;
        let left = ((w - cw) as f64 / 2.0).round_ties_even() as u32;
        Ok(resized.crop_imm(left, top, cw, ch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Dim;
    use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    fn input(c: usize, h: usize, w: usize, layout: Layout) -> InputSpec {
        let shape = match layout {
            Layout::Nchw => vec![Dim::Symbol("batch".into()), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
            Layout::Nhwc => vec![Dim::Symbol("batch".into()), Dim::Fixed(h), Dim::Fixed(w), Dim::Fixed(c)],
        };
        InputSpec { name: "input".into(), shape, layout, dtype: "f32".into() }
    }

    #[test]
    fn normalizes_like_pytorch() {
        let spec = input(1, 2, 2, Layout::Nchw);
        let mut p = Preprocess::default_for(&spec);
        p.mean = vec![0.2860];
        p.std = vec![0.3530];
        let img = DynamicImage::ImageLuma8(GrayImage::from_raw(2, 2, vec![0, 51, 128, 255]).unwrap());
        let out = p.apply(&img, &spec, ChannelPolicy::Strict).unwrap();
        let want: Vec<f32> = [0u8, 51, 128, 255].iter().map(|&v| (v as f32 / 255.0 - 0.2860) / 0.3530).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn layouts_and_bgr_put_channels_where_the_model_wants_them() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(2, 1, |x, _| Rgb([10 + x as u8, 20, 30])));
        let nchw = input(3, 1, 2, Layout::Nchw);
        let p = Preprocess { max_pixel_value: 1.0, ..Preprocess::default_for(&nchw) };
        assert_eq!(p.apply(&img, &nchw, ChannelPolicy::Strict).unwrap(), vec![10., 11., 20., 20., 30., 30.]);
        let nhwc = input(3, 1, 2, Layout::Nhwc);
        assert_eq!(p.apply(&img, &nhwc, ChannelPolicy::Strict).unwrap(), vec![10., 20., 30., 11., 20., 30.]);
        let bgr = Preprocess { color: Color::Bgr, ..p };
        assert_eq!(bgr.apply(&img, &nhwc, ChannelPolicy::Strict).unwrap(), vec![30., 20., 10., 30., 20., 11.]);
    }

    #[test]
    fn wrong_channels_are_refused_unless_converting() {
        let spec = input(1, 4, 4, Layout::Nchw);
        let p = Preprocess::default_for(&spec);
        let rgb = DynamicImage::ImageRgb8(RgbImage::new(4, 4));
        let err = p.apply(&rgb, &spec, ChannelPolicy::Strict).unwrap_err();
        assert!(matches!(err, ImageError::Channels { expected: 1, .. }), "{err}");
        assert!(err.to_string().contains("3 channel(s) (RGB)"), "{err}");
        assert_eq!(p.apply(&rgb, &spec, ChannelPolicy::Convert).unwrap().len(), 16);

        // An opaque alpha channel carries nothing and is dropped; a real one is refused.
        let color = input(3, 4, 4, Layout::Nchw);
        let p = Preprocess::default_for(&color);
        let opaque = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([1, 2, 3, 255])));
        assert!(p.apply(&opaque, &color, ChannelPolicy::Strict).is_ok());
        let see_through = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([1, 2, 3, 7])));
        assert!(p.apply(&see_through, &color, ChannelPolicy::Strict).is_err());
    }

    #[test]
    fn resize_then_crop_reaches_the_input_size() {
        let spec = input(1, 4, 4, Layout::Nchw);
        let p = Preprocess {
            resize: Some(Resize::ShorterSide(6)),
            center_crop: Some((4, 4)),
            ..Preprocess::default_for(&spec)
        };
        p.check_against(&spec).unwrap();
        let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(30, 12, Luma([200])));
        let out = p.apply(&img, &spec, ChannelPolicy::Strict).unwrap();
        assert_eq!(out.len(), 16);
        assert!(out.iter().all(|&v| (v - 200.0 / 255.0).abs() < 1e-6));
        let too_big = Preprocess { center_crop: Some((8, 8)), ..p };
        assert!(too_big.check_against(&spec).is_err());
        assert!(matches!(too_big.apply(&img, &spec, ChannelPolicy::Strict), Err(ImageError::CropTooLarge { .. })));
    }

    #[test]
    fn crop_offsets_round_half_to_even_like_torchvision() {
        // 500x375 -> Resize(256) -> 341x256 -> CenterCrop(224): torchvision's left offset is
        // round(58.5) = 58 (half to even), top round(16.0) = 16.
        let spec = input(1, 224, 224, Layout::Nchw);
        let p = Preprocess {
            resize: None,
            center_crop: Some((224, 224)),
            max_pixel_value: 1.0,
            ..Preprocess::default_for(&spec)
        };
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(341, 256, |x, y| Luma([if x == 58 && y == 16 { 200 } else { 0 }])));
        let out = p.apply(&img, &spec, ChannelPolicy::Strict).unwrap();
        assert_eq!(out[0], 200.0, "the crop starts at (58, 16)");
    }

    #[test]
    fn color_to_grey_matches_pil() {
        let spec = input(1, 1, 2, Layout::Nchw);
        let p = Preprocess { max_pixel_value: 1.0, ..Preprocess::default_for(&spec) };
        let img = DynamicImage::ImageRgb8(RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap());
        // PIL: Image.new("RGB", ...).convert("L") gives 76 for pure red and 124 for (10, 200, 30) (checked with Pillow 13).
        assert_eq!(p.apply(&img, &spec, ChannelPolicy::Convert).unwrap(), vec![76.0, 124.0]);
    }

    #[test]
    fn sizes_that_cannot_work_are_refused_before_any_image() {
        let spec = input(1, 28, 28, Layout::Nchw);
        let base = Preprocess::default_for(&spec);
        let crop_outside = Preprocess { resize: Some(Resize::Exact { width: 20, height: 20 }), center_crop: Some((28, 28)), ..base.clone() };
        assert!(crop_outside.check_against(&spec).unwrap_err().contains("does not fit"));
        let nan_mean = Preprocess { mean: vec![f32::NAN], ..base.clone() };
        assert!(nan_mean.check_against(&spec).is_err());
        let huge = Preprocess { resize: Some(Resize::ShorterSide(1 << 20)), center_crop: Some((28, 28)), ..base };
        assert!(huge.check_against(&spec).is_err());
    }

    #[test]
    fn elongated_images_cannot_blow_up_a_resize() {
        let spec = input(1, 28, 28, Layout::Nchw);
        let p = Preprocess { resize: Some(Resize::ShorterSide(300)), center_crop: Some((28, 28)), ..Preprocess::default_for(&spec) };
        let img = DynamicImage::ImageLuma8(GrayImage::new(16_000, 1));
        assert!(matches!(p.apply(&img, &spec, ChannelPolicy::Strict), Err(ImageError::Dimensions { .. })));
    }

    #[test]
    fn bytes_that_are_not_an_image_give_a_decode_error() {
        assert!(matches!(decode_image(b"definitely not a png"), Err(ImageError::Decode(_))));
        let mut png = Vec::new();
        DynamicImage::ImageLuma8(GrayImage::new(8, 8))
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert!(matches!(decode_image(&png[..png.len() / 2]), Err(ImageError::Decode(_))));
        assert!(decode_image(&png).is_ok());
        // A PNM header may declare a zero width; such an image is refused, not resized.
        assert!(decode_image(b"P5\n0 4\n255\n").is_err());
        assert!(matches!(decode_image(b""), Err(ImageError::Decode(_))));
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_decoding() {
        // A 16-bit RGBA PNG within the side limit still decodes to 2 GiB: the byte limit stops it.
        // (tests/bad-input/image/ has the 100000x100000 header the side limit stops.)
        let pnm = format!("P6\n{0} {0}\n65535\n", MAX_IMAGE_SIDE);
        let err = decode_image(pnm.as_bytes()).unwrap_err();
        assert!(matches!(err, ImageError::TooManyBytes { bytes, .. } if bytes == 16_384 * 16_384 * 6), "{err}");
        let pnm = format!("P5\n{} 1\n255\n", MAX_IMAGE_SIDE + 1);
        assert!(matches!(decode_image(pnm.as_bytes()), Err(ImageError::TooLarge { width: 16_385, height: 1, .. })));
    }
}
