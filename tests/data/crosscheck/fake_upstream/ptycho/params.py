"""Fake `ptycho.params`: the process-global configuration dict, with upstream's defaults."""

cfg = {
    "N": 128,
    "gridsize": 2,
    "nphotons": 1e9,
    "batch_size": 16,
    "default_probe_scale": 0.7,
    "probe_scale": 10.0,
    "intensity_scale.trainable": False,
    "data_source": "generic",
    "use_xla_translate": True,
}


def get(key):
    return cfg[key]


def set(key, value):
    cfg[key] = value
