"""Config validation (nelib.validation): a bad value is refused with its dotted field name and the value."""

import pytest

from nelib.agents.drq import DrQConfig
from nelib.agents.td3 import TD3Config
from nelib.baselines.injection import InjectionConfig
from nelib.baselines.redo import RedoConfig
from nelib.baselines.reset import ResetConfig
from nelib.sparse.dormant import PruneConfig
from nelib.sparse.growth import GrowthConfig
from nelib.sparse.review import ReviewConfig
from nelib.sparse.topology import TopologyConfig


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TD3Config(arch="big"), r"agent\.arch must be one of \('td3', 'ne'\), got 'big'"),
    (lambda: TD3Config(policy_delay=0), r"agent\.policy_delay must be > 0, got 0"),
    (lambda: TD3Config(tau=0.0), r"agent\.tau must be in \(0, 1\], got 0\.0"),
    (lambda: DrQConfig(image_pad=-1), r"drq\.image_pad must be >= 0, got -1"),
    (lambda: DrQConfig(frame_stack=0), r"drq\.frame_stack must be > 0, got 0"),
    (lambda: DrQConfig(gamma=1.5), r"drq\.gamma must be in \(0, 1\], got 1\.5"),
    (lambda: DrQConfig(log_std_min=3.0), r"drq\.log_std_min must be below"),
    (lambda: GrowthConfig(rate=-0.1), r"growth\.rate must be in \[0, 1\], got -0\.1"),
    (lambda: GrowthConfig(target_density=0.0), r"growth\.target_density must be in \(0, 1\]"),
    (lambda: GrowthConfig(schedule="weekly"), r"growth\.schedule must be one of"),
    (lambda: PruneConfig(omega=2.0), r"pruning\.omega must be in \[0, 1\], got 2\.0"),
    (lambda: PruneConfig(tau=-1.0), r"pruning\.tau must be >= 0"),
    (lambda: TopologyConfig(interval=0), r"topology\.interval must be > 0, got 0"),
    (lambda: TopologyConfig(rewire_fraction=0.6), r"topology\.rewire_fraction must be in \[0, 0\.5\]"),
    (lambda: ReviewConfig(early_fraction=1.2), r"review\.early_fraction must be in \[0, 1\]"),
    (lambda: ReviewConfig(warmup=-1), r"review\.warmup must be >= 0, got -1"),
    (lambda: InjectionConfig(layers=0), r"injection\.layers must be > 0, got 0"),
    (lambda: InjectionConfig(fraction=0.0), r"injection\.fraction must be in \(0, 1\]"),
    (lambda: ResetConfig(layers=-1), r"reset\.layers must be >= 0, got -1"),
    (lambda: RedoConfig(interval=0), r"redo\.interval must be > 0, got 0"),
])
def test_a_bad_config_value_is_named_with_its_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_defaults_and_the_edges_of_each_range_are_accepted():
    for cfg in (TD3Config(), DrQConfig(), GrowthConfig(), PruneConfig(), TopologyConfig(), ReviewConfig(),
                InjectionConfig(), ResetConfig(), RedoConfig()):
        assert cfg is not None
    TD3Config(gamma=1.0, tau=1.0)
    GrowthConfig(rate=0.0, target_density=1.0)
    TopologyConfig(rewire_fraction=0.5)
    ResetConfig(layers=0)
    DrQConfig(image_pad=0, action_repeat=0)
