//! Backends: the code that loads an artifact and runs it.
//!
//! - [`onnx`]: ONNX models on ONNX Runtime (`ort`, the shared library loaded at run time).
//! - [`candle`]: sentence encoders (BERT family, safetensors) on candle.
//!
//! A version directory's contents choose the backend (`model.onnx` → `onnx`;
//! `model.safetensors` + `config.json` + `tokenizer.json` → `candle`), or `backend = "..."`
//! in the model's `config.toml`.

pub mod candle;
pub mod onnx;
