//! Sentence encoders (BERT family, safetensors) on candle, with the `tokenizers` crate.
//!
//! A version directory holds `config.json`, `model.safetensors` and `tokenizer.json`, and
//! optionally the sentence-transformers files that say how to pool (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`). The model takes one BYTES input
//! `text` (`[-1]`, UTF-8) and returns `embedding` (`FP32 [-1, hidden]`). An element may hold
//! token ids instead of text ([`token_ids_element`]): the pre-tokenized input of OpenAI's and
//! TEI's embeddings APIs, ids of the model's own vocabulary, used as given (no special tokens
//! added, so ids from `tokenizer.encode(text)` embed exactly as the text does).
//!
//! Padding is the backend's business, never the tokenizer's: a `tokenizer.json` that turns on
//! fixed-length padding (all-MiniLM-L6-v2's does) has it switched off, so padding never
//! reaches attention or pooling. Within a batch, texts are sorted by length and run in
//! sub-batches of similar lengths, each padded only to its own longest text, so short texts
//! do not pay for long ones; pooling averages over real tokens only.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Tokenizer, TruncationParams};

use crate::backends::onnx::{OnnxModel, OnnxOptions};
use crate::config::{CandleConfig, Execution};
use crate::datatype::DataType;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::signature::{Signature, TensorSpec};
use crate::tensor::{Tensor, TensorData};

pub const INPUT: &str = "text";
pub const OUTPUT: &str = "embedding";

/// First byte of a `text` element holding token ids; it never starts UTF-8 text.
pub const TOKEN_IDS: u8 = 0xFF;

/// A `text` element holding token ids: [`TOKEN_IDS`], then each id as u32 little-endian.
pub fn token_ids_element(ids: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 * ids.len());
    out.push(TOKEN_IDS);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// One element of the `text` input.
enum Piece<'a> {
    Text(&'a str),
    Ids(Vec<u32>),
}

/// Reads element `i`; the error says what is wrong with it.
fn piece<'a>(input: &str, i: usize, b: &'a [u8]) -> Result<Piece<'a>> {
    match b.split_first() {
        Some((&TOKEN_IDS, ids)) => {
            if ids.is_empty() || ids.len() % 4 != 0 {
                return Err(Error::InvalidInput(format!(
                    "input '{input}': element {i} is a token array of {} bytes; it needs at least one u32 id",
                    ids.len()
                )));
            }
            Ok(Piece::Ids(
                ids.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ))
        }
        _ => std::str::from_utf8(b).map(Piece::Text).map_err(|_| {
            Error::InvalidInput(format!("input '{input}': text {i} is not valid UTF-8"))
        }),
    }
}

/// Whether a directory holds a candle sentence encoder.
pub fn detect(dir: &Path) -> bool {
    dir.join("model.safetensors").is_file()
        && dir.join("config.json").is_file()
        && dir.join("tokenizer.json").is_file()
}

/// How token embeddings become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// Tokenization shared by the request path (token counts for batching budgets, usage and
/// truncation reports) and the model instances.
pub struct TextPrep {
    tokenizer: Tokenizer,
    pub max_seq_len: usize,
    pub truncate: bool,
    pub max_client_batch_size: usize,
}

/// Token count of one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    /// Tokens the model sees (special tokens included, after truncation).
    pub tokens: usize,
    pub truncated: bool,
}

impl TextPrep {
    fn load(
        dir: &Path,
        cfg: &CandleConfig,
        max_positions: usize,
    ) -> std::result::Result<TextPrep, String> {
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| format!("tokenizer.json: {e}"))?;
        // Sentence-transformers' max_seq_length, unless config.toml says otherwise.
        let st_max = std::fs::read(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map(|n| n as usize);
        let max_seq_len = cfg
            .max_seq_len
            .or(st_max)
            .unwrap_or(max_positions)
            .min(max_positions);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer.json: {e}"))?;
        Ok(TextPrep {
            tokenizer,
            max_seq_len,
            truncate: cfg.truncate,
            max_client_batch_size: cfg.max_client_batch_size,
        })
    }

    /// Checks the texts of a request and counts their tokens.
    pub fn count(&self, input: &str, texts: &[Vec<u8>]) -> Result<Vec<TokenCount>> {
        if texts.is_empty() {
            return Err(Error::InvalidInput(format!(
                "input '{input}' holds no text"
            )));
        }
        if texts.len() > self.max_client_batch_size {
            return Err(Error::InvalidInput(format!(
                "input '{input}' holds {} texts; at most {} per request (candle.max_client_batch_size)",
                texts.len(),
                self.max_client_batch_size
            )));
        }
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let n = match piece(input, i, t)? {
                    Piece::Text("") => {
                        return Err(Error::InvalidInput(format!("input '{input}': text {i} is empty")));
                    }
                    Piece::Text(text) => self
                        .tokenizer
                        .encode(text, true)
                        .map_err(|e| Error::InvalidInput(format!("input '{input}': text {i} cannot be tokenized: {e}")))?
                        .len(),
                    Piece::Ids(ids) => {
                        if let Some((at, id, vocab)) = self.outside_vocabulary(&ids) {
                            return Err(Error::InvalidInput(format!(
                                "input '{input}': token {at} of token array {i} is id {id}, outside the model's vocabulary of {vocab} ids"
                            )));
                        }
                        ids.len()
                    }
                };
                if n > self.max_seq_len && !self.truncate {
                    return Err(Error::InvalidInput(format!(
                        "input '{input}': text {i} is {n} tokens long, more than the model's {} (truncation is off; shorten it or set candle.truncate = true)",
                        self.max_seq_len
                    )));
                }
                Ok(TokenCount {
                    tokens: n.min(self.max_seq_len),
                    truncated: n > self.max_seq_len,
                })
            })
            .collect()
    }

    /// Token ids of each piece, truncated to `max_seq_len`: texts by the tokenizer (keeping
    /// the final `[SEP]`), token arrays by keeping their first ids.
    fn encode(&self, pieces: Vec<Piece<'_>>) -> std::result::Result<Vec<Vec<u32>>, String> {
        let texts: Vec<&str> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(*t),
                Piece::Ids(_) => None,
            })
            .collect();
        let mut encoded = if texts.is_empty() {
            Vec::new()
        } else {
            let mut tok = self.tokenizer.clone();
            tok.with_truncation(Some(TruncationParams {
                max_length: self.max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| e.to_string())?;
            tok.encode_batch(texts, true).map_err(|e| e.to_string())?
        }
        .into_iter()
        .map(|e| e.get_ids().to_vec());
        pieces
            .into_iter()
            .map(|p| match p {
                Piece::Text(_) => Ok(encoded.next().expect("one encoding per text")),
                Piece::Ids(mut ids) => match self.outside_vocabulary(&ids) {
                    // Checked on the request path already (`count`); a run reached
                    // otherwise must not index past the embedding table either.
                    Some((_, id, vocab)) => Err(format!(
                        "token id {id} is outside the vocabulary of {vocab} ids"
                    )),
                    None => {
                        ids.truncate(self.max_seq_len);
                        Ok(ids)
                    }
                },
            })
            .collect()
    }

    /// The first id outside the tokenizer's vocabulary: its position, the id and the
    /// vocabulary's size.
    fn outside_vocabulary(&self, ids: &[u32]) -> Option<(usize, u32, usize)> {
        let vocab = self.tokenizer.get_vocab_size(true);
        let (at, &id) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= vocab)?;
        Some((at, id, vocab))
    }
}

/// What runs the transformer: candle (weights shared by all instances) or an ONNX Runtime
/// session of the same encoder (one per instance), for the `onnxruntime` execution.
enum Engine {
    Candle(Arc<BertModel>),
    Onnx(Box<OnnxModel>),
}

/// One instance of a sentence encoder. Instances of a version share the weights (candle
/// tensors are reference-counted) and the tokenizer.
pub struct SentenceEncoder {
    name: String,
    engine: Engine,
    prep: Arc<TextPrep>,
    pooling: Pooling,
    normalize: bool,
    dim: usize,
    pad_id: u32,
    device: Device,
    signature: Signature,
}

impl SentenceEncoder {
    /// Loads the model in `dir`; with candle, `instances` share one copy of the weights;
    /// with ONNX Runtime each instance is a session of `dir/model.onnx` (`onnx` threads).
    pub fn load(
        name: &str,
        dir: &Path,
        cfg: &CandleConfig,
        instances: usize,
        onnx: &OnnxOptions,
    ) -> Result<Vec<SentenceEncoder>> {
        let err = |message: String| Error::Load {
            model: name.to_owned(),
            message,
        };
        let config: BertConfig = serde_json::from_slice(
            &std::fs::read(dir.join("config.json"))
                .map_err(|e| err(format!("config.json: {e}")))?,
        )
        .map_err(|e| err(format!("config.json is not a BERT config: {e}")))?;
        let device = Device::Cpu;
        // SAFETY: the safetensors file is memory-mapped read-only; inferd never writes a
        // version's files once it is published (versions are immutable).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .map_err(|e| err(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| err(format!("model.safetensors does not fit config.json: {e}")))?;
        let prep = TextPrep::load(dir, cfg, config.max_position_embeddings).map_err(err)?;
        let (pooling, normalize) = pooling(dir);
        let pad_id = config.pad_token_id as u32;
        let signature = Signature {
            inputs: vec![TensorSpec {
                name: INPUT.into(),
                datatype: DataType::Bytes,
                shape: vec![-1],
            }],
            outputs: vec![TensorSpec {
                name: OUTPUT.into(),
                datatype: DataType::Fp32,
                shape: vec![-1, config.hidden_size as i64],
            }],
        };
        let (model, prep) = (Arc::new(model), Arc::new(prep));
        let mut out = Vec::with_capacity(instances.max(1));
        for _ in 0..instances.max(1) {
            let engine = match cfg.execution {
                Execution::Candle => Engine::Candle(Arc::clone(&model)),
                Execution::Onnxruntime => {
                    let file = dir.join("model.onnx");
                    if !file.is_file() {
                        return Err(err(format!(
                            "candle.execution = \"onnxruntime\" needs {}: the encoder as ONNX (inputs input_ids, attention_mask; output last_hidden_state)",
                            file.display()
                        )));
                    }
                    let m = OnnxModel::load(name, &file, onnx)?;
                    let names: Vec<&str> = m
                        .signature()
                        .inputs
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect();
                    if names != ["input_ids", "attention_mask"] {
                        return Err(err(format!(
                            "{} takes inputs {names:?}; expected [\"input_ids\", \"attention_mask\"]",
                            file.display()
                        )));
                    }
                    Engine::Onnx(Box::new(m))
                }
            };
            out.push(SentenceEncoder {
                name: name.to_owned(),
                engine,
                prep: Arc::clone(&prep),
                pooling,
                normalize,
                dim: config.hidden_size,
                pad_id,
                device: device.clone(),
                signature: signature.clone(),
            });
        }
        Ok(out)
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn text_prep(&self) -> Arc<TextPrep> {
        Arc::clone(&self.prep)
    }

    /// Embeddings of `texts`, in order, `dim` floats each.
    pub fn embed(&mut self, texts: &[&str]) -> std::result::Result<Vec<f32>, String> {
        self.embed_pieces(texts.iter().map(|t| Piece::Text(t)).collect())
    }

    fn embed_pieces(&mut self, pieces: Vec<Piece<'_>>) -> std::result::Result<Vec<f32>, String> {
        let n = pieces.len();
        let ids = self.prep.encode(pieces)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![0f32; n * self.dim];
        for chunk in length_chunks(&order, &ids) {
            let pooled = self.forward(chunk, &ids)?;
            for (row, &i) in chunk.iter().enumerate() {
                out[i * self.dim..(i + 1) * self.dim]
                    .copy_from_slice(&pooled[row * self.dim..(row + 1) * self.dim]);
            }
        }
        Ok(out)
    }

    /// Runs one sub-batch (indices into `ids`), padded to its longest text; returns the
    /// pooled (and normalised) embeddings, row-major.
    fn forward(
        &mut self,
        chunk: &[usize],
        ids: &[Vec<u32>],
    ) -> std::result::Result<Vec<f32>, String> {
        let len = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(0);
        let b = chunk.len();
        let mut input = vec![self.pad_id; b * len];
        let mut mask = vec![0u32; b * len];
        for (row, &i) in chunk.iter().enumerate() {
            input[row * len..row * len + ids[i].len()].copy_from_slice(&ids[i]);
            mask[row * len..row * len + ids[i].len()].fill(1);
        }
        match &mut self.engine {
            Engine::Candle(model) => {
                let model = Arc::clone(model);
                self.forward_candle(&model, input, mask, b, len)
                    .map_err(|e| e.to_string())
            }
            Engine::Onnx(session) => {
                let as_i64 = |v: &[u32]| -> Vec<u8> {
                    v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect()
                };
                let shape = vec![b as i64, len as i64];
                let inputs = [
                    Tensor::new(
                        DataType::Int64,
                        shape.clone(),
                        TensorData::Raw(as_i64(&input).into()),
                    )
                    .expect("consistent"),
                    Tensor::new(
                        DataType::Int64,
                        shape,
                        TensorData::Raw(as_i64(&mask).into()),
                    )
                    .expect("consistent"),
                ];
                let out = session.run(&inputs).map_err(|e| e.to_string())?;
                let TensorData::Raw(raw) = out[0].data() else {
                    return Err("the encoder's output is not a float tensor".into());
                };
                let hidden: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                if hidden.len() != b * len * self.dim {
                    return Err(format!(
                        "the encoder returned {} values for a [{b}, {len}, {}] hidden state",
                        hidden.len(),
                        self.dim
                    ));
                }
                Ok(pool(
                    &hidden,
                    &mask,
                    b,
                    len,
                    self.dim,
                    self.pooling,
                    self.normalize,
                ))
            }
        }
    }

    fn forward_candle(
        &self,
        model: &BertModel,
        input: Vec<u32>,
        mask: Vec<u32>,
        b: usize,
        len: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let input = CTensor::from_vec(input, (b, len), &self.device)?;
        let mask = CTensor::from_vec(mask, (b, len), &self.device)?;
        let types = input.zeros_like()?;
        let hidden = model.forward(&input, &types, Some(&mask))?; // [b, len, dim]
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, len, 1]
                let sum = hidden.broadcast_mul(&m)?.sum(1)?; // [b, dim]
                let count = m.sum(1)?.clamp(1e-9, f64::MAX)?; // [b, 1]
                sum.broadcast_div(&count)?
            }
        };
        let pooled = if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norm)?
        } else {
            pooled
        };
        pooled.flatten_all()?.to_vec1::<f32>()
    }
}

/// Pooling of a `[b, len, dim]` hidden state with a `[b, len]` mask, in plain Rust (the
/// ONNX Runtime path; candle does the same with tensor ops).
fn pool(
    hidden: &[f32],
    mask: &[u32],
    b: usize,
    len: usize,
    dim: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; b * dim];
    for row in 0..b {
        let dst = &mut out[row * dim..(row + 1) * dim];
        match pooling {
            Pooling::Cls => dst.copy_from_slice(&hidden[row * len * dim..row * len * dim + dim]),
            Pooling::Mean => {
                let mut n = 0f32;
                for t in 0..len {
                    if mask[row * len + t] == 1 {
                        n += 1.0;
                        let h = &hidden[(row * len + t) * dim..(row * len + t + 1) * dim];
                        dst.iter_mut().zip(h).for_each(|(d, x)| *d += x);
                    }
                }
                dst.iter_mut().for_each(|d| *d /= n.max(1e-9));
            }
        }
        if normalize {
            let norm = dst.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            dst.iter_mut().for_each(|d| *d /= norm);
        }
    }
    out
}

/// Splits length-sorted indices into sub-batches whose padded size stays within a budget
/// and whose lengths are within 1.5× of each other.
fn length_chunks<'a>(order: &'a [usize], ids: &[Vec<u32>]) -> Vec<&'a [usize]> {
    const MAX_PADDED_TOKENS: usize = 8192;
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in 1..=order.len() {
        let at_end = end == order.len();
        let split = at_end || {
            let first = ids[order[start]].len().max(1);
            let next = ids[order[end]].len();
            next * 2 > first * 3 || next * (end - start + 1) > MAX_PADDED_TOKENS
        };
        if split {
            chunks.push(&order[start..end]);
            start = end;
        }
    }
    chunks
}

/// Pooling from the sentence-transformers files: `1_Pooling/config.json` and whether
/// `modules.json` lists a `Normalize` module. Without them: mean pooling, normalised.
fn pooling(dir: &Path) -> (Pooling, bool) {
    let read = |p: &str| {
        std::fs::read(dir.join(p))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let pooling = match read("1_Pooling/config.json") {
        Some(c) if c["pooling_mode_cls_token"].as_bool() == Some(true) => Pooling::Cls,
        _ => Pooling::Mean,
    };
    let normalize = match read("modules.json") {
        Some(m) => m.as_array().is_some_and(|mods| {
            mods.iter()
                .any(|x| x["type"].as_str().is_some_and(|t| t.ends_with("Normalize")))
        }),
        None => true,
    };
    (pooling, normalize)
}

impl Model for SentenceEncoder {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let TensorData::Bytes(items) = inputs[0].data() else {
            return Err(Error::InvalidInput(format!(
                "input '{INPUT}' must be BYTES"
            )));
        };
        let pieces = items
            .iter()
            .enumerate()
            .map(|(i, b)| piece(INPUT, i, b))
            .collect::<Result<Vec<_>>>()?;
        let n = pieces.len();
        let out = self
            .embed_pieces(pieces)
            .map_err(|message| Error::Execution {
                model: self.name.clone(),
                message,
            })?;
        let data = TensorData::Raw(bytemuck::cast_slice(&out).to_vec().into());
        Ok(vec![
            Tensor::new(DataType::Fp32, vec![n as i64, self.dim as i64], data)
                .expect("consistent output"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_elements_hold_text_or_token_ids() {
        let ids = token_ids_element(&[101, 7592, 102]);
        assert_eq!(ids[0], TOKEN_IDS);
        assert!(
            std::str::from_utf8(&ids).is_err(),
            "never mistaken for text"
        );
        assert!(matches!(piece("text", 0, &ids), Ok(Piece::Ids(v)) if v == [101, 7592, 102]));
        assert!(matches!(
            piece("text", 0, "héllo".as_bytes()),
            Ok(Piece::Text("héllo"))
        ));
        let short = piece("text", 2, &[TOKEN_IDS, 1, 0])
            .err()
            .unwrap()
            .to_string();
        assert!(
            short.contains("element 2 is a token array of 2 bytes"),
            "{short}"
        );
        assert!(piece("text", 0, &[TOKEN_IDS]).is_err());
        let latin1 = piece("text", 1, &[0xE9]).err().unwrap().to_string();
        assert!(latin1.contains("text 1 is not valid UTF-8"), "{latin1}");
    }

    #[test]
    fn chunks_group_similar_lengths_and_keep_order_complete() {
        let ids: Vec<Vec<u32>> = [3usize, 4, 4, 5, 9, 10, 200]
            .iter()
            .map(|&n| vec![0; n])
            .collect();
        let order: Vec<usize> = (0..ids.len()).collect();
        let chunks = length_chunks(&order, &ids);
        assert_eq!(
            chunks,
            vec![&[0, 1, 2][..], &[3][..], &[4, 5][..], &[6][..]]
        );
        assert_eq!(length_chunks(&[], &ids), Vec::<&[usize]>::new());
    }
}
