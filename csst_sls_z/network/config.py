"""Named network configurations (no TensorFlow import here)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

OBJECTIVES = ("zbins", "logcosh")


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    widths: tuple = (16, 16, 32, 32, 64, 64, 128, 128)
    kernel: int = 7
    stem_filters: int = 32
    dropout: float = 0.2
    objective: str = "zbins"
    z_min: float = 0.0
    z_max: float = 1.6
    n_bins: int = 400          # bins of (z_max - z_min) / n_bins = 0.004
    head_units: tuple = (256, 128)
    n_flows_q: int = 2
    n_flows_r: int = 2
    flow_hidden: int = 50
    input_length: int = 913
    extra: dict = field(default_factory=dict)

    def to_dict(self):
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["head_units"] = list(self.head_units)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d["head_units"] = tuple(d["head_units"])
        return cls(**d)

    @property
    def bin_width(self) -> float:
        return (self.z_max - self.z_min) / self.n_bins


CONFIGS = {
    # The published architecture: widths 64-512, kernel 7 (Zhou et al. 2024).
    "paper": NetworkConfig(name="paper", widths=(64, 64, 128, 128, 256, 256, 512, 512)),
    # Compact: trains on two cores (docs/validation.md, ../design/training.md).
    "cpu": NetworkConfig(name="cpu"),
    # Tiny, for the test suite's end-to-end regeneration.
    "smoke": NetworkConfig(name="smoke", widths=(8, 8, 8, 8, 16, 16, 16, 16), stem_filters=8,
                           head_units=(32, 16), n_bins=100, flow_hidden=16),
}
