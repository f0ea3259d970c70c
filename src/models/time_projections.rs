//! A UNet's time projections: every ResnetBlock2D's `time_emb_proj` applied
//! to the same SiLU(temb) once per forward. Layers of one width are stacked
//! into one GEMM ([`Linear::stack_layers`], [`Graph::linear_parts`]), so
//! SD-1.5's 22 projections (widths 320, 640, 1280) are 3 launches, not 22.

use crate::error::{Error, Result};
use crate::gpu::{Context, Tensor};
use crate::models::layers::Linear;
use crate::models::Graph;

/// The step's projections, one per resnet in the order the UNet's forward
/// runs them; each resnet takes the next.
pub type Times = std::vec::IntoIter<Tensor>;

pub struct TimeProjections {
    /// One stacked layer per width, with the resnets (in forward order) it serves.
    stacks: Vec<(Linear, Vec<usize>)>,
}

impl TimeProjections {
    /// `layers`: each resnet's `time_emb_proj`, in forward order.
    pub fn new(ctx: &Context, label: &str, layers: Vec<Option<Linear>>) -> Result<Self> {
        let mut widths: Vec<(usize, Vec<(usize, Linear)>)> = Vec::new();
        for (i, layer) in layers.into_iter().enumerate() {
            let layer = layer.ok_or_else(|| {
                Error::BadInput(format!("{label}: resnet {i} has no time_emb_proj"))
            })?;
            let width = layer.out_features();
            match widths.iter_mut().find(|(w, _)| *w == width) {
                Some((_, group)) => group.push((i, layer)),
                None => widths.push((width, vec![(i, layer)])),
            }
        }
        let stacks = widths
            .into_iter()
            .map(|(width, group)| {
                let (who, layers): (Vec<usize>, Vec<Linear>) = group.into_iter().unzip();
                let stacked = Linear::stack_layers(ctx, &format!("{label} x{width}"), &layers)?;
                Ok((stacked, who))
            })
            .collect::<Result<_>>()?;
        Ok(Self { stacks })
    }

    /// `emb_silu` `[N, T]` → each resnet's `[N, Cout]`, in forward order.
    pub fn forward(&self, g: &mut Graph, emb_silu: &Tensor) -> Result<Times> {
        let resnets = self.stacks.iter().map(|(_, who)| who.len()).sum();
        let mut times: Vec<Option<Tensor>> = vec![None; resnets];
        for (layer, who) in &self.stacks {
            let parts = g.linear_parts(emb_silu, layer, who.len())?;
            for (&i, t) in who.iter().zip(parts) {
                times[i] = Some(t);
            }
        }
        let times: Vec<Tensor> = times.into_iter().flatten().collect();
        Ok(times.into_iter())
    }
}
