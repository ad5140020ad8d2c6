//! Image decoding and preprocessing into model input tensors.
//!
//! - [`decode`]: encoded bytes (JPEG, PNG, WebP, BMP, GIF) to 8-bit RGB, EXIF orientation applied.
//! - [`from_pixels`]: raw HWC `u8` pixel records (CIFAR, STL-10, IDX after de-interleaving).
//! - [`to_tensor`] / [`Preprocessor`]: resize (one resampling, with the crop as a crop box),
//!   channel order, `(v * scale - mean[c]) / std[c]`, written in the model's layout.
//! - [`preprocess_batch`]: a slice of encoded images into one flat batch buffer, in parallel.
//! - [`pipeline`]: decode+preprocess batches on rayon while the consumer (inference) works on the
//!   previous batch, through a bounded channel.
//!
//! The spec types ([`ImageSpec`] and its enums) are part of `bundle.toml` and live in
//! [`crate::bundle`]; they are re-exported here.

use std::io::Cursor;

use fast_image_resize::images::{Image as FirImage, ImageRef as FirImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use ndarray::Array4;
use rayon::prelude::*;

pub use crate::bundle::{Channels, ImageSpec, Interpolation, Layout, Resize};
use crate::{EmbedError, Result};

// ---------------------------------------------------------------------------------------------
// Spec helpers (the types live in bundle.rs, next to the rest of bundle.toml)
// ---------------------------------------------------------------------------------------------

impl ImageSpec {
    /// Floats per image: `3 * size * size`.
    pub fn tensor_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// The shape of a batch of `n` images in this layout.
    pub fn batch_shape(&self, n: usize) -> [usize; 4] {
        let s = self.size as usize;
        match self.layout {
            Layout::Nchw => [n, 3, s, s],
            Layout::Nhwc => [n, s, s, 3],
        }
    }

    /// Checks the values (the types are checked by serde): `size >= 1`, finite `scale` and
    /// `mean`, finite non-zero `std`. The `Err` is a reason for the caller to wrap.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.size == 0 || self.size > 16384 {
            return Err(format!("image size {} is out of range (1..=16384)", self.size));
        }
        if !self.scale.is_finite() {
            return Err(format!("image scale {} is not finite", self.scale));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("image mean {:?} has a non-finite value", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(format!("image std {:?} must be finite and non-zero", self.std));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Version of the preprocessing code (decode, resize, normalise): part of embedding-cache
/// keys, bumped whenever the same image and spec could give different tensors.
pub const PREPROCESS_VERSION: u32 = 1;

const SKIP_ADVICE: &str = "set on_bad_record = \"skip\" to leave such images out";

fn image_err(name: &str, reason: impl Into<String>) -> EmbedError {
    EmbedError::Image { name: name.to_string(), reason: reason.into() }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "Farbfeld",
        _ => "this format's",
    }
}

/// Turns an `image` error into a reason that says what happened and what to do.
fn describe(format: ImageFormat, e: ImageError) -> String {
    let f = format_name(format);
    match e {
        ImageError::Limits(e) => format!(
            "the {f} image is too large to decode within the memory limit ({e}); downscale it, or {SKIP_ADVICE}"
        ),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("the {f} data is truncated ({e}); re-encode or re-download it, or {SKIP_ADVICE}")
        }
        ImageError::Unsupported(e) => {
            format!("unsupported {f} variant ({e}); re-encode it as baseline JPEG or PNG, or {SKIP_ADVICE}")
        }
        e => format!("the {f} data is corrupt or truncated ({e}); re-encode it, or {SKIP_ADVICE}"),
    }
}

/// Decodes an encoded image to 8-bit RGB.
///
/// - Formats: JPEG, PNG, WebP, BMP, GIF (the first frame), recognised by their signature, not
///   by the name. Anything else, empty, corrupt or truncated data is an [`EmbedError::Image`]
///   naming `name`, giving the reason and what to do.
/// - Grayscale is replicated to R = G = B; palettes are expanded; alpha is dropped (the colour
///   channels are kept as stored, nothing is composited); 16-bit and float samples are rounded
///   to 8 bits.
/// - The EXIF orientation (JPEG APP1; also PNG eXIf and WebP EXIF when present) is applied, so
///   the result is upright as viewers show it. A malformed EXIF block is ignored (the image is
///   used as stored) rather than rejecting an otherwise good image.
/// - Decoding runs under the `image` crate's default limits (512 MiB per allocation).
pub fn decode(name: &str, bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(image_err(name, format!("the file is empty (0 bytes); {SKIP_ADVICE}")));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        image_err(
            name,
            format!(
                "not a recognised image: JPEG, PNG, WebP, BMP or GIF expected, the data starts with \
                 bytes [{}] ({} bytes in all); re-encode it as JPEG or PNG, or {SKIP_ADVICE}",
                head.join(" "),
                bytes.len()
            ),
        )
    })?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Gif)
    {
        return Err(image_err(
            name,
            format!(
                "{} images are not supported (JPEG, PNG, WebP, BMP and GIF are); convert it to JPEG or PNG, or {SKIP_ADVICE}",
                format_name(format)
            ),
        ));
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(|e| image_err(name, describe(format, e)))?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(|e| image_err(name, describe(format, e)))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(image_err(
            name,
            format!(
                "the {} image has no pixels ({}x{}); {SKIP_ADVICE}",
                format_name(format),
                img.width(),
                img.height()
            ),
        ));
    }
    // into_rgb8 is free for RGB8 and drops alpha channel-wise (no compositing) otherwise.
    let mut rgb = DynamicImage::ImageRgb8(img.into_rgb8());
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

/// Builds an RGB image from raw interleaved (HWC) `u8` pixels: `channels` 1 (grayscale,
/// replicated to RGB) or 3 (RGB). `data` must hold exactly `width * height * channels` bytes.
/// Errors name the record as "raw pixel record"; [`Record::Pixels`] replaces that with the
/// record's name.
pub fn from_pixels(width: u32, height: u32, channels: u8, data: &[u8]) -> Result<RgbImage> {
    const NAME: &str = "raw pixel record";
    if width == 0 || height == 0 {
        return Err(image_err(NAME, format!("the record has no pixels ({width}x{height})")));
    }
    let n = width as usize * height as usize;
    let expected = n.checked_mul(channels as usize);
    if expected != Some(data.len()) || !(channels == 1 || channels == 3) {
        return Err(image_err(
            NAME,
            format!(
                "{} bytes for {width}x{height} pixels with {channels} channel(s); 1 (grayscale) or 3 (RGB) \
                 channels of HWC u8 data, width * height * channels bytes, are expected: check the dataset's \
                 record layout",
                data.len()
            ),
        ));
    }
    let buf = if channels == 3 {
        data.to_vec()
    } else {
        let mut buf = Vec::with_capacity(3 * n);
        for &g in data {
            buf.extend_from_slice(&[g, g, g]);
        }
        buf
    };
    Ok(RgbImage::from_raw(width, height, buf).expect("buffer length checked above"))
}

// ---------------------------------------------------------------------------------------------
// Resize + normalise
// ---------------------------------------------------------------------------------------------

/// The source rectangle `(left, top, width, height)` that is resampled to `size x size`.
///
/// `ShortestCrop` reproduces torchvision's `Resize(size)` followed by `CenterCrop(size)`: the
/// short side becomes `size`, the long side `L = int(size * long / short)`, the crop starts at
/// `round((L - size) / 2)` (ties to even, as Python's `round`), and that rectangle is mapped
/// back into source coordinates (scale `long / L` along the long side). With Pillow's (and
/// fast_image_resize's) convolution, resampling this box directly gives the same pixels as
/// resizing the whole image and cropping afterwards: the filter taps still reach outside the
/// box into the rest of the image.
fn source_box(width: u32, height: u32, size: u32, resize: Resize) -> (f64, f64, f64, f64) {
    let (w, h) = (width as f64, height as f64);
    match resize {
        Resize::Squash => (0.0, 0.0, w, h),
        Resize::ShortestCrop => {
            let s = size as f64;
            let (short, long) = if width <= height { (w, h) } else { (h, w) };
            let l = ((s * long / short) as u64).max(size as u64) as f64; // int() truncates
            let off = ((l - s) / 2.0).round_ties_even();
            let k = long / l; // source pixels per resized pixel along the long side
            let (start, extent) = (off * k, s * k);
            if width <= height { (0.0, start, w, extent) } else { (start, 0.0, extent, h) }
        }
    }
}

fn resize_alg(i: Interpolation) -> ResizeAlg {
    match i {
        Interpolation::Nearest => ResizeAlg::Nearest,
        Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        // Pillow's BICUBIC is the Keys cubic with a = -0.5, i.e. Catmull-Rom.
        Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Interpolation::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
    }
}

/// The filter's support radius (source pixels at scale 1), `None` for nearest.
fn filter_support(i: Interpolation) -> Option<f64> {
    match i {
        Interpolation::Nearest => None,
        Interpolation::Bilinear => Some(1.0),
        Interpolation::Bicubic => Some(2.0),
        Interpolation::Lanczos3 => Some(3.0),
    }
}

/// The source rows `r0..r1` the vertical convolution reads when mapping rows
/// `top..top + height` to `size` rows (as fast_image_resize and Pillow compute the taps), with
/// one row of margin each side, clamped to the image.
fn rows_read(image_height: u32, top: f64, height: f64, size: u32, support: f64) -> (u32, u32) {
    let scale = height / size as f64;
    let radius = support * scale.max(1.0);
    let first = top + 0.5 * scale;
    let last = top + (size as f64 - 0.5) * scale;
    let r0 = ((first - radius).floor() - 1.0).max(0.0) as u32;
    let r1 = ((last + radius).ceil() + 1.0).min(image_height as f64) as u32;
    (r0, r1.max(r0 + 1))
}

/// Preprocesses images for one [`ImageSpec`], reusing its resizer, its `size x size` RGB
/// scratch image and a per-channel lookup table (256 values x 3) across calls, so a thread
/// running many images allocates nothing per image (beyond decoding).
pub struct Preprocessor {
    spec: ImageSpec,
    resizer: Resizer,
    /// Horizontal-pass result, `size` wide (grows to the largest image seen).
    mid: Vec<u8>,
    /// The resized `size x size` RGB image.
    resized: Vec<u8>,
    /// `lut[c][v] = (v * scale - mean[c]) / std[c]`, `c` in the output channel order.
    lut: Box<[[f32; 256]; 3]>,
}

impl Preprocessor {
    pub fn new(spec: ImageSpec) -> Self {
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, x) in table.iter_mut().enumerate() {
                *x = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor { spec, resizer: Resizer::new(), mid: Vec::new(), resized: vec![0; spec.tensor_len()], lut }
    }

    pub fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    /// Floats written per image (`3 * size * size`).
    pub fn tensor_len(&self) -> usize {
        self.spec.tensor_len()
    }

    /// Writes one image into `out` (exactly [`Self::tensor_len`] floats) in the spec's layout
    /// and channel order. See [`to_tensor`].
    ///
    /// # Panics
    /// If `out.len() != self.tensor_len()` or the image is empty ([`decode`] and
    /// [`from_pixels`] never return empty images).
    pub fn to_tensor(&mut self, img: &RgbImage, out: &mut [f32]) {
        let spec = self.spec;
        let s = spec.size as usize;
        assert_eq!(out.len(), spec.tensor_len(), "to_tensor: output slice must hold 3 * size * size floats");
        assert!(img.width() > 0 && img.height() > 0, "to_tensor: empty image");

        let src = FirImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
            .expect("an RgbImage buffer is a valid U8x3 image");
        let (left, top, width, height) = source_box(img.width(), img.height(), spec.size, spec.resize);
        let options = ResizeOptions::new().resize_alg(resize_alg(spec.interpolation));
        const OK: &str = "resize of RGB8 to RGB8 with an in-bounds crop box";
        match filter_support(spec.interpolation) {
            None => {
                let mut dst = FirImage::from_slice_u8(spec.size, spec.size, &mut self.resized, PixelType::U8x3)
                    .expect("scratch buffer sized for size x size RGB");
                self.resizer.resize(&src, &mut dst, &options.crop(left, top, width, height)).expect(OK);
            }
            Some(support) => {
                // Pillow's pass order: horizontal, rounded to u8, then vertical. (One
                // fast_image_resize call does the vertical pass first for u8 images, which
                // rounds and clips a different intermediate: up to ~20 levels apart from Pillow
                // where bicubic/lanczos overshoot.) The horizontal pass runs only on the rows
                // the vertical filter reads; both calls resample the same source rectangle, so
                // this is still one resampling of that box. Pillow 13 goes vertical-first when
                // the height shrinks much more than the width, which only a squash can do; we
                // keep horizontal-first (see the parity test).
                let (r0, r1) = rows_read(img.height(), top, height, spec.size, support);
                let rows = r1 - r0;
                self.mid.resize(spec.size as usize * rows as usize * 3, 0);
                let mut mid = FirImage::from_slice_u8(spec.size, rows, &mut self.mid, PixelType::U8x3)
                    .expect("scratch buffer sized for size x rows RGB");
                self.resizer.resize(&src, &mut mid, &options.crop(left, r0 as f64, width, rows as f64)).expect(OK);
                let mid = FirImageRef::new(spec.size, rows, &self.mid, PixelType::U8x3).expect("valid U8x3 image");
                let mut dst = FirImage::from_slice_u8(spec.size, spec.size, &mut self.resized, PixelType::U8x3)
                    .expect("scratch buffer sized for size x size RGB");
                let crop = options.crop(0.0, top - r0 as f64, spec.size as f64, height);
                self.resizer.resize(&mid, &mut dst, &crop).expect(OK);
            }
        }

        // Output channel c reads source channel map[c].
        let map = match spec.channels {
            Channels::Rgb => [0, 1, 2],
            Channels::Bgr => [2, 1, 0],
        };
        let lut = &*self.lut;
        match spec.layout {
            Layout::Nhwc => {
                for (o, p) in out.chunks_exact_mut(3).zip(self.resized.chunks_exact(3)) {
                    o[0] = lut[0][p[map[0]] as usize];
                    o[1] = lut[1][p[map[1]] as usize];
                    o[2] = lut[2][p[map[2]] as usize];
                }
            }
            Layout::Nchw => {
                let (p0, rest) = out.split_at_mut(s * s);
                let (p1, p2) = rest.split_at_mut(s * s);
                for (i, p) in self.resized.chunks_exact(3).enumerate() {
                    p0[i] = lut[0][p[map[0]] as usize];
                    p1[i] = lut[1][p[map[1]] as usize];
                    p2[i] = lut[2][p[map[2]] as usize];
                }
            }
        }
    }

    /// [`decode`] then [`Self::to_tensor`]. On error `out` is zero-filled.
    pub fn decode_to_tensor(&mut self, name: &str, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        self.image_to_tensor(decode(name, bytes), out)
    }

    /// Writes a decoded image into `out`, or zero-fills `out` and passes the error on.
    fn image_to_tensor(&mut self, img: Result<RgbImage>, out: &mut [f32]) -> Result<()> {
        match img {
            Ok(img) => {
                self.to_tensor(&img, out);
                Ok(())
            }
            Err(e) => {
                out.fill(0.0);
                Err(e)
            }
        }
    }

    /// Decodes (or builds) a [`Record`]'s image and writes it into `out`; on error `out` is
    /// zero-filled and the error names the record.
    pub fn record_to_tensor(&mut self, record: Record, out: &mut [f32]) -> Result<()> {
        let img = match record {
            Record::Encoded { name, bytes } => decode(&name, &bytes),
            Record::Pixels { name, width, height, channels, data } => from_pixels(width, height, channels, &data)
                .map_err(|e| match e {
                    EmbedError::Image { reason, .. } => EmbedError::Image { name, reason },
                    e => e,
                }),
            Record::Failed(e) => Err(e),
        };
        self.image_to_tensor(img, out)
    }
}

/// Writes one image (exactly `3 * size * size` floats) into `out` in `spec`'s layout:
///
/// 1. resize with fast_image_resize and the spec's filter, as one resampling: `Squash` maps the
///    whole image to `size x size`; `ShortestCrop` maps the centre crop box (see
///    [`Resize::ShortestCrop`]) to `size x size`; the result is rounded to 8 bits, as Pillow's;
/// 2. reorder channels (`Bgr` swaps R and B);
/// 3. `(v * scale - mean[c]) / std[c]` with `c` in the final (model) channel order;
/// 4. NCHW: `out[c*S*S + y*S + x]`; NHWC: `out[(y*S + x)*3 + c]`.
///
/// Builds a [`Preprocessor`] per call; loops should keep one instead.
///
/// # Panics
/// If `out.len() != 3 * size * size` or the image is empty.
pub fn to_tensor(img: &RgbImage, spec: &ImageSpec, out: &mut [f32]) {
    Preprocessor::new(*spec).to_tensor(img, out)
}

/// Decodes and preprocesses `items` (`(name, encoded bytes)`) in parallel on the current rayon
/// pool. `out` holds `items.len()` consecutive slots of `spec.tensor_len()` floats; item `i`
/// goes to slot `i` and its result is element `i` of the returned vector. A bad image yields
/// its error and leaves its slot zero-filled; the others are still done.
///
/// # Panics
/// If `out.len() != items.len() * spec.tensor_len()`.
pub fn preprocess_batch(items: &[(String, Vec<u8>)], spec: &ImageSpec, out: &mut [f32]) -> Vec<Result<()>> {
    let len = spec.tensor_len();
    assert_eq!(out.len(), items.len() * len, "preprocess_batch: output must hold items.len() * 3 * size * size floats");
    let spec = *spec;
    items
        .par_iter()
        .zip(out.par_chunks_mut(len))
        .map_init(|| Preprocessor::new(spec), |pre, ((name, bytes), slot)| pre.decode_to_tensor(name, bytes, slot))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------------------

/// One input of [`pipeline`].
#[derive(Debug)]
pub enum Record {
    /// An encoded image file (see [`decode`]).
    Encoded { name: String, bytes: Vec<u8> },
    /// Raw HWC `u8` pixels (see [`from_pixels`]).
    Pixels { name: String, width: u32, height: u32, channels: u8, data: Vec<u8> },
    /// The record could not even be read; the error is reported at its index.
    Failed(EmbedError),
}

impl From<(String, Vec<u8>)> for Record {
    fn from((name, bytes): (String, Vec<u8>)) -> Self {
        Record::Encoded { name, bytes }
    }
}

impl<T: Into<Record>> From<Result<T>> for Record {
    fn from(r: Result<T>) -> Self {
        match r {
            Ok(t) => t.into(),
            Err(e) => Record::Failed(e),
        }
    }
}

/// One batch handed to the [`pipeline`] consumer.
#[derive(Debug)]
pub struct Batch {
    /// Input positions (0-based, in the order the iterator yielded them) of the images in
    /// `pixels`, ascending; `indices[j]` is image `j` of the tensor.
    pub indices: Vec<usize>,
    /// The good images only, packed: `[n, 3, S, S]` (NCHW) or `[n, S, S, 3]` (NHWC) with
    /// `n = indices.len()` (may be 0 when every image of the batch failed).
    pub pixels: Array4<f32>,
    /// The inputs of this batch that failed, ascending by index, with their errors.
    pub errors: Vec<(usize, EmbedError)>,
}

/// Decodes and preprocesses `items` in batches of `batch` inputs on rayon's global pool, while
/// `consume` runs on the calling thread on the batch before.
///
/// - Order: batches reach `consume` in input order; batch `k` covers input positions
///   `k*batch .. (k+1)*batch` (the last may be shorter). Every position appears exactly once,
///   either in `indices` or in `errors`. Each batch is a fresh allocation owned by the consumer.
/// - Back-pressure: a producer thread reads `items` sequentially, preprocesses each batch in
///   parallel and sends it through a bounded crossbeam channel of capacity `queue` batches
///   (`queue = 0` is a rendezvous: the next batch is prepared but handed over only when the
///   consumer asks). The producer blocks when the channel is full, so at most `queue + 2`
///   batches exist at once (one being filled, `queue` waiting, one being consumed).
/// - Stopping: if `consume` returns an error, the channel is closed, the producer stops after
///   the batch it is working on, and that error is returned. A panic in the producer (or in
///   `consume`) propagates to the caller after the other side has stopped.
/// - Threads: decoding uses rayon's global pool (not the caller's `install`ed pool, since it
///   runs on a separate producer thread); the iterator is advanced on that producer thread.
///
/// # Panics
/// If `batch == 0`.
pub fn pipeline<I, F>(items: I, spec: ImageSpec, batch: usize, queue: usize, mut consume: F) -> Result<()>
where
    I: IntoIterator,
    I::IntoIter: Send,
    I::Item: Into<Record>,
    F: FnMut(Batch) -> Result<()>,
{
    assert!(batch > 0, "pipeline: batch size must be at least 1");
    let iter = items.into_iter();
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(queue);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut iter = iter;
            let mut start = 0usize;
            loop {
                let records: Vec<Record> = iter.by_ref().take(batch).map(Into::into).collect();
                if records.is_empty() {
                    break;
                }
                let n = records.len();
                let b = build_batch(records, start, &spec);
                start += n;
                if tx.send(b).is_err() {
                    break; // the consumer stopped
                }
            }
        });
        let mut result = Ok(());
        for b in rx.iter() {
            if let Err(e) = consume(b) {
                result = Err(e);
                break;
            }
        }
        drop(rx); // unblocks a producer waiting on a full channel
        if let Err(panic) = producer.join() {
            std::panic::resume_unwind(panic);
        }
        result
    })
}

/// Preprocesses one batch in parallel and packs the good images to the front.
fn build_batch(records: Vec<Record>, start: usize, spec: &ImageSpec) -> Batch {
    let len = spec.tensor_len();
    let n = records.len();
    let mut buf = vec![0f32; n * len];
    let spec = *spec;
    let results: Vec<Result<()>> = records
        .into_par_iter()
        .zip(buf.par_chunks_mut(len))
        .map_init(|| Preprocessor::new(spec), |pre, (record, slot)| pre.record_to_tensor(record, slot))
        .collect();
    let mut indices = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(()) => {
                let j = indices.len();
                if j != i {
                    buf.copy_within(i * len..(i + 1) * len, j * len);
                }
                indices.push(start + i);
            }
            Err(e) => errors.push((start + i, e)),
        }
    }
    buf.truncate(indices.len() * len);
    let pixels = Array4::from_shape_vec(spec.batch_shape(indices.len()), buf).expect("buffer holds n images");
    Batch { indices, pixels, errors }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};
    use std::path::PathBuf;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A deterministic, smooth-ish test image with some texture.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)).wrapping_mul(2246822519) >> 27; // 0..31
            Rgb([
                ((x * 255) / w.max(1)) as u8,
                ((y * 255) / h.max(1)) as u8,
                (((x + y) * 7) as u8).wrapping_add(n as u8 * 3),
            ])
        })
    }

    /// A photo-like test image: smooth shading, mild noise, a few hard edges, no wrap-around.
    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let noise = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)).wrapping_mul(2246822519) >> 28) as f32; // 0..15
            let edge = if (fx - 0.6).abs() < 0.15 && (fy - 0.4).abs() < 0.2 { 90.0 } else { 0.0 };
            let v = |base: f32| (base + noise - 8.0 + edge).clamp(0.0, 255.0) as u8;
            Rgb([
                v(128.0 + 80.0 * (6.0 * fx).sin() * (3.0 * fy).cos()),
                v(40.0 + 150.0 * fy),
                v(200.0 - 120.0 * fx * fy),
            ])
        })
    }

    fn spec(size: u32, resize: Resize, interpolation: Interpolation) -> ImageSpec {
        ImageSpec {
            layout: Layout::Nchw,
            size,
            resize,
            interpolation,
            channels: Channels::Rgb,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    fn tensor(img: &RgbImage, spec: &ImageSpec) -> Vec<f32> {
        let mut out = vec![f32::NAN; spec.tensor_len()];
        to_tensor(img, spec, &mut out);
        out
    }

    fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    }

    fn image_reason(e: EmbedError, name: &str) -> String {
        match &e {
            EmbedError::Image { name: n, reason } => {
                assert_eq!(n, name);
                let msg = e.to_string();
                assert!(msg.contains(name), "{msg}");
                reason.clone()
            }
            other => panic!("expected an Image error, got {other:?}"),
        }
    }

    // ----- spec -----

    #[test]
    fn preprocess_spec_deserialises_from_kebab_case_toml() {
        let s: ImageSpec = toml::from_str(
            r#"
            layout = "nchw"
            size = 224
            resize = "shortest-crop"
            interpolation = "bicubic"
            channels = "rgb"
            scale = 0.003921569
            mean = [0.48145466, 0.4578275, 0.40821073]
            std = [0.26862954, 0.26130258, 0.27577711]
            "#,
        )
        .unwrap();
        assert_eq!(s.layout, Layout::Nchw);
        assert_eq!(s.resize, Resize::ShortestCrop);
        assert_eq!(s.interpolation, Interpolation::Bicubic);
        assert_eq!(s.tensor_len(), 3 * 224 * 224);
        assert!(s.validate().is_ok());
        for (text, want) in [("nhwc", Layout::Nhwc), ("nchw", Layout::Nchw)] {
            let l: Layout =
                toml::from_str::<toml::Value>(&format!("v = \"{text}\"")).unwrap()["v"].clone().try_into().unwrap();
            assert_eq!(l, want);
        }
        let i: Interpolation = toml::Value::String("lanczos3".into()).try_into().unwrap();
        assert_eq!(i, Interpolation::Lanczos3);
        let i: Interpolation = toml::Value::String("nearest".into()).try_into().unwrap();
        assert_eq!(i, Interpolation::Nearest);
        let r: Resize = toml::Value::String("squash".into()).try_into().unwrap();
        assert_eq!(r, Resize::Squash);
        let c: Channels = toml::Value::String("bgr".into()).try_into().unwrap();
        assert_eq!(c, Channels::Bgr);
        assert!(toml::Value::String("ShortestCrop".into()).try_into::<Resize>().is_err());
        let bad = ImageSpec { std: [1.0, 0.0, 1.0], ..s };
        assert!(bad.validate().unwrap_err().contains("std"));
        let bad = ImageSpec { size: 0, ..s };
        assert!(bad.validate().is_err());
    }

    // ----- decode -----

    #[test]
    fn preprocess_decode_lossless_formats_exactly() {
        let img = pattern(13, 7);
        let dynimg = DynamicImage::ImageRgb8(img.clone());
        for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
            let bytes = encode(&dynimg, format);
            let got = decode("x", &bytes).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(got, img, "{format:?}");
        }
    }

    #[test]
    fn preprocess_decode_jpeg_approximately() {
        let img = RgbImage::from_fn(32, 16, |x, _| if x < 16 { Rgb([200, 40, 30]) } else { Rgb([20, 60, 220]) });
        let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg);
        let got = decode("a.jpg", &bytes).unwrap();
        assert_eq!(got.dimensions(), (32, 16));
        // away from the edge between the halves, flat colours survive JPEG within a few levels
        for (x, y) in [(2, 2), (5, 12), (26, 3), (29, 13)] {
            let d = max_abs_diff(&got.get_pixel(x, y).0, &img.get_pixel(x, y).0);
            assert!(d <= 12, "pixel ({x},{y}) off by {d}");
        }
    }

    #[test]
    fn preprocess_decode_grayscale_alpha_and_16_bit_png() {
        let gray = ImageBuffer::from_fn(5, 3, |x, y| Luma([(x * 40 + y) as u8]));
        let got = decode("g.png", &encode(&DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png)).unwrap();
        for (x, y, p) in got.enumerate_pixels() {
            let g = gray.get_pixel(x, y).0[0];
            assert_eq!(p.0, [g, g, g]);
        }

        let ga = ImageBuffer::from_fn(5, 3, |x, y| LumaA([(x * 40 + y) as u8, (y * 100) as u8]));
        let got = decode("ga.png", &encode(&DynamicImage::ImageLumaA8(ga.clone()), ImageFormat::Png)).unwrap();
        for (x, y, p) in got.enumerate_pixels() {
            let g = ga.get_pixel(x, y).0[0];
            assert_eq!(p.0, [g, g, g], "alpha must be dropped, not composited");
        }

        let rgba = RgbaImage::from_fn(4, 4, |x, y| Rgba([x as u8 * 60, y as u8 * 60, 7, (x * y * 20) as u8]));
        for format in [ImageFormat::Png, ImageFormat::WebP] {
            let got = decode("rgba", &encode(&DynamicImage::ImageRgba8(rgba.clone()), format)).unwrap();
            for (x, y, p) in got.enumerate_pixels() {
                let q = rgba.get_pixel(x, y).0;
                assert_eq!(p.0, [q[0], q[1], q[2]], "{format:?}");
            }
        }

        let deep: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_fn(3, 2, |x, y| Rgb([0xFFFF, (x as u16) * 0x4040, (y as u16) * 0x8080]));
        let got = decode("deep.png", &encode(&DynamicImage::ImageRgb16(deep), ImageFormat::Png)).unwrap();
        assert_eq!(got.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(got.get_pixel(2, 1).0, [255, 0x80, 0x80]);
        let gray16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(2, 2, |x, _| Luma([x as u16 * 0xFFFF]));
        let got = decode("g16.png", &encode(&DynamicImage::ImageLuma16(gray16), ImageFormat::Png)).unwrap();
        assert_eq!(got.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(got.get_pixel(1, 1).0, [255, 255, 255]);
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// A palette (colour type 3, 8-bit) PNG written by hand: the `image` encoders do not write
    /// palettes. IDAT is one stored (uncompressed) deflate block.
    fn palette_png(w: u32, h: u32, palette: &[[u8; 3]], index: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let mut raw = Vec::new();
        for y in 0..h {
            raw.push(0); // filter: none
            for x in 0..w {
                raw.push(index(x, y));
            }
        }
        let mut z = vec![0x78, 0x01, 0x01];
        z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
        z.extend_from_slice(&raw);
        let (mut a, mut b) = (1u32, 0u32);
        for &v in &raw {
            a = (a + v as u32) % 65521;
            b = (b + a) % 65521;
        }
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());

        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
        png_chunk(&mut png, b"IHDR", &ihdr);
        png_chunk(&mut png, b"PLTE", &palette.concat());
        png_chunk(&mut png, b"IDAT", &z);
        png_chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn preprocess_decode_palette_png() {
        let palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
        let bytes = palette_png(5, 4, &palette, |x, y| ((x + y) % 4) as u8);
        let got = decode("pal.png", &bytes).unwrap();
        assert_eq!(got.dimensions(), (5, 4));
        for (x, y, p) in got.enumerate_pixels() {
            assert_eq!(p.0, palette[((x + y) % 4) as usize]);
        }
    }

    #[test]
    fn preprocess_decode_gif_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame};
        let red = RgbaImage::from_pixel(6, 4, Rgba([255, 0, 0, 255]));
        let blue = RgbaImage::from_pixel(6, 4, Rgba([0, 0, 255, 255]));
        let mut bytes = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut bytes);
            enc.encode_frames(
                [red, blue].into_iter().map(|f| Frame::from_parts(f, 0, 0, Delay::from_numer_denom_ms(100, 1))),
            )
            .unwrap();
        }
        let got = decode("anim.gif", &bytes).unwrap();
        assert_eq!(got.dimensions(), (6, 4));
        for p in got.pixels() {
            assert!(max_abs_diff(&p.0, &[255, 0, 0]) <= 4, "first frame expected, got {:?}", p.0);
        }
    }

    /// Splices an EXIF APP1 segment (big-endian TIFF, one IFD0 entry: Orientation) right after
    /// a JPEG's SOI marker.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut payload = b"Exif\x00\x00".to_vec();
        payload.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn preprocess_decode_applies_exif_orientation() {
        // 32 wide, 16 high: left half red, right half blue.
        let img = RgbImage::from_fn(32, 16, |x, _| if x < 16 { Rgb([220, 20, 20]) } else { Rgb([20, 20, 220]) });
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let plain = decode("plain.jpg", &jpeg).unwrap();
        assert_eq!(plain.dimensions(), (32, 16));

        // 6 = rotate 90 degrees clockwise to display: the left column becomes the top row.
        let rotated = decode("rot.jpg", &with_exif_orientation(&jpeg, 6)).unwrap();
        assert_eq!(rotated.dimensions(), (16, 32), "width and height must be swapped");
        let top = rotated.get_pixel(8, 4).0;
        let bottom = rotated.get_pixel(8, 28).0;
        assert!(top[0] > 150 && top[2] < 100, "top should be red, got {top:?}");
        assert!(bottom[2] > 150 && bottom[0] < 100, "bottom should be blue, got {bottom:?}");

        // 3 = rotate 180: same dimensions, red on the right.
        let r180 = decode("r180.jpg", &with_exif_orientation(&jpeg, 3)).unwrap();
        assert_eq!(r180.dimensions(), (32, 16));
        assert!(r180.get_pixel(28, 8).0[0] > 150);

        // 1 = as stored.
        assert_eq!(decode("r1.jpg", &with_exif_orientation(&jpeg, 1)).unwrap(), plain);
    }

    #[test]
    fn preprocess_decode_bad_input_names_the_image() {
        let reason = image_reason(decode("empty.jpg", b"").unwrap_err(), "empty.jpg");
        assert!(reason.contains("empty"), "{reason}");

        let reason = image_reason(decode("notes.txt", b"hello, this is not an image").unwrap_err(), "notes.txt");
        assert!(reason.contains("not a recognised image") && reason.contains("on_bad_record"), "{reason}");

        let png = encode(&DynamicImage::ImageRgb8(pattern(64, 48)), ImageFormat::Png);
        let reason = image_reason(decode("cut.png", &png[..png.len() / 2]).unwrap_err(), "cut.png");
        assert!(reason.contains("PNG") && reason.contains("on_bad_record"), "{reason}");

        let mut corrupt = png.clone();
        for b in &mut corrupt[40..120] {
            *b ^= 0x5A;
        }
        let reason = image_reason(decode("corrupt.png", &corrupt).unwrap_err(), "corrupt.png");
        assert!(reason.contains("PNG"), "{reason}");

        let jpeg = encode(&DynamicImage::ImageRgb8(pattern(64, 48)), ImageFormat::Jpeg);
        let reason = image_reason(decode("head.jpg", &jpeg[..20]).unwrap_err(), "head.jpg");
        assert!(reason.contains("JPEG") && reason.contains("on_bad_record"), "{reason}");

        let gif = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Gif);
        image_reason(decode("cut.gif", &gif[..gif.len() / 3]).unwrap_err(), "cut.gif");

        let webp = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::WebP);
        image_reason(decode("cut.webp", &webp[..webp.len() / 2]).unwrap_err(), "cut.webp");

        let bmp = encode(&DynamicImage::ImageRgb8(pattern(16, 16)), ImageFormat::Bmp);
        image_reason(decode("cut.bmp", &bmp[..bmp.len() / 2]).unwrap_err(), "cut.bmp");

        // a recognised but unsupported format (TIFF signature)
        let reason = image_reason(decode("scan.tif", b"II*\x00\x08\x00\x00\x00rest").unwrap_err(), "scan.tif");
        assert!(reason.contains("TIFF") && reason.contains("not supported"), "{reason}");
    }

    #[test]
    fn preprocess_from_pixels_gray_and_rgb() {
        let g = from_pixels(3, 2, 1, &[0, 1, 2, 3, 4, 5]).unwrap();
        assert_eq!(g.get_pixel(2, 1).0, [5, 5, 5]);
        assert_eq!(g.get_pixel(1, 0).0, [1, 1, 1]);
        let data: Vec<u8> = (0..18).collect();
        let c = from_pixels(3, 2, 3, &data).unwrap();
        assert_eq!(c.get_pixel(1, 1).0, [12, 13, 14]);
        assert!(from_pixels(3, 2, 3, &data[..17]).is_err());
        assert!(from_pixels(3, 2, 4, &[0; 24]).is_err());
        assert!(from_pixels(0, 2, 1, &[]).is_err());
    }

    // ----- to_tensor -----

    /// 4x4 image, pixel (x, y) = [10x + y, 100 + x, 200 - y].
    fn grid4() -> RgbImage {
        RgbImage::from_fn(4, 4, |x, y| Rgb([(10 * x + y) as u8, (100 + x) as u8, (200 - y) as u8]))
    }

    #[test]
    fn preprocess_squash_nearest_exact_nchw_and_nhwc() {
        // 4 -> 2 nearest samples source pixel centres 1 and 3 on each axis.
        let img = grid4();
        let mut s = spec(2, Resize::Squash, Interpolation::Nearest);
        let nchw = tensor(&img, &s);
        #[rustfmt::skip]
        let want_nchw = [
            11.0, 31.0, 13.0, 33.0,     // R: (x,y) = (1,1) (3,1) (1,3) (3,3)
            101.0, 103.0, 101.0, 103.0, // G
            199.0, 199.0, 197.0, 197.0, // B
        ];
        assert_eq!(nchw, want_nchw);

        s.layout = Layout::Nhwc;
        let nhwc = tensor(&img, &s);
        #[rustfmt::skip]
        let want_nhwc = [
            11.0, 101.0, 199.0,  31.0, 103.0, 199.0,
            13.0, 101.0, 197.0,  33.0, 103.0, 197.0,
        ];
        assert_eq!(nhwc, want_nhwc);
        // the same value at out[c*S*S + y*S + x] (NCHW) and out[(y*S + x)*3 + c] (NHWC)
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..2 {
                    assert_eq!(nchw[c * 4 + y * 2 + x], nhwc[(y * 2 + x) * 3 + c]);
                }
            }
        }
    }

    #[test]
    fn preprocess_bgr_and_mean_std_in_model_order() {
        let img = grid4();
        let mut s = spec(2, Resize::Squash, Interpolation::Nearest);
        s.channels = Channels::Bgr;
        let bgr = tensor(&img, &s);
        assert_eq!(&bgr[0..4], &[199.0, 199.0, 197.0, 197.0], "channel 0 must be blue");
        assert_eq!(&bgr[4..8], &[101.0, 103.0, 101.0, 103.0]);
        assert_eq!(&bgr[8..12], &[11.0, 31.0, 13.0, 33.0], "channel 2 must be red");

        s.scale = 1.0 / 255.0;
        s.mean = [0.1, 0.2, 0.3];
        s.std = [0.5, 0.25, 2.0];
        s.layout = Layout::Nhwc;
        let out = tensor(&img, &s);
        // pixel (0,0) of the output is source (1,1) = [11, 101, 199]; in BGR order [199, 101, 11]
        for (c, v) in [199.0f32, 101.0, 11.0].into_iter().enumerate() {
            let want = (v * (1.0 / 255.0) - s.mean[c]) / s.std[c];
            assert_eq!(out[c], want, "channel {c}");
        }
        let v = 33.0f32; // output (1,1) red = source (3,3) red, BGR channel 2
        assert_eq!(out[(2 + 1) * 3 + 2], (v / 255.0 - 0.3) / 2.0);
    }

    #[test]
    fn preprocess_shortest_crop_takes_the_centre() {
        // wide 8x4 -> 4: scale 1, long side 8, crop columns 2..6 exactly
        let wide = RgbImage::from_fn(8, 4, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 0]));
        for interp in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Lanczos3]
        {
            let out = tensor(&wide, &spec(4, Resize::ShortestCrop, interp));
            for y in 0..4 {
                for x in 0..4 {
                    assert_eq!(out[y * 4 + x], ((x + 2) * 10) as f32, "{interp:?} R at ({x},{y})");
                    assert_eq!(out[16 + y * 4 + x], (y * 10) as f32, "{interp:?} G at ({x},{y})");
                }
            }
        }
        // tall 3x9 -> 3: rows 3..6
        let tall = RgbImage::from_fn(3, 9, |x, y| Rgb([x as u8, y as u8, 0]));
        let out = tensor(&tall, &spec(3, Resize::ShortestCrop, Interpolation::Nearest));
        assert_eq!(&out[9..18], &[3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 5.0, 5.0]);
        // odd margin 4x7 -> 4: torchvision's CenterCrop uses round((7 - 4) / 2) = round(1.5) = 2
        let odd = RgbImage::from_fn(4, 7, |x, y| Rgb([x as u8, y as u8, 0]));
        let out = tensor(&odd, &spec(4, Resize::ShortestCrop, Interpolation::Nearest));
        assert_eq!(&out[16..32], &[2., 2., 2., 2., 3., 3., 3., 3., 4., 4., 4., 4., 5., 5., 5., 5.]);
        // downscale 200x100 -> 50: the crop is the centre 100x100 (columns 50..150). As with
        // resize-then-crop, the filter taps of the border columns reach outside the box.
        let big = RgbImage::from_fn(200, 100, |x, _| Rgb([if (50..150).contains(&x) { 200 } else { 0 }, 0, 0]));
        let out = tensor(&big, &spec(50, Resize::ShortestCrop, Interpolation::Bilinear));
        for y in 0..50 {
            let row = &out[y * 50..(y + 1) * 50];
            assert!(row[1..49].iter().all(|&v| v == 200.0), "the crop must be the centre 100x100: {row:?}");
            assert!(row[0] > 100.0 && row[0] < 200.0 && row[0] == row[49], "border columns blend: {row:?}");
        }
    }

    #[test]
    fn preprocess_constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, Rgb([12, 34, 56]));
        for interp in [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Lanczos3]
        {
            for resize in [Resize::Squash, Resize::ShortestCrop] {
                let out = tensor(&img, &spec(16, resize, interp));
                assert!(out[..256].iter().all(|&v| v == 12.0), "{interp:?} {resize:?}");
                assert!(out[512..].iter().all(|&v| v == 56.0), "{interp:?} {resize:?}");
            }
        }
    }

    fn python() -> PathBuf {
        let p = std::env::var_os("IMCLUST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/python"));
        assert!(p.exists(), "no Python env at {}: run scripts/python-env.sh (scripts/test.sh does it)", p.display());
        p
    }

    const PIL_SCRIPT: &str = r#"
import sys
from PIL import Image
src, out, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
img = Image.open(src).convert("RGB")
filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos3": Image.LANCZOS}
with open(out, "wb") as f:
    for case in cases:
        mode, filt, size = case.split(":")
        size = int(size)
        if mode == "squash":
            r = img.resize((size, size), filters[filt])
        else:  # torchvision Resize(size) + CenterCrop(size)
            w, h = img.size
            short, long = min(w, h), max(w, h)
            nl = int(size * long / short)
            nw, nh = (size, nl) if w <= h else (nl, size)
            r = img.resize((nw, nh), filters[filt])
            left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
            r = r.crop((left, top, left + size, top + size))
        assert r.size == (size, size), r.size
        f.write(r.tobytes())
"#;

    /// Our resize against Pillow's (`Image.resize`, and for shortest-crop torchvision's
    /// `Resize` + `CenterCrop` done in Pillow) on the same pixels, for two images: `photo`
    /// (smooth, noisy, a few edges) and `pattern` (sawtooth ramps with wrap-around: worst case).
    ///
    /// Measured (Pillow 13.0.0 as pinned by scripts/python-env.sh, fast_image_resize 5.5.0,
    /// 2026-12-04): nearest identical; bilinear, bicubic and lanczos3 max |diff| 1 when
    /// downscaling and 2 in the upscaling lanczos3 case (fixed-point rounding: Pillow keeps 22
    /// fractional bits, fast_image_resize fewer), mean |diff| <= 0.01 levels. Asserted: nearest
    /// exact, others max <= 2 and mean <= 0.02.
    ///
    /// Not covered: a squash that shrinks the height much more than the width (or upscales the
    /// width while shrinking the height). Pillow 13 (PR #9549) does the vertical pass first
    /// there, and bicubic/lanczos3 then differ by up to ~5 levels on `photo` and ~24 on
    /// `pattern` (measured on 157x263 -> 224x224). Shortest-crop scales both axes alike and
    /// always matches.
    #[test]
    fn preprocess_matches_pillow() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(Resize, Interpolation, u32, u32, u32)> = vec![
            // (resize, filter, source w, source h, size)
            (Resize::Squash, Interpolation::Bilinear, 301, 211, 64),
            (Resize::ShortestCrop, Interpolation::Bilinear, 301, 211, 64),
            (Resize::ShortestCrop, Interpolation::Bilinear, 157, 263, 224),
            (Resize::ShortestCrop, Interpolation::Bilinear, 500, 375, 224),
            (Resize::Squash, Interpolation::Bicubic, 301, 211, 64),
            (Resize::ShortestCrop, Interpolation::Bicubic, 500, 375, 224),
            (Resize::ShortestCrop, Interpolation::Bicubic, 157, 263, 224),
            (Resize::ShortestCrop, Interpolation::Lanczos3, 301, 211, 96),
            (Resize::ShortestCrop, Interpolation::Lanczos3, 157, 263, 96),
            (Resize::Squash, Interpolation::Bicubic, 263, 157, 224),
            (Resize::Squash, Interpolation::Lanczos3, 40, 30, 64),
            (Resize::Squash, Interpolation::Nearest, 301, 211, 64),
            (Resize::ShortestCrop, Interpolation::Nearest, 301, 211, 64),
        ];
        let mut report = Vec::new();
        let mut failed = false;
        for (k, &(resize, interp, w, h, size)) in cases.iter().enumerate() {
            for (kind, img) in [("photo", photo(w, h)), ("pattern", pattern(w, h))] {
                let src = dir.path().join(format!("src{k}{kind}.png"));
                img.save(&src).unwrap();
                let out = dir.path().join(format!("out{k}{kind}.raw"));
                let mode = match resize {
                    Resize::Squash => "squash",
                    Resize::ShortestCrop => "shortest-crop",
                };
                let filt = match interp {
                    Interpolation::Nearest => "nearest",
                    Interpolation::Bilinear => "bilinear",
                    Interpolation::Bicubic => "bicubic",
                    Interpolation::Lanczos3 => "lanczos3",
                };
                let status = std::process::Command::new(python())
                    .args(["-c", PIL_SCRIPT])
                    .arg(&src)
                    .arg(&out)
                    .arg(format!("{mode}:{filt}:{size}"))
                    .status()
                    .unwrap();
                assert!(status.success(), "the Pillow script failed");
                let pil = std::fs::read(&out).unwrap();

                let mut s = spec(size, resize, interp);
                s.layout = Layout::Nhwc;
                let ours: Vec<u8> = tensor(&img, &s).iter().map(|&v| v as u8).collect();
                let max = max_abs_diff(&ours, &pil);
                let mean = ours.iter().zip(&pil).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>() / ours.len() as f64;
                report.push(format!("{kind} {mode} {filt} {w}x{h}->{size}: max {max} mean {mean:.4}"));
                let limit = if interp == Interpolation::Nearest { 0 } else { 2 };
                failed |= max > limit || mean > 0.02;
            }
        }
        eprintln!("Pillow parity:\n{}", report.join("\n"));
        assert!(!failed, "Pillow parity out of tolerance:\n{}", report.join("\n"));
    }

    // ----- batch and pipeline -----

    fn jpeg_items(n: usize, w: u32, h: u32) -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let img = RgbImage::from_fn(w, h, |x, y| {
                    Rgb([(x as usize + i * 7) as u8, (y as usize * 3 + i) as u8, ((x ^ y) as usize + i) as u8])
                });
                (format!("img{i}.jpg"), encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg))
            })
            .collect()
    }

    #[test]
    fn preprocess_batch_keeps_slots_and_errors() {
        let s = ImageSpec { layout: Layout::Nchw, ..spec(16, Resize::ShortestCrop, Interpolation::Bilinear) };
        let mut items = jpeg_items(5, 40, 30);
        items[2] = ("bad.jpg".to_string(), b"garbage".to_vec());
        let mut out = vec![f32::NAN; 5 * s.tensor_len()];
        let results = preprocess_batch(&items, &s, &mut out);
        assert_eq!(results.len(), 5);
        for (i, r) in results.iter().enumerate() {
            let slot = &out[i * s.tensor_len()..(i + 1) * s.tensor_len()];
            if i == 2 {
                let e = r.as_ref().unwrap_err();
                assert!(e.to_string().contains("bad.jpg"), "{e}");
                assert!(slot.iter().all(|&v| v == 0.0));
            } else {
                r.as_ref().unwrap();
                let mut want = vec![0.0; s.tensor_len()];
                to_tensor(&decode("", &items[i].1).unwrap(), &s, &mut want);
                assert_eq!(slot, &want[..], "slot {i}");
            }
        }
    }

    #[test]
    fn preprocess_pipeline_orders_batches_and_reports_errors() {
        let s = ImageSpec { layout: Layout::Nhwc, ..spec(8, Resize::Squash, Interpolation::Bilinear) };
        let mut items: Vec<Record> = jpeg_items(11, 20, 12).into_iter().map(Record::from).collect();
        items[3] = Record::Encoded { name: "cut.jpg".into(), bytes: vec![0xFF, 0xD8, 0xFF] };
        items[7] = Record::Pixels { name: "cifar-7".into(), width: 4, height: 4, channels: 3, data: vec![9; 48] };
        items[8] = Record::Pixels { name: "short-8".into(), width: 4, height: 4, channels: 3, data: vec![9; 47] };
        items[10] =
            Record::from(Err::<(String, Vec<u8>), _>(EmbedError::io("gone.jpg", std::io::ErrorKind::NotFound.into())));
        let expected: Vec<Option<Vec<f32>>> = (0..11)
            .map(|i| {
                let img = match i {
                    3 | 8 | 10 => return None,
                    7 => from_pixels(4, 4, 3, &[9; 48]).unwrap(),
                    _ => decode("", &jpeg_items(11, 20, 12)[i].1).unwrap(),
                };
                let mut t = vec![0.0; s.tensor_len()];
                to_tensor(&img, &s, &mut t);
                Some(t)
            })
            .collect();

        let mut seen = Vec::new();
        let mut failed = Vec::new();
        pipeline(items, s, 4, 1, |b: Batch| {
            assert_eq!(b.pixels.shape(), &[b.indices.len(), 8, 8, 3]);
            let flat = b.pixels.as_slice().unwrap();
            for (j, &i) in b.indices.iter().enumerate() {
                assert_eq!(
                    &flat[j * s.tensor_len()..(j + 1) * s.tensor_len()],
                    &expected[i].as_ref().unwrap()[..],
                    "image {i}"
                );
            }
            seen.extend(b.indices);
            for (i, e) in b.errors {
                failed.push((i, e.to_string()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![0, 1, 2, 4, 5, 6, 7, 9]);
        assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), vec![3, 8, 10]);
        assert!(failed[0].1.contains("cut.jpg"), "{}", failed[0].1);
        assert!(failed[1].1.contains("short-8"), "{}", failed[1].1);
        assert!(failed[2].1.contains("gone.jpg"), "{}", failed[2].1);
    }

    #[test]
    fn preprocess_pipeline_stops_when_the_consumer_fails() {
        let s = spec(8, Resize::Squash, Interpolation::Nearest);
        let pulled = std::sync::atomic::AtomicUsize::new(0);
        let items = (0..1000).map(|i| {
            pulled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Record::Pixels { name: format!("p{i}"), width: 2, height: 2, channels: 1, data: vec![i as u8; 4] }
        });
        let mut calls = 0;
        let r = pipeline(items, s, 10, 2, |_b| {
            calls += 1;
            if calls == 3 { Err(EmbedError::Text("stop".into())) } else { Ok(()) }
        });
        assert!(matches!(r, Err(EmbedError::Text(ref m)) if m == "stop"));
        assert_eq!(calls, 3);
        // consumed 3 batches; at most queue (2) + 1 in flight + 1 being filled more were read
        let n = pulled.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n <= 10 * (3 + 2 + 2), "the producer kept reading: {n} items");

        // every item delivered exactly once, in order, also with queue = 0 and a short tail
        let mut seen = Vec::new();
        let items = (0..23).map(|i| Record::Pixels {
            name: format!("p{i}"),
            width: 1,
            height: 1,
            channels: 1,
            data: vec![i as u8],
        });
        pipeline(items, s, 5, 0, |b| {
            seen.extend(b.indices);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
    }

    /// Throughput of decode + preprocess (500x375 JPEG -> 224x224, shortest-crop, bicubic) on a
    /// 2-thread pool. `cargo test -p imclust-embed --release preprocess_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn preprocess_timing() {
        let n = 400;
        let items = jpeg_items_textured(n, 500, 375);
        let s = ImageSpec {
            layout: Layout::Nchw,
            size: 224,
            resize: Resize::ShortestCrop,
            interpolation: Interpolation::Bicubic,
            channels: Channels::Rgb,
            scale: 1.0 / 255.0,
            mean: [0.481, 0.458, 0.408],
            std: [0.269, 0.261, 0.276],
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut out = vec![0f32; n * s.tensor_len()];
        pool.install(|| preprocess_batch(&items[..20], &s, &mut out[..20 * s.tensor_len()])); // warm-up
        let t = std::time::Instant::now();
        let r = pool.install(|| preprocess_batch(&items, &s, &mut out));
        let dt = t.elapsed().as_secs_f64();
        assert!(r.iter().all(|r| r.is_ok()));
        let t = std::time::Instant::now();
        let decoded: Vec<RgbImage> = pool.install(|| items.par_iter().map(|(n, b)| decode(n, b).unwrap()).collect());
        let dt_decode = t.elapsed().as_secs_f64();
        drop(decoded);
        eprintln!(
            "decode+preprocess: {n} images in {dt:.3}s = {:.0} images/s on 2 threads (decode alone {:.0} images/s); JPEG size ~{} KB",
            n as f64 / dt,
            n as f64 / dt_decode,
            items[0].1.len() / 1024
        );
    }

    /// Photo-like JPEGs (smooth gradients plus noise), quality 85.
    fn jpeg_items_textured(n: usize, w: u32, h: u32) -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let img = RgbImage::from_fn(w, h, |x, y| {
                    let noise =
                        ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(2246822519) ^ (i as u32 * 97)) >> 26) as u8;
                    Rgb([
                        ((x * 255 / w) as u8).wrapping_add(noise),
                        ((y * 255 / h) as u8).wrapping_add(noise / 2),
                        (((x + y + i as u32) % 256) as u8) / 2 + noise,
                    ])
                });
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(&img).unwrap();
                (format!("img{i}.jpg"), bytes)
            })
            .collect()
    }
}
