//! Hidden states of the last layer, as a run in hidden-layer mode delivers them.

/// Hidden states of the last layer, copied out of the runtime's buffer.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{mock::MockModel, Model, Runtime};
/// let file = MockModel::new().embed_dim(8).write_temp()?;
/// let model = Model::builder(&*file).runtime(Runtime::mock()).build()?;
/// let states = model.session()?.hidden_states("Hello world")?;
/// assert!(states.num_tokens() > 0);
/// assert_eq!(states.embd_size(), 8);
/// assert_eq!(states.row(0).map(<[f32]>::len), Some(8));
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenStates {
    pub(crate) data: Vec<f32>,
    pub(crate) num_tokens: usize,
    pub(crate) embd_size: usize,
}

impl HiddenStates {
    /// All values, `num_tokens × embd_size`, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Takes the values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    /// Number of rows (tokens).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }
    /// Row length (the model's hidden size).
    pub fn embd_size(&self) -> usize {
        self.embd_size
    }
    /// One token's row.
    pub fn row(&self, token: usize) -> Option<&[f32]> {
        let start = token.checked_mul(self.embd_size)?;
        self.data.get(start..start.checked_add(self.embd_size)?)
    }
}
