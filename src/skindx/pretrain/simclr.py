"""SimCLR: the encoder (the classifier's own ResNet, head removed), the projection head and
the NT-Xent loss (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skindx.models.factory import HEAD_PREFIX, build_model


def backbone_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights as the classifier names them (no `fc.*`), CPU copies: what
    backbone.pt holds and `build_model(weights=...)` loads."""
    return {
        k: v.detach().to("cpu", copy=True)
        for k, v in encoder.state_dict().items()
        if not k.startswith(HEAD_PREFIX)
    }


class SimCLR(nn.Module):
    """`encoder`: build_model(arch) with `fc` replaced by Identity, so that its state dict has
    exactly the classifier's backbone keys; `projector`: Linear-BN-ReLU-Linear, discarded
    after pretraining (representations before it transfer better)."""

    def __init__(self, arch: str, projection_hidden: int = 512, projection_dim: int = 128):
        super().__init__()
        encoder = build_model(arch, num_classes=1, dropout=0.0, weights="none")
        features = encoder.fc[-1].in_features
        encoder.fc = nn.Identity()
        self.encoder = encoder
        self.features = features
        self.projector = nn.Sequential(
            nn.Linear(features, projection_hidden, bias=False),
            nn.BatchNorm1d(projection_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(projection_hidden, projection_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def nt_xent(
    z_a: torch.Tensor, z_b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NT-Xent loss, the fraction of views whose most similar other view is its partner).

    z_a[i] and z_b[i] are the projections of two views of image i. Every view is classified
    among the other 2N - 1 by cosine similarity / temperature; its partner is the right class.
    A random encoder scores about log(2N - 1)."""
    if z_a.shape != z_b.shape or z_a.ndim != 2 or z_a.shape[0] < 2:
        raise ValueError(
            f"need two (N >= 2, D) batches, got {tuple(z_a.shape)}, {tuple(z_b.shape)}"
        )
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss = F.cross_entropy(logits, targets)
    pair_accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return loss, pair_accuracy.detach()
