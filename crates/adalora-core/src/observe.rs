//! What the allocator observes of a model's SVD adapters: their weights and gradients, read
//! off the autodiff graph as plain tensors. Pure gathering — *when* to observe (before or after
//! the optimizer update) and when to step the allocator is the training loop's business.

use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::allocator::AdapterObservation;
use crate::svd::SvdLinear;

/// `(A, λ, B)` of one SVD adapter (values or gradients), in burn layout.
pub type Triplet<B> = (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 2>);

/// The current `(A, λ, B)` of every adapter, off the graph.
pub fn adapter_weights<B: AutodiffBackend>(
    adapters: &[&SvdLinear<B>],
) -> Vec<Triplet<B::InnerBackend>> {
    adapters
        .iter()
        .map(|a| {
            (
                a.lora_a.val().inner(),
                a.lora_e.val().inner(),
                a.lora_b.val().inner(),
            )
        })
        .collect()
}

/// The gradients of every adapter's `(A, λ, B)`. A parameter outside the graph has no
/// gradient: its sensitivity is zero (PEFT raises a `TypeError` on `p.grad is None` instead).
pub fn adapter_gradients<B: AutodiffBackend>(
    adapters: &[&SvdLinear<B>],
    grads: &GradientsParams,
) -> Vec<Triplet<B::InnerBackend>> {
    adapter_weights(adapters)
        .into_iter()
        .zip(adapters)
        .map(|((a, e, b), adapter)| {
            (
                grads
                    .get::<B::InnerBackend, 2>(adapter.lora_a.id)
                    .unwrap_or_else(|| a.zeros_like()),
                grads
                    .get::<B::InnerBackend, 1>(adapter.lora_e.id)
                    .unwrap_or_else(|| e.zeros_like()),
                grads
                    .get::<B::InnerBackend, 2>(adapter.lora_b.id)
                    .unwrap_or_else(|| b.zeros_like()),
            )
        })
        .collect()
}

/// Pair weights with their gradients, adapter by adapter: the allocator's input.
pub fn observations<B: burn::tensor::backend::Backend>(
    weights: Vec<Triplet<B>>,
    grads: Vec<Triplet<B>>,
) -> Vec<AdapterObservation<B>> {
    weights
        .into_iter()
        .zip(grads)
        .map(|((a, e, b), (grad_a, grad_e, grad_b))| AdapterObservation {
            a,
            e,
            b,
            grad_a,
            grad_e,
            grad_b,
        })
        .collect()
}
