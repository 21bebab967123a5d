//! Image tasks: decode a JPEG or PNG (bounded before a pixel is allocated),
//! apply its EXIF orientation, convert to RGB, and prepare it as the bundle's
//! `preprocessor_config.json` says, exactly as transformers' image processor
//! does: Pillow's resize (its fixed-point convolution, so the pixels are Pillow's
//! to the bit), a centre crop, rescale in float64 then float32, normalise, and
//! channels first.

use std::io::Cursor;

use base64::Engine as _;
use ndarray::{Array4, ArrayD};
use zoo_api::{EffectiveServing, ImageInfo, ImageResize, Signature};

use super::request::{Inputs, RawPredict, refuse_mlflow_formats};
use crate::error::{Error, Result};
use crate::runtime::{Tensor, Tensors};

/// Largest width or height of an image zoo decodes.
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels of one image (a 48-megapixel photo).
pub const MAX_PIXELS: u64 = 48_000_000;
/// Most bytes one image's decoded pixels may take (8-bit RGBA or 16-bit samples).
pub const MAX_DECODED_BYTES: u64 = 256 << 20;
/// Most pixels one request's images may hold together, decoded.
pub const MAX_REQUEST_PIXELS: u64 = 192_000_000;
/// Most bytes the prepared inputs of one request may take (float32).
pub const MAX_PREPARED_BYTES: u64 = 512 << 20;

/// An image as 8-bit RGB rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` bytes, row by row.
    pub pixels: Vec<u8>,
}

impl Rgb {
    fn at(&self, x: usize, y: usize, c: usize) -> u8 {
        self.pixels[(y * self.width as usize + x) * 3 + c]
    }
}

/// The kind of an encoded image, from its first bytes.
fn kind(bytes: &[u8]) -> Option<image::ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(image::ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(image::ImageFormat::Png)
    } else {
        None
    }
}

/// Decode a JPEG or PNG into RGB, turned as its EXIF orientation says (as
/// transformers' `load_image` does); refuses other formats and images whose size
/// is past the limits before decoding them.
pub fn decode(bytes: &[u8]) -> Result<Rgb> {
    use image::ImageDecoder as _;
    let bad = |m: String| Error::InvalidInput(m);
    let format = kind(bytes).ok_or_else(|| bad("the image must be a JPEG or a PNG".into()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let undecodable = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => too_large(),
        other => bad(format!("the image cannot be decoded: {other}")),
    };
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    // The reader checks the sides only: the pixels and their bytes are checked here,
    // from the header, before the decoder allocates them.
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS || decoder.total_bytes() > MAX_DECODED_BYTES {
        return Err(too_large());
    }
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

fn too_large() -> Error {
    Error::InvalidInput(format!(
        "the image is larger than zoo decodes (at most {MAX_SIDE} pixels a side, {} megapixels, {} MiB of pixels)",
        MAX_PIXELS / 1_000_000,
        MAX_DECODED_BYTES >> 20
    ))
}

/// RGB as Pillow's `convert("RGB")` makes it: alpha dropped, grey repeated, and
/// 16-bit samples as Pillow reads them (the high byte, except a 16-bit grey PNG
/// without alpha, Pillow's `I;16`, whose values are clipped to 255).
fn to_rgb8(img: image::DynamicImage) -> Rgb {
    use image::DynamicImage as D;
    let (width, height) = (img.width(), img.height());
    let pixels: Vec<u8> = match img {
        D::ImageRgb16(i) => i.into_raw().iter().map(|v| (v >> 8) as u8).collect(),
        D::ImageRgba16(i) => {
            i.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect()
        }
        D::ImageLuma16(i) => i.into_raw().iter().flat_map(|v| [(*v).min(255) as u8; 3]).collect(),
        D::ImageLumaA16(i) => i.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect(),
        other => other.into_rgb8().into_raw(),
    };
    Rgb { width, height, pixels }
}

/// Pillow's resampling filters: `(support, weight at x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
}

impl Filter {
    pub fn parse(name: &str) -> Option<Filter> {
        match name {
            "nearest" => Some(Filter::Nearest),
            "bilinear" => Some(Filter::Bilinear),
            "bicubic" => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.5,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Nearest => f64::from(u8::from(x < 0.5)),
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point bits of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's coefficients for resizing `in_size` samples to `out_size`: for each
/// output sample its first input sample, how many it reads, and their weights.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast: truncation toward zero, then clamped.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(count) {
            *wx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *wx;
        }
        for (x, wx) in w.iter().enumerate().take(count) {
            let k = if total == 0.0 { *wx } else { wx / total };
            let fixed = k * f64::from(1u32 << PRECISION_BITS);
            kk[xx * ksize + x] = if k < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
        }
        bounds.push((xmin, count));
    }
    (ksize, bounds, kk)
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resize as Pillow's `Image.resize(size, resample)` does for an 8-bit RGB image
/// (Pillow 13's `ImagingResampleInner`): a horizontal and a vertical pass, each
/// rounded to 8 bits, in Pillow's order; nearest picks the sample under each
/// output sample's centre.
pub fn resize(img: &Rgb, width: u32, height: u32, filter: Filter) -> Rgb {
    let (w_in, h_in) = (img.width as usize, img.height as usize);
    let (w_out, h_out) = (width as usize, height as usize);
    if (w_in, h_in) == (w_out, h_out) {
        return img.clone();
    }
    if filter == Filter::Nearest {
        // Pillow's ImagingScaleAffine: positions accumulated step by step from the
        // first sample's centre, truncated; a position outside the image is black.
        let positions = |n_in: usize, n_out: usize| {
            let step = n_in as f64 / n_out as f64;
            let mut at = step * 0.5;
            (0..n_out)
                .map(|_| {
                    let i = if at < 0.0 { None } else { Some(at as usize).filter(|i| *i < n_in) };
                    at += step;
                    i
                })
                .collect::<Vec<Option<usize>>>()
        };
        let (xs, ys) = (positions(w_in, w_out), positions(h_in, h_out));
        let mut pixels = vec![0u8; w_out * h_out * 3];
        for (y, yi) in ys.iter().enumerate() {
            let Some(yi) = yi else { continue };
            for (x, xi) in xs.iter().enumerate() {
                if let Some(xi) = xi {
                    pixels[(y * w_out + x) * 3..][..3].copy_from_slice(&img.pixels[(yi * w_in + xi) * 3..][..3]);
                }
            }
        }
        return Rgb { width, height, pixels };
    }
    // Pillow 13 runs the vertical pass first when the height shrinks by more than
    // twice what the width does; the order changes the 8-bit rounding in between.
    let (dh, dw) = (h_in as i64 - h_out as i64, w_in as i64 - w_out as i64);
    let vertical_first = dh > 0 && dh > dw * 2;
    if vertical_first {
        horizontal_pass(&vertical_pass(img, h_out, filter), w_out, filter)
    } else {
        vertical_pass(&horizontal_pass(img, w_out, filter), h_out, filter)
    }
}

/// Pillow's horizontal pass: every row resampled to `w_out` samples.
fn horizontal_pass(img: &Rgb, w_out: usize, filter: Filter) -> Rgb {
    let (w_in, h) = (img.width as usize, img.height as usize);
    if w_out == w_in {
        return img.clone();
    }
    let (ksize, bounds, kk) = coefficients(w_in, w_out, filter);
    let mut pixels = vec![0u8; w_out * h * 3];
    for y in 0..h {
        for (xx, &(xmin, count)) in bounds.iter().enumerate() {
            let k = &kk[xx * ksize..][..count];
            for c in 0..3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (x, kx) in k.iter().enumerate() {
                    ss += i32::from(img.at(x + xmin, y, c)) * kx;
                }
                pixels[(y * w_out + xx) * 3 + c] = clip8(ss);
            }
        }
    }
    Rgb { width: w_out as u32, height: img.height, pixels }
}

/// Pillow's vertical pass: every column resampled to `h_out` samples.
fn vertical_pass(img: &Rgb, h_out: usize, filter: Filter) -> Rgb {
    let (w, h_in) = (img.width as usize, img.height as usize);
    if h_out == h_in {
        return img.clone();
    }
    let (ksize, bounds, kk) = coefficients(h_in, h_out, filter);
    let mut pixels = vec![0u8; w * h_out * 3];
    for (yy, &(ymin, count)) in bounds.iter().enumerate() {
        let k = &kk[yy * ksize..][..count];
        for x in 0..w {
            for c in 0..3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (y, ky) in k.iter().enumerate() {
                    ss += i32::from(img.at(x, y + ymin, c)) * ky;
                }
                pixels[(yy * w + x) * 3 + c] = clip8(ss);
            }
        }
    }
    Rgb { width: img.width, height: h_out as u32, pixels }
}

/// The size transformers resizes an image to: a fixed size, or the shorter edge
/// to `edge` and the longer in proportion (truncated, as `int()` does).
pub fn resized_size(img: &Rgb, resize: ImageResize) -> Result<(u32, u32)> {
    match resize {
        ImageResize::Exact { height, width } => Ok((width, height)),
        ImageResize::ShortestEdge(edge) => {
            let (w, h) = (u64::from(img.width), u64::from(img.height));
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let new_long = ((u64::from(edge) * long) as f64 / short as f64) as u64;
            let new_long = u32::try_from(new_long).ok().filter(|n| (1..=MAX_SIDE).contains(n)).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the image is {w}x{h} pixels: resized to a shorter edge of {edge} its longer edge would be \
                     {new_long} pixels, more than {MAX_SIDE}"
                ))
            })?;
            Ok(if w <= h { (edge, new_long) } else { (new_long, edge) })
        }
    }
}

/// An image prepared for a model as its processor says: `[3, height, width]` float32.
pub fn prepare(img: &Rgb, info: &ImageInfo) -> Result<Vec<f32>> {
    let filter = Filter::parse(&info.resample)
        .ok_or_else(|| Error::NotServable(format!("resampling filter '{}' is not one zoo applies", info.resample)))?;
    let resized = match info.resize {
        Some(r) => {
            let (w, h) = resized_size(img, r)?;
            resize(img, w, h, filter)
        }
        None => img.clone(),
    };
    let (h, w) = (info.height as usize, info.width as usize);
    // transformers' centre crop: the top-left corner at floor((size - crop) / 2).
    let (top, left) = match info.crop {
        Some([ch, cw]) => {
            if resized.height < ch || resized.width < cw {
                return Err(Error::InvalidInput(format!(
                    "the image is {}x{} pixels, smaller than this model's {cw}x{ch}",
                    resized.width, resized.height
                )));
            }
            (((resized.height - ch) / 2) as usize, ((resized.width - cw) / 2) as usize)
        }
        None => (0, 0),
    };
    if info.crop.is_none() && (resized.height as usize, resized.width as usize) != (h, w) {
        return Err(Error::InvalidInput(format!(
            "the image is {}x{} pixels; this model takes {w}x{h} images",
            resized.width, resized.height
        )));
    }
    let mut out = vec![0f32; 3 * h * w];
    for c in 0..3 {
        let (mean, std) = info.normalize.as_ref().map_or((0.0, 1.0), |n| (n.mean[c], n.std[c]));
        for y in 0..h {
            for x in 0..w {
                let p = resized.at(x + left, y + top, c);
                // numpy: uint8 -> float64 * factor -> float32, then (x - mean) / std in float32.
                let v = match info.rescale {
                    Some(f) => (f64::from(p) * f) as f32,
                    None => f32::from(p),
                };
                out[(c * h + y) * w + x] = if info.normalize.is_some() { (v - mean) / std } else { v };
            }
        }
    }
    Ok(out)
}

/// A loaded image version's preparation: its settings and the model's input.
pub struct ImagePipeline {
    info: ImageInfo,
}

impl ImagePipeline {
    pub fn for_version(signature: &Signature, labels: &[String]) -> Result<ImagePipeline> {
        let mut info = signature
            .image
            .clone()
            .ok_or_else(|| Error::NotServable("an image task needs a bundle with preprocessor_config.json".into()))?;
        if Filter::parse(&info.resample).is_none() {
            return Err(Error::NotServable(format!("resampling filter '{}' is not one zoo applies", info.resample)));
        }
        if !labels.is_empty() {
            info.labels = labels.to_vec();
        }
        Ok(ImagePipeline { info })
    }

    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// Decode and prepare encoded images into the model's input `[n, 3, h, w]`,
    /// within the request's budgets (decoded pixels, prepared bytes) and by `deadline`.
    pub fn encode(&self, images: &[bytes::Bytes], deadline: std::time::Instant) -> Result<Tensors> {
        let (h, w) = (self.info.height as usize, self.info.width as usize);
        let per_image = (3 * h * w * 4) as u64;
        if per_image.saturating_mul(images.len() as u64) > MAX_PREPARED_BYTES {
            return Err(Error::InvalidInput(format!(
                "{} images of {w}x{h} take more than {} MiB prepared; send at most {} per request",
                images.len(),
                MAX_PREPARED_BYTES >> 20,
                MAX_PREPARED_BYTES / per_image
            )));
        }
        let mut data = Vec::new();
        let mut pixels = 0u64;
        for (i, bytes) in images.iter().enumerate() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "the images were not prepared in time ({i} of {} done)",
                    images.len()
                )));
            }
            let prepared = decode(bytes)
                .and_then(|img| {
                    pixels += u64::from(img.width) * u64::from(img.height);
                    if pixels > MAX_REQUEST_PIXELS {
                        return Err(Error::InvalidInput(format!(
                            "the images hold more than {} megapixels together; send fewer per request",
                            MAX_REQUEST_PIXELS / 1_000_000
                        )));
                    }
                    prepare(&img, &self.info)
                })
                .map_err(|e| match e {
                    Error::InvalidInput(m) if images.len() > 1 => Error::InvalidInput(format!("image {i}: {m}")),
                    other => other,
                })?;
            data.extend_from_slice(&prepared);
        }
        let array = Array4::from_shape_vec((images.len(), 3, h, w), data).map_err(Error::internal)?;
        Ok(vec![(self.info.input.clone(), Tensor::F32(array.into_dyn()))])
    }

    /// A mid-grey image of the model's size, to warm the model up with.
    pub fn warmup_inputs(&self) -> Tensors {
        let (h, w) = (self.info.height as usize, self.info.width as usize);
        vec![(self.info.input.clone(), Tensor::F32(ArrayD::zeros(ndarray::IxDyn(&[1, 3, h, w]))))]
    }
}

/// The images of a JSON request to an image version: `{"inputs": "<base64>"}` or
/// a list of those (a `data:image/...;base64,` prefix is allowed; a URL is not
/// fetched).
pub fn request_images(signature: &Signature, limits: &EffectiveServing, req: &RawPredict<'_>) -> Result<Inputs> {
    refuse_mlflow_formats(signature, req)?;
    let raw = req.inputs.ok_or_else(|| Error::InvalidInput("the request needs \"inputs\"".into()))?;
    let max_items = limits.max_items as usize;
    let (encoded, many) = super::text::parse_texts(raw, max_items, usize::MAX).map_err(|e| match e {
        Error::InvalidInput(m) if m.contains("must be a string") => Error::InvalidInput(
            "\"inputs\" must be a base64 image (JPEG or PNG) or a list of them for an image model".into(),
        ),
        other => other,
    })?;
    let images = encoded.iter().enumerate().map(|(i, s)| from_base64(s, i)).collect::<Result<Vec<_>>>()?;
    Ok(Inputs::Images { images, many })
}

/// One base64 image of a JSON request (standard or URL-safe alphabet, padded or not).
pub fn from_base64(s: &str, i: usize) -> Result<bytes::Bytes> {
    let s = s.trim();
    if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:") {
        return Err(Error::InvalidInput(format!(
            "image {i} is a URL; zoo never fetches URLs: send the image's bytes (base64 in JSON, or the file as the body)"
        )));
    }
    let payload = match s.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,").map(|(_, p)| p).ok_or_else(|| {
            Error::InvalidInput(format!("image {i} is a data: URL without ;base64, before its bytes"))
        })?,
        None => s,
    };
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(payload).ok())
        .map(bytes::Bytes::from)
        .ok_or_else(|| Error::InvalidInput(format!("image {i} is not base64 (a JPEG or PNG's bytes in base64)")))
}

/// The images of a v2 request: one BYTES input of 1 to `max_items` base64 images.
pub fn v2_images(given: Tensors, limits: &EffectiveServing) -> Result<Inputs> {
    let bad = |m: String| Error::InvalidInput(m);
    let max_items = limits.max_items as usize;
    let [(name, t)] = given.as_slice() else {
        return Err(bad("an image model takes one input: image (BYTES, base64 JPEG or PNG)".into()));
    };
    let Tensor::Str(a) = t else {
        return Err(bad(format!("input '{name}' must be BYTES (base64 images)")));
    };
    if a.is_empty() || a.len() > max_items {
        return Err(bad(format!("send 1 to {max_items} images, got {}", a.len())));
    }
    let images = a.iter().enumerate().map(|(i, s)| from_base64(s, i)).collect::<Result<Vec<_>>>()?;
    Ok(Inputs::Images { images, many: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> Rgb {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 255 / width.max(1)) as u8, (y * 7 % 256) as u8, ((x ^ y) % 256) as u8]);
            }
        }
        Rgb { width, height, pixels }
    }

    #[test]
    fn a_resize_to_the_same_size_keeps_the_pixels_and_a_flat_image_stays_flat() {
        let img = gradient(13, 7);
        assert_eq!(resize(&img, 13, 7, Filter::Bilinear), img);
        let flat = Rgb { width: 9, height: 5, pixels: [10u8, 200, 77].repeat(45) };
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(4, 3), (20, 11), (9, 2)] {
                let r = resize(&flat, w, h, f);
                assert_eq!((r.width, r.height), (w, h));
                assert!(r.pixels.chunks(3).all(|p| p == [10, 200, 77]), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn resizing_a_row_gives_pillows_pixels() {
        // From Pillow 13: Image.frombytes("L", (4, 1), bytes([0, 100, 200, 50])).resize(size, filter).
        let grey =
            |v: &[u8]| Rgb { width: v.len() as u32, height: 1, pixels: v.iter().flat_map(|p| [*p; 3]).collect() };
        let row = |img: Rgb| img.pixels.chunks(3).map(|p| p[0]).collect::<Vec<u8>>();
        let img = grey(&[0, 100, 200, 50]);
        assert_eq!(row(resize(&img, 2, 1, Filter::Bilinear)), [71, 121]);
        assert_eq!(row(resize(&img, 7, 1, Filter::Bicubic)), [0, 26, 92, 166, 196, 99, 38]);
        assert_eq!(row(resize(&img, 3, 1, Filter::Nearest)), [0, 200, 50]);
        let img = grey(&[0, 100, 200, 50, 255]);
        assert_eq!(row(resize(&img, 2, 1, Filter::Bicubic)), [83, 160]);
        assert_eq!(row(resize(&img, 3, 1, Filter::Nearest)), [0, 200, 255]);
    }

    #[test]
    fn nearest_picks_the_samples_pillow_picks() {
        // Pillow 13, a 640 (or 256) pixel row whose pixels hold their own index
        // (R + 256 G), resized to 224 with NEAREST: the indices picked at some
        // places where (x + 0.5) * scale, rounded once, would pick the next one,
        // and the sum of all 224 picked.
        for (n, places, sum) in [
            (640u32, [(17, 49), (24, 69), (101, 289), (108, 309), (115, 329)], 71_564u32),
            (256, [(3, 3), (10, 11), (17, 19), (24, 27), (80, 91)], 28_551),
        ] {
            let pixels = (0..n).flat_map(|i| [(i % 256) as u8, (i / 256) as u8, 0]).collect();
            let r = resize(&Rgb { width: n, height: 1, pixels }, 224, 1, Filter::Nearest);
            let picked: Vec<u32> = r.pixels.chunks(3).map(|p| u32::from(p[0]) + 256 * u32::from(p[1])).collect();
            for (x, i) in places {
                assert_eq!(picked[x], i, "{n} -> 224, column {x}");
            }
            assert_eq!(picked.iter().sum::<u32>(), sum, "{n} -> 224");
        }
    }

    #[test]
    fn a_tall_image_is_resized_vertically_first_as_pillow_13_does() {
        // Image.frombytes("L", (3, 9), bytes((i * 73 + 11) % 256 for i in range(27))).resize((2, 3), BILINEAR)
        // -> [124, 96, 136, 120, 84, 136]; horizontally first it would be [124, 96, 135, 121, 84, 136].
        let values: Vec<u8> = (0..27u32).map(|i| ((i * 73 + 11) % 256) as u8).collect();
        let img = Rgb { width: 3, height: 9, pixels: values.iter().flat_map(|p| [*p; 3]).collect() };
        let r = resize(&img, 2, 3, Filter::Bilinear);
        assert_eq!(r.pixels.chunks(3).map(|p| p[0]).collect::<Vec<u8>>(), [124, 96, 136, 120, 84, 136]);
    }

    #[test]
    fn the_shorter_edge_is_resized_and_the_longer_kept_in_proportion() {
        let img = gradient(640, 480);
        assert_eq!(resized_size(&img, ImageResize::ShortestEdge(256)).unwrap(), (341, 256));
        assert_eq!(resized_size(&gradient(480, 640), ImageResize::ShortestEdge(256)).unwrap(), (256, 341));
        assert_eq!(resized_size(&img, ImageResize::Exact { height: 8, width: 9 }).unwrap(), (9, 8));
        // A sliver would be resized past the largest side: refused, not squeezed.
        let e = resized_size(&gradient(10, 2000), ImageResize::ShortestEdge(256)).unwrap_err().to_string();
        assert!(e.contains("51200"), "{e}");
    }

    #[test]
    fn images_are_rescaled_normalised_and_laid_out_channels_first() {
        let img = Rgb { width: 2, height: 1, pixels: vec![0, 51, 255, 255, 102, 0] };
        let info = ImageInfo {
            input: "pixel_values".into(),
            height: 1,
            width: 2,
            resize: None,
            resample: "bilinear".into(),
            crop: None,
            rescale: Some(1.0 / 255.0),
            normalize: Some(zoo_api::ImageNormalize { mean: vec![0.5; 3], std: vec![0.5; 3] }),
            labels: vec![],
        };
        let out = prepare(&img, &info).unwrap();
        // Channels first: R of both pixels, then G, then B.
        let want = [-1.0, 1.0, -0.6, -0.2, 1.0, -1.0];
        assert!(out.iter().zip(want).all(|(o, w)| (o - w).abs() < 1e-6), "{out:?}");
        let small = Rgb { width: 1, height: 1, pixels: vec![0, 0, 0] };
        assert!(prepare(&small, &info).unwrap_err().to_string().contains("takes 2x1 images"));
    }

    #[test]
    fn only_jpeg_and_png_are_decoded_and_urls_are_never_fetched() {
        let mut png = Vec::new();
        image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6])
            .unwrap()
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png).unwrap(), Rgb { width: 2, height: 1, pixels: vec![1, 2, 3, 4, 5, 6] });
        assert!(decode(b"GIF89a....").unwrap_err().to_string().contains("JPEG or a PNG"));
        assert!(decode(&png[..20]).unwrap_err().to_string().contains("cannot be decoded"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        assert_eq!(from_base64(&b64, 0).unwrap(), png);
        assert_eq!(from_base64(&format!("data:image/png;base64,{b64}"), 0).unwrap(), png);
        assert!(from_base64("https://example.com/cat.jpg", 0).unwrap_err().to_string().contains("never fetches"));
        assert!(from_base64("not base64!", 3).unwrap_err().to_string().contains("image 3"));
    }

    #[test]
    fn an_image_past_the_size_limit_is_refused_before_its_pixels_are_allocated() {
        // A PNG header claiming 20000 x 20000 pixels, with no pixel data.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&20_000u32.to_be_bytes());
        ihdr.extend_from_slice(&20_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        let e = decode(&png).unwrap_err().to_string();
        assert!(e.contains("larger than zoo decodes"), "{e}");
    }

    #[test]
    fn sixteen_bit_pngs_are_read_as_pillow_reads_them() {
        let mut png = Vec::new();
        let rgb16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![0x1234u16, 0xABCD, 0x00FF]).unwrap();
        image::DynamicImage::ImageRgb16(rgb16).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        // Pillow: the high byte of each sample.
        assert_eq!(decode(&png).unwrap().pixels, vec![0x12, 0xAB, 0x00]);
        let mut png = Vec::new();
        let grey16 = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![100u16, 1000]).unwrap();
        image::DynamicImage::ImageLuma16(grey16).write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        // Pillow's I;16 to RGB: clipped to 255.
        assert_eq!(decode(&png).unwrap().pixels, vec![100, 100, 100, 255, 255, 255]);
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for b in data {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
