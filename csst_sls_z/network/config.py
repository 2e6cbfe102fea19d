"""Named network configurations (no TensorFlow import here)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

@dataclass(frozen=True)
class NetworkConfig:
    name: str
    widths: tuple = (16, 16, 32, 32, 64, 64, 128, 128)
    kernel: int = 7
    stem_filters: int = 32
    dropout: float = 0.2
    objective: str = "zbins"   # a key of objectives.OBJECTIVES
    z_min: float = 0.0
    z_max: float = 1.6
    n_bins: int = 400          # bins of (z_max - z_min) / n_bins = 0.004
    # "z": bins equal in z (sets up to 0003); "ln1pz": equal in ln(1 + z), so a bin is the
    # same fraction of (1 + z) everywhere, as sigma_NMAD and eta measure it.
    bin_space: str = "z"
    head_units: tuple = (256, 128)
    n_flows_q: int = 2
    n_flows_r: int = 2
    flow_hidden: int = 50
    # The head's output map (head.BNNHead): mu = Z_CNN + head_mu_scale * raw_0 and
    # sigma = 1e-4 + softplus(raw_1 + head_sigma_offset). Network files written before these
    # were recorded (schema 1) load with these defaults, the values they were trained with.
    head_mu_scale: float = 0.05
    head_sigma_offset: float = -4.6
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
        """Bin width in the binning variable (z or ln(1 + z))."""
        lo, hi = self.bin_range
        return (hi - lo) / self.n_bins

    @property
    def bin_range(self) -> tuple:
        if self.bin_space == "ln1pz":
            import math
            return math.log1p(self.z_min), math.log1p(self.z_max)
        if self.bin_space != "z":
            raise ValueError(f"bin_space must be 'z' or 'ln1pz', not {self.bin_space!r}")
        return self.z_min, self.z_max


CONFIGS = {
    # The published architecture: widths 64-512, kernel 7 (Zhou et al. 2024).
    "paper": NetworkConfig(name="paper", widths=(64, 64, 128, 128, 256, 256, 512, 512)),
    # Compact: trains on two cores (docs/validation.md, docs/generalisation.md).
    "cpu": NetworkConfig(name="cpu"),
    # The cpu network with 640 bins equal in ln(1 + z) (0.0015 wide): bins 2.7 to 1.0 times
    # finer than cpu's 0.004 in z, for the precision at high SNR (docs/validation.md).
    "cpu_ln": NetworkConfig(name="cpu_ln", n_bins=640, bin_space="ln1pz"),
    # Tiny, for the test suite's end-to-end regeneration.
    "smoke": NetworkConfig(name="smoke", widths=(8, 8, 8, 8, 16, 16, 16, 16), stem_filters=8,
                           head_units=(32, 16), n_bins=100, flow_hidden=16),
}
