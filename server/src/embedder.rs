//! The vector store's [`vector::Embedder`], backed by the models this server serves: text is
//! embedded in process through the model's own queue and batches (no HTTP hop).

use std::sync::Arc;

use models::repository::Repository;

pub struct RepositoryEmbedder(pub Arc<Repository>);

impl vector::Embedder for RepositoryEmbedder {
    fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(model, texts).map_err(|e| e.to_string())
    }
}
