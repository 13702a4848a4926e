//! The `Model` trait: what a backend implements to be served.

use crate::error::Result;
use crate::tensor::Tensor;

/// One loaded instance of a model. Each instance is owned by one batcher worker thread, so
/// `run` takes `&mut self` and never runs concurrently with itself; a model served by `n`
/// instances runs up to `n` batches at once.
pub trait Model: Send + 'static {
    /// Runs the model. `inputs` are in the order of the model's signature and already checked
    /// against it; the outputs must be in the signature's output order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
}
