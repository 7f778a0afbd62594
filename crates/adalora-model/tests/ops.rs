//! `adalora_model::ops` against the textbook composition of plain burn ops: values and
//! gradients, with padded key positions (HF's `f32::MIN` additive mask) included.

use adalora_model::bert::additive_mask;
use adalora_model::ops::attention_scores;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

type B = Autodiff<NdArray<f32>>;

fn max_abs_diff(a: Tensor<NdArray<f32>, 4>, b: Tensor<NdArray<f32>, 4>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn attention_scores_match_scaling_after_the_product_with_padding() {
    let device = Default::default();
    let (batch, heads, seq, d) = (2, 3, 5, 8);
    // Row 0: all tokens; row 1: the last two positions are padding.
    let mask_ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(vec![1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0], [batch, seq]),
        &device,
    );
    let mask = additive_mask(mask_ids);
    let shape = [batch, heads, seq, d];
    let q0 = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let k0 = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let upstream = Tensor::<B, 4>::random(
        [batch, heads, seq, seq],
        Distribution::Normal(0.0, 1.0),
        &device,
    );

    let run = |fused: bool| {
        let q = q0.clone().detach().require_grad();
        let k = k0.clone().detach().require_grad();
        let scores = if fused {
            attention_scores(q.clone(), k.clone(), mask.clone())
        } else {
            q.clone()
                .matmul(k.clone().swap_dims(2, 3))
                .div_scalar((d as f64).sqrt())
                + mask.clone()
        };
        // Through the softmax, as in the layer: padded keys must get probability 0 both ways.
        let probs = softmax(scores, 3);
        let grads = (probs.clone() * upstream.clone()).sum().backward();
        (
            probs.inner(),
            q.grad(&grads).unwrap(),
            k.grad(&grads).unwrap(),
        )
    };
    let (p_fused, gq_fused, gk_fused) = run(true);
    let (p_plain, gq_plain, gk_plain) = run(false);
    let padded = p_fused.clone().slice([1..2, 0..heads, 0..seq, 3..5]);
    assert_eq!(padded.abs().max().into_scalar(), 0.0);
    assert!(max_abs_diff(p_fused, p_plain) < 1e-6);
    assert!(max_abs_diff(gq_fused, gq_plain) < 1e-5);
    assert!(max_abs_diff(gk_fused, gk_plain) < 1e-5);
}
