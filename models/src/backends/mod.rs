//! Backends: the code that loads an artifact and runs it.
//!
//! - [`onnx`]: ONNX models on ONNX Runtime (`ort`, the shared library loaded at run time).
//!
//! A version directory's contents choose the backend (`model.onnx` → `onnx`), or
//! `backend = "..."` in the model's `config.toml`.

pub mod onnx;
