//! Element types of every supported format, with the names diffai prints.
//!
//! Most types store one value per element. Block-quantized types (GGUF's ggml types) store
//! `BlockCodec::elems` values in `BlockCodec::bytes` bytes and are decoded a block at a time.

use std::fmt;

/// A block-quantized encoding: every `elems` values are stored together in `bytes` bytes, and
/// `decode` turns whole blocks into their f32 values (`out.len()` is a multiple of `elems`,
/// `blocks` holds exactly `out.len() / elems` blocks). New formats (GPTQ, AWQ, ...) plug in a
/// codec; the statistics kernels read it through an L1-sized f32 buffer.
pub struct BlockCodec {
    pub elems: usize,
    pub bytes: usize,
    pub decode: fn(blocks: &[u8], out: &mut [f32]),
}

#[allow(non_camel_case_types)] // the ggml names (Q4_0, TQ1_0) read better than Q40/Tq10
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3,
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    // ggml block-quantized types (GGUF); codecs in `crate::gguf`.
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ1_S,
    IQ1_M,
    IQ2_XXS,
    IQ2_XS,
    IQ2_S,
    IQ3_XXS,
    IQ3_S,
    IQ4_NL,
    IQ4_XS,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
}

impl DType {
    /// Every dtype, in declaration order (the bindings index names by `dtype as usize`).
    pub const ALL: [DType; 39] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U64,
        DType::U32,
        DType::U16,
        DType::U8,
        DType::Bool,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::IQ1_S,
        DType::IQ1_M,
        DType::IQ2_XXS,
        DType::IQ2_XS,
        DType::IQ2_S,
        DType::IQ3_XXS,
        DType::IQ3_S,
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::TQ1_0,
        DType::TQ2_0,
        DType::MXFP4,
        DType::NVFP4,
    ];

    /// Bytes per element; for a block-quantized type, bytes per block (see `codec`).
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => 1,
            blocked => blocked.codec().map_or(0, |c| c.bytes),
        }
    }

    /// Values per storage unit: 1, or the block length of a block-quantized type.
    pub fn block_elems(self) -> usize {
        self.codec().map_or(1, |c| c.elems)
    }

    /// Bytes holding `numel` values, `None` when that overflows or `numel` is not a whole
    /// number of blocks.
    pub fn bytes_for(self, numel: usize) -> Option<usize> {
        let elems = self.block_elems();
        numel
            .is_multiple_of(elems)
            .then(|| (numel / elems).checked_mul(self.size()))?
    }

    /// The codec of a block-quantized type; `None` for one-value-per-element types.
    pub fn codec(self) -> Option<&'static BlockCodec> {
        crate::gguf::codec(self)
    }

    /// The short name used in every output (`f32`, `bf16`, `f8_e4m3`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8_e4m3",
            DType::F8E5M2 => "f8_e5m2",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2_K => "q2_k",
            DType::Q3_K => "q3_k",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
            DType::Q8_K => "q8_k",
            DType::IQ1_S => "iq1_s",
            DType::IQ1_M => "iq1_m",
            DType::IQ2_XXS => "iq2_xxs",
            DType::IQ2_XS => "iq2_xs",
            DType::IQ2_S => "iq2_s",
            DType::IQ3_XXS => "iq3_xxs",
            DType::IQ3_S => "iq3_s",
            DType::IQ4_NL => "iq4_nl",
            DType::IQ4_XS => "iq4_xs",
            DType::TQ1_0 => "tq1_0",
            DType::TQ2_0 => "tq2_0",
            DType::MXFP4 => "mxfp4",
            DType::NVFP4 => "nvfp4",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether the values are real numbers (block-quantized types decode to floats).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2
        ) || self.codec().is_some()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bindings name dtypes by `dtype as usize` into a table built from `ALL`.
    #[test]
    fn all_is_in_declaration_order_with_unique_names() {
        for (i, d) in DType::ALL.into_iter().enumerate() {
            assert_eq!(d as usize, i, "{d}");
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
    }

    #[test]
    fn block_types_size_whole_blocks_only() {
        assert_eq!(DType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(DType::Q4_K.bytes_for(100), None);
        assert_eq!(DType::F32.bytes_for(3), Some(12));
        assert_eq!(DType::F32.bytes_for(usize::MAX), None);
        assert!(DType::MXFP4.is_float() && !DType::I8.is_float());
    }
}
