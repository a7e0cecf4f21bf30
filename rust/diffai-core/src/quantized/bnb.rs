//! bitsandbytes, as its own dequantizers compute (in f32):
//!
//! - 4-bit NF4 / FP4 (`dequantize_4bit`): `weight` uint8 with two codes a byte, high nibble
//!   first; `value = quant_map[code] * absmax[i / blocksize]`. With double quantization the
//!   absmax are uint8 codes themselves: `nested_quant_map[code] * nested_absmax[j / nested
//!   blocksize] + nested_offset` (`dequantize_blockwise`, then the offset).
//! - int8 (`int8_vectorwise_dequant`): `weight` int8 [rows, width] and `SCB` per row:
//!   `value = q * SCB * 7.874015718698502e-3` (its reciprocal of 127, as an f32).

use super::{expect_shape, invalid, small, Dequantize, Packed};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// The absmax of a double-quantized 4-bit weight: codes, their map and block scales, offset.
pub struct NestedAbsmax<'a> {
    pub quant_map: &'a Tensor,
    pub absmax: &'a Tensor,
    pub blocksize: usize,
    pub offset: f32,
}

pub struct Bnb4<'a> {
    codes: Packed<'a>,
    quant_map: [f32; 16],
    absmax: Vec<f32>,
    blocksize: usize,
    rows: usize,
    width: usize,
}

impl<'a> Bnb4<'a> {
    /// `shape` and `blocksize` from the weight's `quant_state` JSON.
    pub fn new(
        weight: &'a Tensor,
        absmax: &'a Tensor,
        quant_map: &'a Tensor,
        nested: Option<NestedAbsmax<'a>>,
        shape: &[usize],
        blocksize: usize,
    ) -> Result<Self> {
        let codes = Packed::of(weight, &[DType::U8])?;
        let numel: usize = shape.iter().product();
        let width = shape.last().copied().unwrap_or(1);
        if codes.bytes().len() * 2 < numel {
            return Err(invalid(
                weight,
                format!(
                    "holds {} bytes for {numel} 4-bit codes",
                    codes.bytes().len()
                ),
            ));
        }
        let map = small(quant_map)?;
        let quant_map: [f32; 16] =
            map.get(..16)
                .and_then(|m| m.try_into().ok())
                .ok_or_else(|| {
                    invalid(
                        quant_map,
                        format!("holds {} values, expected 16", map.len()),
                    )
                })?;
        let absmax_values = match nested {
            None => small(absmax)?,
            Some(n) => {
                let codes = Packed::of(absmax, &[DType::U8])?;
                let map = small(n.quant_map)?;
                let scales = small(n.absmax)?;
                let bs = n.blocksize.max(1);
                if map.len() < 256 || scales.len() * bs < codes.bytes().len() {
                    return Err(invalid(
                        n.absmax,
                        "does not cover the nested absmax codes".into(),
                    ));
                }
                codes
                    .bytes()
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| map[c as usize] * scales[i / bs] + n.offset)
                    .collect()
            }
        };
        if blocksize == 0 || absmax_values.len() * blocksize < numel {
            return Err(invalid(
                absmax,
                format!(
                    "holds {} blocks of {blocksize} for {numel} values",
                    absmax_values.len()
                ),
            ));
        }
        Ok(Bnb4 {
            codes,
            quant_map,
            absmax: absmax_values,
            blocksize,
            rows: numel.checked_div(width).unwrap_or(0),
            width,
        })
    }
}

impl Dequantize for Bnb4<'_> {
    fn matrix(&self) -> (usize, usize) {
        (self.rows, self.width)
    }

    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        let bytes = self.codes.bytes();
        let e0 = r0 * self.width;
        // One absmax block at a time: its scale is a constant of the inner loop; whole bytes
        // (two codes, high nibble first) where the run starts at an even element.
        let mut i = 0;
        while i < out.len() {
            let e = e0 + i;
            let block = e / self.blocksize;
            let end = ((block + 1) * self.blocksize - e0).min(out.len());
            let scale = self.absmax[block];
            let value = |code: u8| self.quant_map[(code & 15) as usize] * scale;
            let mut run = &mut out[i..end];
            let mut byte = e / 2;
            if e % 2 == 1 {
                run[0] = value(bytes[byte]);
                run = &mut run[1..];
                byte += 1;
            }
            let tail_byte = byte + run.len() / 2;
            let mut pairs = run.chunks_exact_mut(2);
            for (pair, &b) in (&mut pairs).zip(&bytes[byte..]) {
                pair[0] = value(b >> 4);
                pair[1] = value(b);
            }
            let last = pairs.into_remainder();
            if let Some(o) = last.first_mut() {
                *o = value(bytes[tail_byte] >> 4);
            }
            i = end;
        }
    }

    fn intact(&self) -> Result<()> {
        self.codes.intact()
    }
}

pub struct BnbInt8<'a> {
    codes: Packed<'a>,
    row_scale: Vec<f32>,
    rows: usize,
    width: usize,
}

impl<'a> BnbInt8<'a> {
    pub fn new(weight: &'a Tensor, scb: &'a Tensor) -> Result<Self> {
        let codes = Packed::of(weight, &[DType::I8])?;
        let [rows, width] = weight.shape[..] else {
            return Err(invalid(weight, "is not 2-D".into()));
        };
        expect_shape(scb, &[rows])?;
        Ok(BnbInt8 {
            codes,
            row_scale: small(scb)?,
            rows,
            width,
        })
    }
}

/// bitsandbytes' reciprocal of 127 (`7.874015718698502e-3`), as the f32 its kernel multiplies by.
const INV_127: f32 = 7.874_016e-3;

impl Dequantize for BnbInt8<'_> {
    fn matrix(&self) -> (usize, usize) {
        (self.rows, self.width)
    }

    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        let bytes = &self.codes.bytes()[r0 * self.width..];
        for ((row, codes), &scb) in out
            .chunks_exact_mut(self.width.max(1))
            .zip(bytes.chunks_exact(self.width.max(1)))
            .zip(&self.row_scale[r0..])
        {
            for (o, &q) in row.iter_mut().zip(codes) {
                *o = q as i8 as f32 * scb * INV_127;
            }
        }
    }

    fn intact(&self) -> Result<()> {
        self.codes.intact()
    }
}
