//! ONNX models on ONNX Runtime, through `ort` with the shared library loaded at run time.
//!
//! The library is found, in order, at `--onnxruntime-lib` (`INFERD_ONNXRUNTIME_LIB`),
//! `ORT_DYLIB_PATH`, or in the venv `scripts/setup.sh` installs under `~/.cache/inferd` (the
//! `onnxruntime` wheel from the Python registry ships `libonnxruntime.so`). Its version must provide ONNX Runtime
//! API level [`ort::MINOR_VERSION`] or newer.
//!
//! A model's signature comes from the graph itself (names, element types, dimensions with -1
//! for symbolic ones), so a plain `model.onnx` needs no configuration.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, DynValue, TensorElementType, ValueType};

use crate::datatype::DataType;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::signature::{Signature, TensorSpec};
use crate::tensor::{Tensor, TensorData};

/// The ONNX Runtime version `scripts/setup.sh` installs, named in error messages.
pub const EXPECTED_ORT_VERSION: &str = "1.31.1";

static ENV: OnceLock<Environment> = OnceLock::new();

/// Loads the ONNX Runtime shared library and creates the process-wide environment.
/// Idempotent; returns the library path used.
pub fn init(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = find_library(explicit)?;
    if ENV.get().is_some() {
        return Ok(path);
    }
    let env = ort::init_from(&path)
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot load ONNX Runtime from {}: {e}. inferd needs onnxruntime {EXPECTED_ORT_VERSION} \
                 (ONNX Runtime API {}): run scripts/setup.sh, or `pip install onnxruntime=={EXPECTED_ORT_VERSION}` \
                 and point ORT_DYLIB_PATH at its onnxruntime/capi/libonnxruntime.so.*",
                path.display(),
                ort::MINOR_VERSION
            ))
        })?
        .with_name("inferd")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::Runtime(format!("cannot create the ONNX Runtime environment: {e}")))?;
    let _ = ENV.set(env);
    Ok(path)
}

fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(missing(&format!("{} does not exist", p.display())))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(&format!(
                "ORT_DYLIB_PATH={} does not exist",
                p.display()
            )))
        };
    }
    if let Some(lib) = crate::cache_dir().and_then(|c| find_in_venv(&c.join("venv"))) {
        return Ok(lib);
    }
    Err(missing(
        "no --onnxruntime-lib, no ORT_DYLIB_PATH, and none in ~/.cache/inferd/venv",
    ))
}

/// `<venv>/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so*`
fn find_in_venv(venv: &Path) -> Option<PathBuf> {
    for py in std::fs::read_dir(venv.join("lib")).ok()?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        if let Some(l) = libs.pop() {
            return Some(l);
        }
    }
    None
}

fn missing(why: &str) -> Error {
    Error::Runtime(format!(
        "the ONNX Runtime shared library was not found ({why}). Run scripts/setup.sh (it installs \
         onnxruntime=={EXPECTED_ORT_VERSION} from the Python registry under ~/.cache/inferd), or `pip install \
         onnxruntime=={EXPECTED_ORT_VERSION}` and pass --onnxruntime-lib / set ORT_DYLIB_PATH to its \
         onnxruntime/capi/libonnxruntime.so.{EXPECTED_ORT_VERSION}"
    ))
}

fn env() -> Result<&'static Environment> {
    ENV.get().ok_or_else(|| {
        Error::Runtime("ONNX Runtime is not initialised: call backends::onnx::init first".into())
    })
}

/// Session settings for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxOptions {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
}

/// One ONNX Runtime session: one instance of a model.
pub struct OnnxModel {
    name: String,
    session: Session,
    signature: Signature,
}

impl OnnxModel {
    /// Loads `path` into a new session. `name` labels errors.
    pub fn load(name: &str, path: &Path, opts: &OnnxOptions) -> Result<OnnxModel> {
        let load_err = |message: String| Error::Load {
            model: name.to_owned(),
            message,
        };
        // Spinning threads would burn the cores the HTTP/gRPC runtime needs; batches are
        // large enough that the wake-up cost does not matter.
        let session = (|| -> ort::Result<Session> {
            Session::builder(env().map_err(|e| ort::Error::new(e.to_string()))?)?
                .with_optimization_level(GraphOptimizationLevel::All)?
                .with_intra_threads(opts.intra_op_threads.max(1))?
                .with_inter_threads(opts.inter_op_threads.max(1))?
                .with_intra_op_spinning(false)?
                .with_inter_op_spinning(false)?
                .commit_from_file(path)
        })()
        .map_err(|e| load_err(format!("{}: {e}", path.display())))?;
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype(), "input"))
                .collect::<std::result::Result<_, _>>()
                .map_err(load_err)?,
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype(), "output"))
                .collect::<std::result::Result<_, _>>()
                .map_err(load_err)?,
        };
        Ok(OnnxModel {
            name: name.to_owned(),
            session,
            signature,
        })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn exec_err(&self, message: impl std::fmt::Display) -> Error {
        Error::Execution {
            model: self.name.clone(),
            message: message.to_string(),
        }
    }
}

fn spec(name: &str, ty: &ValueType, what: &str) -> std::result::Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: name.to_owned(),
            datatype: datatype(*ty).ok_or_else(|| {
                format!(
                    "{what} '{name}' has element type {ty:?}, which the V2 protocol cannot carry"
                )
            })?,
            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
        }),
        other => Err(format!(
            "{what} '{name}' is a {other}, not a tensor; the V2 protocol carries tensors only \
             (for scikit-learn classifiers, convert with skl2onnx option zipmap=False)"
        )),
    }
}

fn datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn element_type(d: DataType) -> TensorElementType {
    match d {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

impl OnnxModel {
    fn to_ort(&self, spec: &TensorSpec, t: &Tensor) -> Result<DynValue> {
        let shape: Vec<i64> = t.shape().to_vec();
        match t.data() {
            TensorData::Raw(bytes) => {
                let allocator = Allocator::default();
                let mut value = DynTensor::new(&allocator, element_type(t.datatype()), shape)
                    .map_err(|e| self.exec_err(format!("input '{}': {e}", spec.name)))?;
                if !bytes.is_empty() {
                    let dst = value.data_ptr_mut().cast::<u8>();
                    // SAFETY: ONNX Runtime allocated a CPU buffer for exactly `shape` elements
                    // of this element type, which is `bytes.len()` bytes (checked when the
                    // `Tensor` was built); the regions cannot overlap.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
                }
                Ok(value.into_dyn())
            }
            TensorData::Bytes(items) => {
                // ort's string tensors copy each element into a C string anyway, and take
                // owned `String`s ('static); the extra copy is per string, not per byte.
                let strs = items
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        String::from_utf8(b.clone()).map_err(|_| {
                            Error::InvalidInput(format!(
                                "input '{}': element {i} is not valid UTF-8; ONNX string tensors hold UTF-8 text",
                                spec.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<String>>>()?;
                let value = ort::value::Tensor::from_string_array((shape, &strs[..]))
                    .map_err(|e| self.exec_err(format!("input '{}': {e}", spec.name)))?;
                Ok(value.into_dyn())
            }
        }
    }
}

fn from_ort(name: &str, v: &DynValue) -> std::result::Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(format!("output '{name}' is a {}, not a tensor", v.dtype()));
    };
    let dt = datatype(*ty)
        .ok_or_else(|| format!("output '{name}' has element type {ty:?}, which V2 cannot carry"))?;
    macro_rules! raw {
        ($t:ty) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(|e| e.to_string())?;
            (
                shape.to_vec(),
                TensorData::Raw(bytemuck::cast_slice::<$t, u8>(data).to_vec().into()),
            )
        }};
    }
    let (shape, data) = match dt {
        DataType::Bool => {
            let (shape, data) = v.try_extract_tensor::<bool>().map_err(|e| e.to_string())?;
            (
                shape.to_vec(),
                TensorData::Raw(data.iter().map(|&b| b as u8).collect()),
            )
        }
        DataType::Uint8 => raw!(u8),
        DataType::Uint16 => raw!(u16),
        DataType::Uint32 => raw!(u32),
        DataType::Uint64 => raw!(u64),
        DataType::Int8 => raw!(i8),
        DataType::Int16 => raw!(i16),
        DataType::Int32 => raw!(i32),
        DataType::Int64 => raw!(i64),
        DataType::Fp16 => raw!(half::f16),
        DataType::Bf16 => raw!(half::bf16),
        DataType::Fp32 => raw!(f32),
        DataType::Fp64 => raw!(f64),
        DataType::Bytes => {
            let (shape, strings) = v.try_extract_strings().map_err(|e| e.to_string())?;
            (
                shape.to_vec(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
    };
    Tensor::new(dt, shape, data).map_err(|e| format!("output '{name}': {e}"))
}

impl Model for OnnxModel {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let values = self
            .signature
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, t)| Ok((spec.name.as_str(), self.to_ort(spec, t)?)))
            .collect::<Result<Vec<_>>>()?;
        let name = self.name.clone();
        let exec_err = |m: String| Error::Execution {
            model: name.clone(),
            message: m,
        };
        let outputs = self
            .session
            .run(values)
            .map_err(|e| exec_err(e.to_string()))?;
        self.signature
            .outputs
            .iter()
            .map(|spec| {
                let v = outputs
                    .get(&spec.name)
                    .ok_or_else(|| exec_err(format!("output '{}' is missing", spec.name)))?;
                from_ort(&spec.name, v).map_err(&exec_err)
            })
            .collect()
    }
}
