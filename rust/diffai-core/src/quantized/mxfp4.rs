//! MXFP4 (OCP microscaling, gpt-oss checkpoints): `blocks` uint8 [..., G, 16], two E2M1 codes a
//! byte, low nibble first; `scales` uint8 [..., G], one E8M0 exponent per 32 values:
//! `value = E2M1[code] * 2^(scale - 127)` (transformers `convert_moe_packed_tensors`, in f32).
//! The logical shape is [..., G * 32], the checkpoint's own layout.

use super::{expect_shape, invalid, Dequantize, Packed};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

pub struct Mxfp4<'a> {
    blocks: Packed<'a>,
    scales: Packed<'a>,
    /// `2^(e - 127)` for each exponent byte (f32: 2^128 is infinite, as in the reference).
    pow2: Vec<f32>,
    rows: usize,
    groups: usize,
}

impl<'a> Mxfp4<'a> {
    pub fn new(blocks: &'a Tensor, scales: &'a Tensor) -> Result<Self> {
        let shape = &blocks.shape;
        if shape.len() < 2 || shape[shape.len() - 1] != 16 {
            return Err(invalid(
                blocks,
                format!("has shape {shape:?}, expected [..., G, 16]"),
            ));
        }
        expect_shape(scales, &shape[..shape.len() - 1])?;
        let groups = shape[shape.len() - 2];
        Ok(Mxfp4 {
            blocks: Packed::of(blocks, &[DType::U8])?,
            scales: Packed::of(scales, &[DType::U8])?,
            pow2: (0..256).map(|e| 2f64.powi(e - 127) as f32).collect(),
            rows: shape[..shape.len() - 2].iter().product(),
            groups,
        })
    }
}

impl Dequantize for Mxfp4<'_> {
    fn matrix(&self) -> (usize, usize) {
        (self.rows, self.groups * 32)
    }

    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        let g0 = r0 * self.groups;
        let blocks = &self.blocks.bytes()[g0 * 16..];
        let scales = &self.scales.bytes()[g0..];
        for ((o, b), &e) in out
            .chunks_exact_mut(32)
            .zip(blocks.chunks_exact(16))
            .zip(scales)
        {
            let s = self.pow2[e as usize];
            for (pair, &byte) in o.chunks_exact_mut(2).zip(b) {
                pair[0] = E2M1[(byte & 15) as usize] * s;
                pair[1] = E2M1[(byte >> 4) as usize] * s;
            }
        }
    }

    fn intact(&self) -> Result<()> {
        self.blocks.intact()?;
        self.scales.intact()
    }
}
