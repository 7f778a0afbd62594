//! Global gradient-norm clipping over all trainable parameters (PyTorch `clip_grad_norm_`, as
//! HF Trainer does with `max_grad_norm`). burn's built-in clipping is per parameter, which
//! changes the update direction; the global form keeps it.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct TrainableIds(Vec<(ParamId, usize)>);

impl<B: AutodiffBackend> ModuleVisitor<B> for TrainableIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

/// `Σ g²` of one gradient as a one-element tensor: stays on the device, so the global norm
/// needs a single host read instead of one per parameter.
fn squared_norm<B: AutodiffBackend, const D: usize>(
    grads: &GradientsParams,
    id: ParamId,
) -> Option<Tensor<B::InnerBackend, 1>> {
    grads
        .get::<B::InnerBackend, D>(id)
        .map(|g| g.powi_scalar(2).sum())
}

fn scale<B: AutodiffBackend, const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    factor: f64,
) {
    if let Some(g) = grads.remove::<B::InnerBackend, D>(id) {
        grads.register::<B::InnerBackend, D>(id, g.mul_scalar(factor));
    }
}

/// Clip in place to `max_norm` (if given) and return the total norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let mut ids = TrainableIds(Vec::new());
    module.visit(&mut ids);
    let squares: Vec<_> = ids
        .0
        .iter()
        .filter_map(|&(id, rank)| match rank {
            1 => squared_norm::<B, 1>(grads, id),
            2 => squared_norm::<B, 2>(grads, id),
            3 => squared_norm::<B, 3>(grads, id),
            _ => squared_norm::<B, 4>(grads, id),
        })
        .collect();
    let total: f64 = if squares.is_empty() {
        0.0
    } else {
        Tensor::cat(squares, 0).sum().into_scalar().elem()
    };
    let norm = total.sqrt();
    if let Some(max) = max_norm {
        // Same epsilon as torch.nn.utils.clip_grad_norm_.
        let factor = max / (norm + 1e-6);
        if factor < 1.0 {
            for &(id, rank) in &ids.0 {
                match rank {
                    1 => scale::<B, 1>(grads, id, factor),
                    2 => scale::<B, 2>(grads, id, factor),
                    3 => scale::<B, 3>(grads, id, factor),
                    _ => scale::<B, 4>(grads, id, factor),
                }
            }
        }
    }
    norm
}
