//! float8 weights times a scale per block of `block_rows x block_cols` elements: DeepSeek-V3
//! `weight_scale_inv` (128 x 128, `weight_dequant`), compressed-tensors `weight_scale` per tensor
//! (one block), channel (1 x width) or group (1 x group). `value = f32(w) * scale` in f32, as
//! both references compute with f32 scales (exact for f16/bf16 scales).

use super::{expect_shape, invalid, small, Dequantize, Packed};
use crate::dtype::DType;
use crate::error::Result;
use crate::stats;
use crate::tensor::{Storage, Tensor};

pub struct Fp8Scaled<'a> {
    codes: Packed<'a>,
    /// The value of each of the 256 float8 codes.
    table: Vec<f32>,
    scale: Vec<f32>,
    block: (usize, usize),
    rows: usize,
    width: usize,
}

impl<'a> Fp8Scaled<'a> {
    pub fn new(
        weight: &'a Tensor,
        scale: &'a Tensor,
        block_rows: usize,
        block_cols: usize,
    ) -> Result<Self> {
        let codes = Packed::of(weight, &[DType::F8E4M3, DType::F8E5M2])?;
        let [rows, width] = weight.shape[..] else {
            return Err(invalid(weight, "is not 2-D".into()));
        };
        if block_rows == 0 || block_cols == 0 {
            return Err(invalid(scale, "has an empty block".into()));
        }
        let grid = [rows.div_ceil(block_rows), width.div_ceil(block_cols)];
        let scale_values = small(scale)?;
        if scale_values.len() != grid[0] * grid[1] {
            expect_shape(scale, &grid)?;
        }
        Ok(Fp8Scaled {
            codes,
            table: code_values(weight.dtype)?,
            scale: scale_values,
            block: (block_rows, block_cols),
            rows,
            width,
        })
    }
}

/// The 256 values of a float8 dtype, decoded by the `stats` kernels' own conversion.
fn code_values(dtype: DType) -> Result<Vec<f32>> {
    let all = Tensor::contiguous(
        "float8 codes".into(),
        dtype,
        vec![256],
        Storage::from_vec((0..=255).collect()),
    );
    Ok(stats::to_f64(&all, 0, None)?
        .into_iter()
        .map(|v| v as f32)
        .collect())
}

impl Dequantize for Fp8Scaled<'_> {
    fn matrix(&self) -> (usize, usize) {
        (self.rows, self.width)
    }

    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        let (br, bc) = self.block;
        let blocks_per_row = self.width.div_ceil(bc);
        let bytes = &self.codes.bytes()[r0 * self.width..];
        for (i, (row, codes)) in out
            .chunks_exact_mut(self.width.max(1))
            .zip(bytes.chunks_exact(self.width.max(1)))
            .enumerate()
        {
            let scales = &self.scale[(r0 + i) / br * blocks_per_row..];
            for ((o, c), &s) in row.chunks_mut(bc).zip(codes.chunks(bc)).zip(scales) {
                for (o, &c) in o.iter_mut().zip(c) {
                    *o = self.table[c as usize] * s;
                }
            }
        }
    }

    fn intact(&self) -> Result<()> {
        self.codes.intact()
    }
}
