//! Text → vectors: the [`Embedder`] the store calls for points and queries given as `text`.

/// Embeds texts with a named model served in the same process. The server provides the real
/// implementation; tests use fakes.
pub trait Embedder: Send + Sync {
    /// One vector per text, in order.
    fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

/// The embedder used when none is served: every call fails with a clear message.
pub struct NoEmbedder;

impl Embedder for NoEmbedder {
    fn embed(&self, _model: &str, _texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Err("no embedding model is served".into())
    }
}
