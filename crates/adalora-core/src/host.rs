//! Reading tensors back to host memory, the one place every crate does it.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A float tensor's values as row-major f32, whatever the backend's float type.
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        // `convert` has just made the data f32, so reading it as f32 cannot fail.
        .expect("float tensor data converts to f32")
}
