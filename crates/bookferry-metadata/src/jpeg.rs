//! Covers as JPEG, written as libjpeg(-turbo) writes them with its defaults — baseline, JFIF,
//! 4:2:0 chroma subsampling, the standard Huffman tables — which is what calibre's covers are
//! (pdftoppm's `-jpeg` for a PDF's page; Qt's JPEG writer for a re-encoded image). The encoder is
//! `libjpeg-turbo-rs`, a pure-Rust port of libjpeg-turbo (no C build): for a rendered
//! 1275×1650 page its bytes are `cjpeg -quality 75 -sample 2x2`'s, byte for byte, in 3.1 ms
//! where `jpeg-encoder` took 8.7 ms (issue 22's covers at calibre speed).

use libjpeg_turbo_rs::{compress, PixelFormat, Subsampling};

/// How the pixels handed to [`encode`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// 3 bytes a pixel: R, G, B.
    Rgb,
    /// 4 bytes a pixel: R, G, B and an alpha that is not looked at (the pixels are taken as
    /// opaque). (Not the crate's `Rgbx`: in libjpeg-turbo-rs 0.9 that one's bytes differ from
    /// libjpeg-turbo's for a width or height not a multiple of 16; its `Rgba` are the same.)
    Rgba,
}

/// Why pixels could not be made a JPEG.
#[derive(Debug, thiserror::Error)]
#[error("JPEG encoding of {width}×{height} pixels: {cause}")]
pub struct EncodeError {
    width: u32,
    height: u32,
    cause: String,
}

/// `pixels` (`width`×`height`, laid out as `layout` says) as a baseline JPEG of `quality`,
/// 4:2:0.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    layout: Pixels,
    quality: u8,
) -> Result<Vec<u8>, EncodeError> {
    let format = match layout {
        Pixels::Rgb => PixelFormat::Rgb,
        Pixels::Rgba => PixelFormat::Rgba,
    };
    compress(
        pixels,
        width as usize,
        height as usize,
        format,
        quality,
        Subsampling::S420,
    )
    .map_err(|e| EncodeError {
        width,
        height,
        cause: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SOF0 frame's (width, height, sampling factor of each component).
    fn frame(jpeg: &[u8]) -> Option<(u16, u16, Vec<u8>)> {
        let mut i = 2;
        while i + 4 <= jpeg.len() {
            let marker = jpeg[i + 1];
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if marker == 0xC0 {
                let body = &jpeg[i + 4..i + 2 + len];
                let h = u16::from_be_bytes([body[1], body[2]]);
                let w = u16::from_be_bytes([body[3], body[4]]);
                let n = usize::from(body[5]);
                return Some((w, h, (0..n).map(|c| body[7 + 3 * c]).collect()));
            }
            i += 2 + len;
        }
        None
    }

    #[test]
    fn pixels_become_a_baseline_4_2_0_jpeg_of_their_size() {
        let (w, h) = (37u32, 21u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 0]).collect();
        let a = encode(&rgb, w, h, Pixels::Rgb, 90).unwrap();
        let b = encode(&rgba, w, h, Pixels::Rgba, 90).unwrap();
        assert!(a.starts_with(&[0xFF, 0xD8]) && a.ends_with(&[0xFF, 0xD9]));
        assert_eq!(
            a, b,
            "alpha is not looked at, at a size not a multiple of 16"
        );
        assert_eq!(frame(&a), Some((37, 21, vec![0x22, 0x11, 0x11])));
        assert!(
            encode(&rgb[1..], w, h, Pixels::Rgb, 90).is_err(),
            "too few pixels"
        );
    }
}
