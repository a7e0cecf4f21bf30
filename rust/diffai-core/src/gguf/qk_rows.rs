//! llama.cpp's converter (`LlamaModel.permute`) stores the rows of attn_q/attn_k of each head
//! read as [2, head_dim/2] swapped to [head_dim/2, 2]; the Hugging Face row order is found again
//! through a row order handed to `stats::pair_stats_reordered`, not by copying the tensor.

use crate::error::{Error, Result};

/// For each Hugging Face row of a q/k weight of `rows` rows and `heads` heads, the GGUF row
/// holding it: within a head of `2h` rows, row `j * h + i` is stored at `2 * i + j`.
pub fn llama_qk_rows(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::Invalid(format!(
            "a q/k row permutation needs 2 x heads ({heads}) to divide the {rows} rows"
        )));
    }
    let half = rows / heads / 2;
    Ok((0..rows)
        .map(|r| {
            let (head, local) = (r / (2 * half), r % (2 * half));
            head * 2 * half + 2 * (local % half) + local / half
        })
        .collect())
}
